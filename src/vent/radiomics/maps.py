"""``vent features``: voxel-wise feature maps (HDF5, optional NIfTI) or ROI values (CSV) for any image and mask.

Reads any image SimpleITK reads; writes ``/maps/<feature_id>`` (Z, Y, X) float32 on the image's grid, NaN outside the
mask, each with attribute ``ibsi_id``; the file's root attributes hold the settings. Writes go to a temporary name
in the same folder and are renamed into place.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vent.errors import DataError
from vent.io.atomic import atomic_path
from vent.radiomics.discretisation import discretise
from vent.radiomics.engine import compute_roi_features, compute_voxel_features
from vent.radiomics.features import FEATURE_BY_ID, FEATURE_IDS, feature_indices
from vent.radiomics.settings import FilterSettings, kernel_voxels_from_mm

logger = logging.getLogger(__name__)


def _read_image(path: Path, what: str):
    import SimpleITK as sitk

    if not Path(path).exists():
        raise DataError(f"{what} file {path} does not exist; check the path.")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise DataError(f"{what} file {path} cannot be read by SimpleITK: {error}") from error


def write_feature_maps(
    image_path: Path,
    mask_path: Path,
    out_path: Path,
    *,
    kernel_mm: float = 26.0,
    bin_count: int | None = 64,
    bin_width: float | None = None,
    feature_ids: Sequence[str] | None = None,
    roi: bool = False,
    nifti_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    **settings_overrides: Any,
) -> Path:
    """Compute voxel-wise feature maps (or ROI values with ``roi``) for an image and mask and write them.

    Args:
        image_path: Image file (any SimpleITK format).
        mask_path: Mask file on the same grid; voxels > 0 are the ROI.
        out_path: Output ``.h5`` (maps) or, with ``roi``, ``.csv`` (columns feature_id, ibsi_id, value).
        kernel_mm: Kernel edge in mm, turned into an odd voxel count with the image's smallest spacing.
        bin_count: Fixed bin number (default 64); None with ``bin_width`` None = image holds grey levels.
        bin_width: Fixed bin width (used when ``bin_count`` is None).
        feature_ids: Feature ids (default all 56).
        roi: One value per feature over the whole mask (IBSI segment mode) instead of maps.
        nifti_dir: Also write one NIfTI per feature map there (maps only).
        progress: Called with the number of centres finished since its last call.
        **settings_overrides: Other :class:`FilterSettings` fields (dtype, backend, n_workers, block_size,
            masked_kernel).

    Returns:
        ``out_path``.

    Raises:
        DataError: Unreadable files, grids that differ, empty mask.
        ConfigError: Bad settings or feature ids.
    """
    import SimpleITK as sitk

    image_path, mask_path, out_path = Path(image_path), Path(mask_path), Path(out_path)
    image = _read_image(image_path, "Image")
    mask_image = _read_image(mask_path, "Mask")
    image_zyx = sitk.GetArrayFromImage(image).astype(np.float64)
    mask_zyx = sitk.GetArrayFromImage(mask_image) > 0
    if image_zyx.ndim != 3:
        raise DataError(f"Image {image_path} is {image_zyx.ndim}-D; a 3-D image is needed.")
    if mask_zyx.shape != image_zyx.shape or not np.allclose(image.GetSpacing(), mask_image.GetSpacing()):
        raise DataError(f"Mask {mask_path} is not on the grid of image {image_path}; resample the mask first.")
    if not mask_zyx.any():
        raise DataError(f"Mask {mask_path} is empty (no voxel > 0).")
    if bin_count is not None:
        bin_width = None
    columns = feature_indices(feature_ids)
    ids = [FEATURE_IDS[k] for k in columns]
    grey, n_grey = discretise(image_zyx, mask_zyx, bin_count=bin_count, bin_width=bin_width)
    spacing = float(min(image.GetSpacing()))
    settings = FilterSettings(kernel_voxels=kernel_voxels_from_mm(kernel_mm, spacing), bin_count=bin_count,
                              bin_width=bin_width, **settings_overrides)
    attributes = {
        "image": str(image_path), "mask": str(mask_path), "kernel_mm": kernel_mm, "n_grey": n_grey,
        "discretisation_scope": "phase", "settings": json.dumps(asdict(settings)),
        "spacing_xyz": list(image.GetSpacing()),
    }
    if roi:
        values = compute_roi_features(image_zyx, grey, mask_zyx, n_grey, ids)
        with atomic_path(out_path) as temp, temp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["feature_id", "ibsi_id", "value"])
            for fid, value in values.items():
                writer.writerow([fid, FEATURE_BY_ID[fid].ibsi_id, repr(value)])
        logger.info("wrote %d ROI features to %s", len(values), out_path)
        return out_path

    import h5py

    centres = np.argwhere(mask_zyx)
    values = compute_voxel_features(image_zyx, grey, mask_zyx, centres, n_grey, settings, ids, progress)
    with atomic_path(out_path) as temp, h5py.File(temp, "w") as handle:
        for key, value in attributes.items():
            handle.attrs[key] = value
        group = handle.create_group("maps")
        for col, fid in enumerate(ids):
            volume = np.full(image_zyx.shape, np.nan, dtype=np.float32)
            volume[tuple(centres.T)] = values[:, col]
            dataset = group.create_dataset(fid, data=volume, compression="gzip", compression_opts=1)
            dataset.attrs["ibsi_id"] = FEATURE_BY_ID[fid].ibsi_id
            dataset.attrs["kernel_voxels"] = settings.kernel_voxels
            dataset.attrs["bin_count"] = -1 if bin_count is None else bin_count
            dataset.attrs["bin_width"] = np.nan if bin_width is None else bin_width
    if nifti_dir is not None:
        nifti_dir = Path(nifti_dir)
        nifti_dir.mkdir(parents=True, exist_ok=True)
        for col, fid in enumerate(ids):
            volume = np.full(image_zyx.shape, np.nan, dtype=np.float32)
            volume[tuple(centres.T)] = values[:, col]
            feature_image = sitk.GetImageFromArray(volume)
            feature_image.CopyInformation(image)
            with atomic_path(nifti_dir / f"{fid}.nii.gz") as temp_nifti:
                sitk.WriteImage(feature_image, str(temp_nifti))
    logger.info("wrote %d feature maps (%d voxels) to %s", len(ids), len(centres), out_path)
    return out_path
