"""Benchmark voxel-wise radiomic filtering: vent vs pyradiomics on one crop, then a full-size 10-phase patient.

Usage:
    python scripts/bench_radiomics.py [--crop-voxels 300] [--full/--no-full] [--workers 2] [--cache-dir DIR]
                                      [--max-voxels N]

Ratio part: ms per voxel for pyradiomics (single-threaded, as it runs) and vent (numba, ``--workers`` threads)
on the same crop of LUNG1-001 (native grid) in the same run, their ratio, and the numba warm-up time.

Full-patient part (runs first): the synthetic full-size SPECT-style subject (``vent.synth``, 10 phases, ~600k
lung voxels at 2 mm) read through the pipeline's own preprocessing, then ALL phases of ALL lung voxels computed for
real with the radiomics stage's call pattern (blocks of 16384 lung voxels, all phases per block, each phase's own
lung mask as kernel mask, per-phase discretisation). It runs in a child process that does only that, so its peak
RSS (``ru_maxrss``, cross-checked with VmHWM) is the stage's; generation and preprocessing run in another child
and are cached in ``--cache-dir``.
``--max-voxels`` limits the voxels for a quick check (then the printed time is for that subset, labelled so).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lung_ct" / "lung1-001"
#: Lung voxels per call of the engine, as the radiomics stage uses (vent.stages.radiomics._BLOCK).
STAGE_BLOCK = 16384


def _peak_rss_gb() -> float:
    """Peak RSS of this process in GB (ru_maxrss, kB on Linux).

    Linux keeps ru_maxrss across fork + exec, so a child started from a large parent reports at least the parent's
    RSS at the fork; run children before the parent grows (see :func:`main`) and cross-check with VmHWM.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _vm_hwm_gb() -> float | None:
    """Peak RSS of this process's address space in GB (Linux /proc VmHWM, reset at exec), or None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        return None
    return None


def _load_lung():
    import SimpleITK as sitk

    ct = sitk.ReadImage(str(SHARED / "LUNG1-001_ct.nii.gz"))
    left = sitk.ReadImage(str(SHARED / "LUNG1-001_mask_Lung-Left.nii.gz"))
    right = sitk.ReadImage(str(SHARED / "LUNG1-001_mask_Lung-Right.nii.gz"))
    mask = sitk.Or(left > 0, right > 0)
    return sitk.GetArrayFromImage(ct).astype(np.float64), sitk.GetArrayFromImage(mask) > 0


def bench_crop(n_voxels: int, workers: int) -> None:
    """pyradiomics vs vent, same crop, same run."""
    from vent.radiomics import FilterSettings, compute_voxel_features, discretise
    from vent.radiomics.pyradiomics_reference import pyradiomics_voxel_features

    image, mask = _load_lung()
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
    print(f"  ratio: {pyrad_s / vent_s:.0f}x   (finite values: {np.isfinite(ours).mean():.3f})", flush=True)


def prepare_full_patient(cache_dir: Path) -> Path:
    """Generate (cached) the synthetic full-size subject and preprocess it; return the cached arrays (.npz)."""
    from vent.config import config_from_dict
    from vent.io.vampire import find_subject_files
    from vent.stages.preprocess import preprocess_subject
    from vent.synth import write_synthetic_cohort

    arrays = cache_dir / "spect_full_subject01_preprocessed.npz"
    if arrays.exists():
        print(f"  using cached preprocessed patient {arrays}")
        return arrays
    cohort = cache_dir / "spect_full"
    t0 = time.perf_counter()
    write_synthetic_cohort(cohort, n_cases=1, modality="spect", size="full")
    print(f"  synthetic cohort (generated or reused) in {time.perf_counter() - t0:.1f} s: {cohort}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_dict({"run_dir": str(tmp), "data": {"root": str(cohort)}}, Path(tmp))
        case = preprocess_subject(find_subject_files(cohort, "Subject_01"), config)
    print(f"  preprocessing in {time.perf_counter() - t0:.1f} s (peak RSS of that process {_peak_rss_gb():.2f} GB)")
    partial = arrays.with_suffix(".tmp.npz")
    np.savez(partial, ct_tzyx=case.ct_tzyx.astype(np.float32), phase_masks_tzyx=case.phase_masks_tzyx > 0,
             lung_mask_zyx=case.lung_mask_zyx > 0, spacing_mm_zyx=np.asarray(case.grid.spacing_mm_zyx))
    partial.replace(arrays)
    return arrays


def run_full_patient(arrays: Path, workers: int, max_voxels: int | None) -> dict[str, float]:
    """All phases of all lung voxels with the stage's call pattern; returns the measured figures."""
    from vent.radiomics import FilterSettings, compute_voxel_features, discretise

    with np.load(arrays) as data:
        ct_tzyx = data["ct_tzyx"]
        phase_masks = data["phase_masks_tzyx"]
        lung = data["lung_mask_zyx"]
    coords = np.argwhere(lung)
    if max_voxels is not None:
        coords = coords[:max_voxels]
    n_phases = ct_tzyx.shape[0]
    settings = FilterSettings(kernel_voxels=13, bin_count=64, backend="numba", n_workers=workers)
    print(f"full-size patient: synthetic spect/full Subject_01, grid {lung.shape}, {int(lung.sum())} lung voxels "
          f"({len(coords)} computed), {n_phases} phases, {workers} workers", flush=True)
    greys = [discretise(ct_tzyx[t], phase_masks[t], bin_count=64) for t in range(n_phases)]
    t_start = time.perf_counter()
    n_finite = 0
    n_values = 0
    for start in range(0, len(coords), STAGE_BLOCK):
        block = coords[start:start + STAGE_BLOCK]
        out = np.empty((len(block), n_phases, 56), dtype=np.float32)
        for t in range(n_phases):
            out[:, t, :] = compute_voxel_features(ct_tzyx[t], greys[t][0], phase_masks[t], block, greys[t][1],
                                                  settings)
        n_finite += int(np.isfinite(out).sum())
        n_values += out.size
        done = start + len(block)
        elapsed = time.perf_counter() - t_start
        print(f"  {done}/{len(coords)} voxels x {n_phases} phases: {elapsed:.0f} s "
              f"({elapsed / (done * n_phases) * 1e3:.4f} ms per voxel-phase), peak RSS {_peak_rss_gb():.2f} GB",
              flush=True)
    wall = time.perf_counter() - t_start
    return {"wall_s": wall, "voxel_phases": len(coords) * n_phases, "n_voxels": len(coords),
            "n_lung": int(lung.sum()), "finite": n_finite / max(n_values, 1), "peak_rss_gb": _peak_rss_gb(),
            "vm_hwm_gb": _vm_hwm_gb()}


