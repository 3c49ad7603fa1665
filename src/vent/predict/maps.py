"""A case's prediction from its analysis grid back onto the patient's original image, and written for viewers.

The original space is the grid of the case's average CT, else of its first phase (the reference grid of
preprocessing): the same size, spacing, origin and direction, so the maps overlay the planning CT in any viewer.

A value map ``v`` known at the analysed lung voxels of the 2 mm grid (mask ``m``) is taken to the original grid by
normalised linear interpolation, ``L[m v] / L[m]`` (Knutsson & Westin 1993; ``vent.io.refvi.resample_refvi``), so the
lung border is not pulled towards the zeros outside; the lung on the original grid is ``m`` resampled (linear, then
>= 0.5), and the maps are 0 outside it. The binary map is the resampled probability >= the threshold inside the lung.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from vent.io.images import Grid, grid_of, image_from_array, read_header, resample_to_grid
from vent.io.refvi import resample_refvi

__all__ = ["OriginalMaps", "original_grid", "to_original_space", "write_maps"]

FORMATS = ("nii.gz", "nii", "mha", "nrrd")


@dataclass
class OriginalMaps:
    """The maps on the original grid, (z, y, x) arrays."""

    grid: Grid
    probability: np.ndarray
    defect: np.ndarray
    uncertainty: np.ndarray
    lung: np.ndarray


def original_grid(reference_path: Path) -> Grid:
    """The grid of the image that preprocessing took as the case's reference (average CT, else first phase)."""
    header = read_header(reference_path)
    return grid_of(header) if isinstance(header, sitk.Image) else Grid(
        size_xyz=tuple(int(v) for v in header.GetSize()),
        spacing_mm_xyz=tuple(float(v) for v in header.GetSpacing()),
        origin_mm_xyz=tuple(float(v) for v in header.GetOrigin()),
        direction=tuple(float(v) for v in header.GetDirection()),
    )


def _on_analysis_grid(values: np.ndarray, coords_zyx: np.ndarray, grid: Grid) -> np.ndarray:
    out = np.zeros(grid.shape_zyx, np.float32)
    out[tuple(coords_zyx.T)] = values
    return out


def to_original_space(
    probability: np.ndarray, uncertainty: np.ndarray, threshold: float, coords_zyx: np.ndarray, grid: Grid,
    target: Grid,
) -> OriginalMaps:
    """The voxel values of the analysis ``grid`` (at ``coords_zyx``) on the ``target`` grid (module docstring)."""
    mask = _on_analysis_grid(np.ones(len(coords_zyx), np.float32), coords_zyx, grid)
    mask_image = image_from_array(mask, grid)
    lung = resample_to_grid(mask_image, target, "mask").astype(bool)
    maps = {}
    for name, values in (("probability", probability), ("uncertainty", uncertainty)):
        image = image_from_array(_on_analysis_grid(values, coords_zyx, grid), grid)
        resampled = resample_refvi(image, mask_image, target, "masked")
        maps[name] = np.where(lung & np.isfinite(resampled), resampled, 0.0).astype(np.float32)
    defect = (lung & (maps["probability"] >= threshold)).astype(np.uint8)
    return OriginalMaps(target, maps["probability"], defect, maps["uncertainty"], lung.astype(np.uint8))


def write_maps(maps: OriginalMaps, paths: dict[str, Path]) -> dict[str, Path]:
    """Write each map (``probability``, ``defect``, ``uncertainty``, ``lung``) to its path, atomically; the format
    follows the path's extension."""
    from vent.io.atomic import atomic_path

    for name, path in paths.items():
        with atomic_path(path) as tmp:
            sitk.WriteImage(image_from_array(getattr(maps, name), maps.grid), str(tmp), useCompression=True)
    return paths
