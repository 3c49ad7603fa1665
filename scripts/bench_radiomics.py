"""Benchmark voxel-wise radiomic filtering: vent vs pyradiomics on one crop, then a full-size patient.

Usage:
    python scripts/bench_radiomics.py [--crop-voxels 300] [--full/--no-full] [--phases 10] [--workers 2]

Prints ms per voxel for pyradiomics (single-threaded, as it runs) and vent (numba, all workers), their ratio, the
numba compile/warm-up time, then the wall time and peak RSS for a full-size patient: LUNG1-001 resampled to 2 mm
with both lungs as mask (vent.synth's full-size cohort when available), each phase a smooth deformation of the
intensities. Any extrapolation is labelled as such.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lung_ct" / "lung1-001"


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _load_lung(spacing_mm: float | None):
    import SimpleITK as sitk

    ct = sitk.ReadImage(str(SHARED / "LUNG1-001_ct.nii.gz"))
    left = sitk.ReadImage(str(SHARED / "LUNG1-001_mask_Lung-Left.nii.gz"))
    right = sitk.ReadImage(str(SHARED / "LUNG1-001_mask_Lung-Right.nii.gz"))
    mask = sitk.Or(left > 0, right > 0)
    if spacing_mm is not None:
        size = [int(round(n * s / spacing_mm)) for n, s in zip(ct.GetSize(), ct.GetSpacing())]
        resample = sitk.ResampleImageFilter()
        resample.SetOutputSpacing((spacing_mm,) * 3)
        resample.SetSize(size)
        resample.SetOutputOrigin(ct.GetOrigin())
        resample.SetOutputDirection(ct.GetDirection())
        resample.SetInterpolator(sitk.sitkLinear)
        resample.SetDefaultPixelValue(-1024)
        ct = resample.Execute(ct)
        resample.SetInterpolator(sitk.sitkNearestNeighbor)
        resample.SetDefaultPixelValue(0)
        mask = resample.Execute(mask)
    return sitk.GetArrayFromImage(ct).astype(np.float64), sitk.GetArrayFromImage(mask) > 0


def bench_crop(n_voxels: int, workers: int) -> None:
    from vent.radiomics import FilterSettings, compute_voxel_features, discretise
    from vent.radiomics.pyradiomics_reference import pyradiomics_voxel_features

    image, mask = _load_lung(None)
    zc = int(np.flatnonzero(mask.any((1, 2))).mean())
    crop = (slice(zc - 12, zc + 12), slice(None), slice(None))
    image, mask = image[crop], mask[crop]
    # centres: a run of consecutive lung voxels in the middle slices (full kernels, realistic sliding)
    middle = np.argwhere(mask[10:14]) + [10, 0, 0]
    centres = middle[:n_voxels]
    grey, n_grey = discretise(image, mask, bin_count=64)
    settings = FilterSettings(kernel_voxels=13, bin_count=64, backend="numba", n_workers=workers)
    t0 = time.perf_counter()
    compute_voxel_features(image, grey, mask, centres[:20], n_grey, settings)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = compute_voxel_features(image, grey, mask, centres, n_grey, settings)
    vent_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pyradiomics_voxel_features(image, mask, centres, kernel_radius=6, bin_count=64)
    pyrad_s = time.perf_counter() - t0
    print(f"crop: {len(centres)} lung voxels, 13^3 kernel, 64 bins, all 56 features (pyradiomics: its 53)")
    print(f"  vent warm-up (numba compile or cache load + first call): {warm:.2f} s")
    print(f"  pyradiomics: {pyrad_s / len(centres) * 1e3:.3f} ms/voxel (1 thread)")
    print(f"  vent numba:  {vent_s / len(centres) * 1e3:.4f} ms/voxel ({workers} workers)")
    print(f"  ratio: {pyrad_s / vent_s:.0f}x   (finite values: {np.isfinite(ours).mean():.3f})")


def bench_full(phases: int, workers: int, measure_phases: int) -> None:
    from vent.radiomics import FilterSettings, compute_voxel_features, discretise

    image, mask = _load_lung(2.0)
    centres = np.argwhere(mask)
    print(f"full-size patient: LUNG1-001 at 2 mm, grid {image.shape}, {len(centres)} lung voxels, {phases} phases")
    rng = np.random.default_rng(0)
    settings = FilterSettings(kernel_voxels=13, bin_count=64, backend="numba", n_workers=workers)
    t_all = time.perf_counter()
    for phase in range(measure_phases):
        phase_image = image * (1.0 + 0.02 * np.sin(phase)) + rng.normal(0, 5, image.shape)
        grey, n_grey = discretise(phase_image, mask, bin_count=64)
        t0 = time.perf_counter()
        values = compute_voxel_features(phase_image, grey, mask, centres, n_grey, settings)
        print(f"  phase {phase}: {time.perf_counter() - t0:.1f} s, "
              f"{(time.perf_counter() - t0) / len(centres) * 1e6:.1f} us/voxel, out {values.nbytes / 1e6:.0f} MB")
    wall = time.perf_counter() - t_all
    if measure_phases == phases:
        print(f"  MEASURED wall time for {phases} phases: {wall / 60:.1f} min")
    else:
        print(f"  measured {measure_phases} phase(s) in {wall:.1f} s; EXTRAPOLATED to {phases} phases: "
              f"{wall / measure_phases * phases / 60:.1f} min")
    print(f"  peak RSS: {_peak_rss_gb():.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop-voxels", type=int, default=300, help="lung voxels in the pyradiomics comparison")
    parser.add_argument("--full", action=argparse.BooleanOptionalAction, default=True, help="time a full patient")
    parser.add_argument("--phases", type=int, default=10, help="phases of the full patient")
    parser.add_argument("--measure-phases", type=int, default=None, help="phases actually run (default all)")
    parser.add_argument("--workers", type=int, default=2, help="CPU threads for vent")
    args = parser.parse_args()
    bench_crop(args.crop_voxels, args.workers)
    if args.full:
        bench_full(args.phases, args.workers, args.measure_phases or args.phases)


if __name__ == "__main__":
    main()