def bench_full(workers: int, cache_dir: Path, max_voxels: int | None) -> None:
    """Prepare the patient in one child process and time it in another (so each peak RSS is its own)."""
    script = str(Path(__file__).resolve())
    cache_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, script, "--child", "prepare", "--cache-dir", str(cache_dir)], check=True)
    arrays = cache_dir / "spect_full_subject01_preprocessed.npz"
    command = [sys.executable, script, "--child", "run", "--cache-dir", str(cache_dir), "--workers", str(workers)]
    if max_voxels is not None:
        command += ["--max-voxels", str(max_voxels)]
    result = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    lines = result.stdout.splitlines()
    print("\n".join(lines[:-1]))
    figures = json.loads(lines[-1])
    subset = "" if figures["n_voxels"] == figures["n_lung"] else " (SUBSET of the lung voxels, not the full patient)"
    print(f"  MEASURED wall time, all {figures['voxel_phases'] // figures['n_voxels']} phases of "
          f"{figures['n_voxels']} voxels{subset}: {figures['wall_s']:.0f} s = {figures['wall_s'] / 60:.1f} min")
    print(f"  {figures['wall_s'] / figures['voxel_phases'] * 1e3:.4f} ms per voxel-phase; finite values "
          f"{figures['finite']:.4f}")
    hwm = "n/a" if figures["vm_hwm_gb"] is None else f"{figures['vm_hwm_gb']:.2f} GB"
    print(f"  peak RSS of the process doing only this: {figures['peak_rss_gb']:.2f} GB (ru_maxrss; VmHWM {hwm})  "
          f"(input arrays: {arrays})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop-voxels", type=int, default=300, help="lung voxels in the pyradiomics comparison")
    parser.add_argument("--crop", action=argparse.BooleanOptionalAction, default=True, help="run the ratio part")
    parser.add_argument("--full", action=argparse.BooleanOptionalAction, default=True, help="time a full patient")
    parser.add_argument("--workers", type=int, default=2, help="CPU threads for vent")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "vent_bench_radiomics",
                        help="where the synthetic full-size patient and its preprocessed arrays are cached")
    parser.add_argument("--max-voxels", type=int, default=None, help="compute only the first N lung voxels")
    parser.add_argument("--child", choices=("prepare", "run"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "prepare":
        prepare_full_patient(args.cache_dir)
        return
    if args.child == "run":
        figures = run_full_patient(args.cache_dir / "spect_full_subject01_preprocessed.npz", args.workers,
                                   args.max_voxels)
        print(json.dumps(figures))
        return
    # the full patient first: its child process must start from a small parent (ru_maxrss survives fork + exec,
    # and the pyradiomics crop makes this process several GB)
    if args.full:
        bench_full(args.workers, args.cache_dir, args.max_voxels)
    if args.crop:
        bench_crop(args.crop_voxels, args.workers)


if __name__ == "__main__":
    main()
