"""Shared fixtures for the radiomics tests: reference data under ../shared (skipped cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    if not path.exists():
        pytest.skip(f"reference data {path} is absent (expected the project's ../shared/data checkout)")
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder next to the repository root."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def ibsi_phantom() -> tuple[np.ndarray, np.ndarray]:
    """IBSI digital phantom (Z, Y, X) grey levels 1..9 and its ROI mask (74 voxels)."""
    folder = SHARED_DATA / "ibsi" / "digital_phantom"
    return _read(folder / "phantom.nii.gz").astype(np.float64), _read(folder / "mask.nii.gz") > 0


@pytest.fixture(scope="session")
def lung_crop() -> tuple[np.ndarray, np.ndarray]:
    """A 20 x 60 x 60 crop of LUNG1-001 (HU, native grid) through the left lung, with the lung mask."""
    folder = SHARED_DATA / "lung_ct" / "lung1-001"
    ct = _read(folder / "LUNG1-001_ct.nii.gz")
    lung = _read(folder / "LUNG1-001_mask_Lung-Left.nii.gz") > 0
    z_slices = np.flatnonzero(lung.any(axis=(1, 2)))
    zc = (z_slices.min() + z_slices.max()) // 2
    ys, xs = np.nonzero(lung[zc])
    yc, xc = int(ys.mean()), int(xs.mean())
    crop = (slice(zc - 10, zc + 10), slice(yc - 30, yc + 30), slice(xc - 30, xc + 30))
    return ct[crop].astype(np.float64), lung[crop]
