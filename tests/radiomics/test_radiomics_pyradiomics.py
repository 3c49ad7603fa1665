"""Voxel-wise features against pyradiomics voxel-based extraction on a real lung CT crop (LUNG1-001)."""

from __future__ import annotations

import numpy as np
import pytest

from vent.radiomics import FEATURE_IDS, FilterSettings, compute_voxel_features, discretise

pytest.importorskip("radiomics", reason="pyradiomics-bhklab (test-only reference) is not installed")

from vent.radiomics.pyradiomics_reference import (  # noqa: E402
    SHARED_FEATURE_IDS,
    pyradiomics_voxel_features,
)


def _compare(lung_crop, n_centres: int, dtype: str, rtol: float, backend: str = "numba",
             consecutive: bool = False) -> None:
    image, mask = lung_crop
    rng = np.random.default_rng(7)
    candidates = np.argwhere(mask)
    if consecutive:  # whole runs of neighbouring lung voxels in the middle slice: the kernel slides
        middle = candidates[candidates[:, 0] == image.shape[0] // 2]
        centres = middle[len(middle) // 2:len(middle) // 2 + n_centres]
    else:
        centres = candidates[rng.choice(len(candidates), n_centres, replace=False)]
    grey, n_grey = discretise(image, mask, bin_count=64)
    settings = FilterSettings(kernel_voxels=13, bin_count=64, dtype=dtype, backend=backend)
    ours = compute_voxel_features(image, grey, mask, centres, n_grey, settings)
    reference = pyradiomics_voxel_features(image, mask, centres, kernel_radius=6, bin_count=64)
    assert len(SHARED_FEATURE_IDS) == 53
    failures = []
    for fid in SHARED_FEATURE_IDS:
        got = ours[:, FEATURE_IDS.index(fid)].astype(np.float64)
        want = reference[fid]
        # relative tolerance, with an absolute floor of rtol for values that are 0 in the reference
        ok = np.abs(got - want) <= rtol * np.maximum(np.abs(want), 1.0 if dtype == "float32" else 1e-3)
        if not ok.all():
            k = int(np.argmin(ok))
            failures.append(f"{fid}: vent {got[k]!r} vs pyradiomics {want[k]!r}")
    assert not failures, "\n".join(failures)


def test_voxel_features_match_pyradiomics_float64(lung_crop):
    _compare(lung_crop, n_centres=30, dtype="float64", rtol=1e-6)


def test_voxel_features_match_pyradiomics_float32(lung_crop):
    _compare(lung_crop, n_centres=30, dtype="float32", rtol=1e-4)


def test_sliding_kernels_match_pyradiomics_float64(lung_crop):
    """Consecutive centres (incremental GLCM / GLRLM / sorted values along each line) against pyradiomics."""
    _compare(lung_crop, n_centres=40, dtype="float64", rtol=1e-6, consecutive=True)


@pytest.mark.slow
def test_voxel_features_match_pyradiomics_many_centres(lung_crop):
    _compare(lung_crop, n_centres=400, dtype="float64", rtol=1e-6)
