"""Benchmark voxel-wise radiomic filtering: a full-size 10-phase patient, real CT vs synthetic, vs pyradiomics.

Usage:
    python scripts/bench_radiomics.py [--crop-voxels 300] [--full/--no-full] [--full-source synthetic|real]
                                      [--real/--no-real] [--workers 2]
                                      [--cache-dir DIR] [--max-voxels N] [--real-centres 4096] [--repeats 5]
                                      [--compare-rev REV]

Real-CT part (``--real``): LUNG1-001 (../shared/data) made to breathe by :mod:`vent.synth.from_ct` (whole lung, 10
phases, per-phase masks moved with the breathing field) and read through the pipeline's own preprocessing (2 mm),
cached in ``--cache-dir`` like the synthetic full-size patient. In ONE process, on the middle phase of each, with
each phase's own lung mask as kernel mask: us per voxel-phase on the real and on the synthetic patient (blocks of
consecutive lung voxels as the stage sends them, taken at 4 depths of the lung; minimum over ``--repeats``
alternating runs, as the machine may be shared), their ratio, and the 10-phase time of a 600k-voxel patient
extrapolated from it; the texture that drives the cost (grey levels present per kernel, the level range, the
share of boundary kernels, centres per x-line); and a single-thread profile, each part of the per-centre work
(``_numba_engine.PART_*``) switched off in turn and timed by difference. ``--compare-rev`` also times the engine of
that git revision on the same centres in the same process (before / after) and checks the values are equal.

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
    _preprocess_to_npz(cohort, arrays)
    print(f"  preprocessing in {time.perf_counter() - t0:.1f} s (peak RSS of that process {_peak_rss_gb():.2f} GB)")
    return arrays


def run_full_patient(arrays: Path, workers: int, max_voxels: int | None, label: str) -> dict[str, float]:
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
    print(f"full-size patient: {label}, grid {lung.shape}, {int(lung.sum())} lung voxels "
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


FULL_SOURCES = {
    "synthetic": ("prepare", "spect_full_subject01_preprocessed.npz", "synthetic spect/full Subject_01"),
    "real": ("prepare-real", "lung1_001_semireal_full_preprocessed.npz", "real CT LUNG1-001 made to breathe"),
}
"""``--full-source``: the child that prepares the patient, its cached arrays and its label."""


def bench_full(workers: int, cache_dir: Path, max_voxels: int | None, source: str = "synthetic") -> None:
    """Prepare the patient in one child process and time it in another (so each peak RSS is its own)."""
    script = str(Path(__file__).resolve())
    cache_dir.mkdir(parents=True, exist_ok=True)
    prepare, name, _ = FULL_SOURCES[source]
    subprocess.run([sys.executable, script, "--child", prepare, "--cache-dir", str(cache_dir)], check=True)
    arrays = cache_dir / name
    command = [sys.executable, script, "--child", "run", "--cache-dir", str(cache_dir), "--workers", str(workers),
               "--full-source", source]
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


#: The real-CT patient: LUNG1-001 made to breathe over 10 phases, whole lung (``slab_mm=None``).
REAL_ARRAYS = "lung1_001_semireal_full_preprocessed.npz"
#: Lung voxels of the full patient the 10-phase time is extrapolated to (issue 12: 0.4-0.76M at 2 mm).
FULL_PATIENT_VOXELS = 600_000


def _preprocess_to_npz(cohort: Path, arrays: Path) -> None:
    """Preprocess Subject_01 of a VAMPIRE-layout cohort with the default config; save the arrays radiomics reads."""
    from vent.config import config_from_dict
    from vent.io.vampire import find_subject_files
    from vent.stages.preprocess import preprocess_subject

    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_dict({"run_dir": str(tmp), "data": {"root": str(cohort)}}, Path(tmp))
        case = preprocess_subject(find_subject_files(cohort, "Subject_01"), config)
    partial = arrays.with_suffix(".tmp.npz")
    np.savez(partial, ct_tzyx=case.ct_tzyx.astype(np.float32), phase_masks_tzyx=case.phase_masks_tzyx > 0,
             lung_mask_zyx=case.lung_mask_zyx > 0, spacing_mm_zyx=np.asarray(case.grid.spacing_mm_zyx))
    partial.replace(arrays)


def prepare_real_patient(cache_dir: Path) -> Path:
    """LUNG1-001 made into a 10-phase 4DCT (vent.synth.from_ct, whole lung) and preprocessed (cached)."""
    from vent.synth.from_ct import SemiRealSettings, write_semireal_cohort

    arrays = cache_dir / REAL_ARRAYS
    if arrays.exists():
        print(f"  using cached preprocessed real-CT patient {arrays}")
        return arrays
    cohort = cache_dir / "lung1_001_semireal_full"
    t0 = time.perf_counter()
    write_semireal_cohort(SHARED / "LUNG1-001_ct.nii.gz", [SHARED / "LUNG1-001_mask_Lung-Left.nii.gz",
                                                           SHARED / "LUNG1-001_mask_Lung-Right.nii.gz"],
                          cohort, n_cases=1, settings=SemiRealSettings(n_phases=10, slab_mm=None))
    print(f"  real-CT 4DCT (LUNG1-001, 10 phases) generated or reused in {time.perf_counter() - t0:.1f} s")
    _preprocess_to_npz(cohort, arrays)
    return arrays


class _Phase:
    """One phase of a preprocessed patient with the stage's inputs: raw values, grey levels, phase mask, centres."""

    def __init__(self, arrays: Path, n_centres: int) -> None:
        from vent.radiomics import discretise

        with np.load(arrays) as data:
            phase = data["ct_tzyx"].shape[0] // 2
            self.image = data["ct_tzyx"][phase]
            self.mask = data["phase_masks_tzyx"][phase]
            lung = data["lung_mask_zyx"]
        self.n_lung = int(lung.sum())
        self.grey, self.n_grey = discretise(self.image, self.mask, bin_count=64)
        coords = np.argwhere(lung)
        # blocks of consecutive lung voxels (the stage's order) at 4 depths of the lung
        per_block = max(1, n_centres // 4)
        starts = [int(f * (len(coords) - per_block)) for f in (0.15, 0.4, 0.65, 0.9)]
        self.centres = np.concatenate([coords[s:s + per_block] for s in starts])


def _texture_stats(phase: _Phase, n_sample: int = 400) -> str:
    """Grey levels present per kernel, their range, boundary-kernel share and centres per x-line (one line)."""
    from scipy import ndimage

    share = ndimage.uniform_filter(phase.mask.astype(np.float32), 13, mode="constant")[tuple(phase.centres.T)]
    rng = np.random.default_rng(0)
    grey = np.where(phase.mask, phase.grey, 0)
    present, spread = [], []
    for z, y, x in phase.centres[rng.choice(len(phase.centres), min(n_sample, len(phase.centres)), replace=False)]:
        levels = np.unique(grey[max(z - 6, 0):z + 7, max(y - 6, 0):y + 7, max(x - 6, 0):x + 7])
        levels = levels[levels > 0]
        present.append(len(levels))
        spread.append(int(levels.max() - levels.min() + 1) if len(levels) else 0)
    zy = phase.centres[:, 0] * phase.mask.shape[1] + phase.centres[:, 1]
    breaks = np.flatnonzero(np.diff(phase.centres[:, 2]) != 1) + 1  # a new line or a gap in it
    runs = np.diff(np.concatenate([[0], breaks, [len(zy)]]))
    return (f"grey levels present per kernel {np.mean(present):.1f} (p10-p90 {np.percentile(present, 10):.0f}-"
            f"{np.percentile(present, 90):.0f}, level range {np.mean(spread):.1f}); boundary kernels (part of the "
            f"13^3 box outside the phase mask or the image) {np.mean(share < 0.999):.2f}, mean mask share "
            f"{share.mean():.2f}; consecutive centres per x-run {runs.mean():.1f}")


def _reference_engine(rev: str):
    """The numba engine module of git revision ``rev`` (imported from a temporary file), for before / after."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{rev}:src/vent/radiomics/_numba_engine.py"], cwd=root, check=True,
                            stdout=subprocess.PIPE, text=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="vent_engine_ref_"))
    path = folder / "vent_engine_reference.py"
    path.write_text(source.replace("cache=True", "cache=False"))
    spec = importlib.util.spec_from_file_location("vent_engine_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _time_engine(phase: _Phase, workers: int, lines_fn=None, parts: int | None = None,
                 clock=time.perf_counter) -> tuple[float, np.ndarray]:
    """Seconds per centre of compute_voxel_features on the phase's centres (by ``clock``), and its float64 output.

    ``lines_fn`` replaces the numba kernel ``compute_lines`` (another revision's, or with ``parts`` switched off).
    The single-thread profile uses the process CPU time, which time spent waiting for a shared core does not inflate.
    """
    from vent.radiomics import FilterSettings, compute_voxel_features
    from vent.radiomics import _numba_engine as nb

    settings = FilterSettings(kernel_voxels=13, bin_count=64, dtype="float64", backend="numba", n_workers=workers)
    original = nb.compute_lines
    if parts is not None:
        def lines_fn(*args):
            original(*args, parts)
    try:
        if lines_fn is not None:
            nb.compute_lines = lines_fn
        t0 = clock()
        out = compute_voxel_features(phase.image, phase.grey, phase.mask, phase.centres, phase.n_grey, settings)
        return (clock() - t0) / len(phase.centres), out
    finally:
        nb.compute_lines = original


def _min_times(runs: dict, repeats: int) -> dict[str, float]:
    """Minimum seconds per centre of each named run over ``repeats`` rounds, the runs alternating in each round."""
    best = {name: np.inf for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], run()[0])
    return best


def bench_real(workers: int, cache_dir: Path, n_centres: int, repeats: int, compare_rev: str | None) -> None:
    """Real CT vs synthetic in one process: us per voxel-phase, texture, profile; optionally before / after."""
    from vent.radiomics import _numba_engine as nb

    cache_dir.mkdir(parents=True, exist_ok=True)
    script = str(Path(__file__).resolve())
    subprocess.run([sys.executable, script, "--child", "prepare", "--cache-dir", str(cache_dir)], check=True)
    subprocess.run([sys.executable, script, "--child", "prepare-real", "--cache-dir", str(cache_dir)], check=True)
    cases = {"real CT (LUNG1-001 4DCT)": _Phase(cache_dir / REAL_ARRAYS, n_centres),
             "synthetic (spect/full)": _Phase(cache_dir / "spect_full_subject01_preprocessed.npz", n_centres)}
    reference = _reference_engine(compare_rev) if compare_rev else None
    for phase in cases.values():  # compile / load caches, check equality with the reference revision
        ours = _time_engine(phase, workers)[1]
        if reference is not None:
            theirs = _time_engine(phase, workers, reference.compute_lines)[1]
            phase.equal = bool(np.array_equal(ours, theirs, equal_nan=True))
    print(f"real CT vs synthetic, middle phase, {len(next(iter(cases.values())).centres)} lung centres each "
          f"(4 blocks of consecutive voxels), {workers} workers, min of {repeats} alternating runs:")
    runs = {name: (lambda p=phase: _time_engine(p, workers)) for name, phase in cases.items()}
    if reference is not None:
        runs.update({f"{name} @{compare_rev}": (lambda p=phase: _time_engine(p, workers, reference.compute_lines))
                     for name, phase in cases.items()})
    best = _min_times(runs, repeats)
    for name, phase in cases.items():
        us = best[name] * 1e6
        line = (f"  {name}: {phase.n_lung} lung voxels; {us:.1f} us per voxel-phase -> 10 phases x "
                f"{FULL_PATIENT_VOXELS // 1000}k voxels: {us * 1e-6 * FULL_PATIENT_VOXELS * 10 / 60:.1f} min")
        if reference is not None:
            before = best[f"{name} @{compare_rev}"] * 1e6
            line += (f"; @{compare_rev}: {before:.1f} us (x{before / us:.2f} speed-up, values "
                     f"{'bit-identical' if phase.equal else 'DIFFERENT'})")
        print(line)
        print(f"    {_texture_stats(phase)}")
    names = list(cases)
    print(f"  ratio real / synthetic: {best[names[0]] / best[names[1]]:.2f}", flush=True)
    parts = {"GLCM slab updates": nb.PART_GLCM_SLABS, "GLRLM slab updates": nb.PART_GLRLM_SLABS,
             "intensity features": nb.PART_INTENSITY, "GLCM features (13 directions)": nb.PART_GLCM_FEATURES,
             "GLRLM features (13 directions)": nb.PART_GLRLM_FEATURES}
    for name, phase in cases.items():
        cpu = time.process_time
        runs = {"all": lambda p=phase: _time_engine(p, 1, clock=cpu)}
        runs.update({part: (lambda p=phase, b=bit: _time_engine(p, 1, parts=nb.PARTS_ALL & ~b, clock=cpu))
                     for part, bit in parts.items()})
        runs["rest"] = lambda p=phase: _time_engine(p, 1, parts=0, clock=cpu)
        best = _min_times(runs, repeats)
        profile = ", ".join(f"{part} {(best['all'] - best[part]) * 1e6:.1f}" for part in parts)
        print(f"  profile, 1 thread (CPU time), {name}: {best['all'] * 1e6:.1f} us per centre = {profile}, rest "
              f"(box moves, sorted-value merges, per-call crop and run positions) {best['rest'] * 1e6:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop-voxels", type=int, default=300, help="lung voxels in the pyradiomics comparison")
    parser.add_argument("--crop", action=argparse.BooleanOptionalAction, default=True, help="run the ratio part")
    parser.add_argument("--full", action=argparse.BooleanOptionalAction, default=True, help="time a full patient")
    parser.add_argument("--workers", type=int, default=2, help="CPU threads for vent")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "vent_bench_radiomics",
                        help="where the synthetic full-size patient and its preprocessed arrays are cached")
    parser.add_argument("--max-voxels", type=int, default=None, help="compute only the first N lung voxels")
    parser.add_argument("--real", action=argparse.BooleanOptionalAction, default=True,
                        help="real CT vs synthetic in one process, with a profile")
    parser.add_argument("--real-centres", type=int, default=4096, help="lung centres per patient in the real part")
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs per timing in the real part (min)")
    parser.add_argument("--compare-rev", default=None, help="also time this git revision's engine (before/after)")
    parser.add_argument("--full-source", choices=tuple(FULL_SOURCES), default="synthetic",
                        help="the full patient: the synthetic SPECT-like one, or LUNG1-001 made to breathe (10 phases)")
    parser.add_argument("--child", choices=("prepare", "prepare-real", "run"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "prepare":
        prepare_full_patient(args.cache_dir)
        return
    if args.child == "prepare-real":
        prepare_real_patient(args.cache_dir)
        return
    if args.child == "run":
        _, name, label = FULL_SOURCES[args.full_source]
        figures = run_full_patient(args.cache_dir / name, args.workers, args.max_voxels, label)
        print(json.dumps(figures))
        return
    # the full patient first: its child process must start from a small parent (ru_maxrss survives fork + exec,
    # and the pyradiomics crop makes this process several GB)
    if args.full:
        bench_full(args.workers, args.cache_dir, args.max_voxels, args.full_source)
    if args.real:
        bench_real(args.workers, args.cache_dir, args.real_centres, args.repeats, args.compare_rev)
    if args.crop:
        bench_crop(args.crop_voxels, args.workers)


if __name__ == "__main__":
    main()
