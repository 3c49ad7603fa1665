"""Hand-made VAMPIRE-layout subjects for tests (importable as `phantoms`; tests/ is on pythonpath)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


def _image(array_zyx, spacing_xyz, origin_xyz, pixel=None):
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin_xyz)
    if pixel is not None:
        image = sitk.Cast(image, pixel)
    return image


def write_phantom_subject(folder: Path, n_phases: int = 3, seed: int = 0, refvi_offset_mm=(2.0, -3.0, 1.0)) -> dict:
    """A box torso with an ellipsoidal 'lung' whose RefVI rises along +x (so the defects are on the -x side).

    CT grid: 1.5 x 1.5 x 3 mm (x, y, z), origin (-30, -36, 100). RefVI: its own 4 mm grid, shifted origin.
    Returns the geometry used, for assertions.
    """
    rng = np.random.default_rng(seed)
    size_xyz, spacing, origin = (40, 48, 20), (1.5, 1.5, 3.0), (-30.0, -36.0, 100.0)
    z, y, x = np.meshgrid(*[np.arange(n) for n in size_xyz[::-1]], indexing="ij")
    px, py, pz = origin[0] + x * spacing[0], origin[1] + y * spacing[1], origin[2] + z * spacing[2]
    lung = ((px / 24) ** 2 + (py / 28) ** 2 + ((pz - 130) / 24) ** 2) <= 1.0
    (folder / "CT").mkdir(parents=True)
    (folder / "GT").mkdir()
    for t in range(n_phases):
        hu = np.where(lung, -800 - 30 * t, 40).astype(np.float32) + rng.normal(0, 5, lung.shape).astype(np.float32)
        sitk.WriteImage(
            _image(hu.astype(np.int16), spacing, origin), str(folder / "CT" / f"PhaseImage_{t + 1:02d}.mha")
        )
        sitk.WriteImage(
            _image(lung.astype(np.uint8), spacing, origin), str(folder / "CT" / f"PhaseMask_{t + 1:02d}.mha")
        )
    sitk.WriteImage(
        _image(np.where(lung, -815, 40).astype(np.int16), spacing, origin), str(folder / "CT" / "AverageImage.mha")
    )
    sitk.WriteImage(_image(lung.astype(np.uint8), spacing, origin), str(folder / "CT" / "AverageMask.mha"))
    v_spacing, v_origin = (4.0, 4.0, 4.0), tuple(o + d for o, d in zip((-34.0, -40.0, 96.0), refvi_offset_mm))
    v_size = (20, 22, 18)
    vz, vy, vx = np.meshgrid(*[np.arange(n) for n in v_size[::-1]], indexing="ij")
    vpx = v_origin[0] + vx * v_spacing[0]
    vpy, vpz = v_origin[1] + vy * v_spacing[1], v_origin[2] + vz * v_spacing[2]
    v_lung = ((vpx / 26) ** 2 + (vpy / 30) ** 2 + ((vpz - 130) / 26) ** 2) <= 1.0
    vent = np.where(v_lung, 100.0 + 2.0 * vpx, 0.0).astype(np.float32)
    sitk.WriteImage(_image(vent, v_spacing, v_origin), str(folder / "GT" / "VentImage.mha"))
    sitk.WriteImage(_image(v_lung.astype(np.uint8), v_spacing, v_origin), str(folder / "GT" / "VentMask.mha"))
    return {"spacing": spacing, "origin": origin, "n_phases": n_phases}


def rewrite_image(path: Path, change_array=None, **geometry) -> None:
    """Rewrite an image in place (uncompressed) with its voxels and/or geometry (Spacing=..., Origin=...) changed."""
    image = sitk.ReadImage(str(path))
    if change_array is not None:
        new = sitk.GetImageFromArray(change_array(sitk.GetArrayFromImage(image)))
        new.SetSpacing(image.GetSpacing())
        new.SetOrigin(image.GetOrigin())
        new.SetDirection(image.GetDirection())
        image = new
    for key, value in geometry.items():
        getattr(image, f"Set{key}")(value)
    sitk.WriteImage(image, str(path), useCompression=False)
