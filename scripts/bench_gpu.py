"""One prepared GPU check: radiomics on CUDA vs numba, LSTM training samples/s, saliency voxels/s.

Run on a GPU machine (CUDA torch installed)::

    python scripts/bench_gpu.py --out bench_gpu.json            # about 5-10 minutes on one GPU

and on any machine, CPU only, with tiny sizes (what the test runs)::

    python scripts/bench_gpu.py --quick --out /tmp/bench_gpu.json

Parts, each timed on the chosen device (``--device``: cuda when available, else cpu):

1. **radiomics**: a full-size synthetic patient (``vent.synth`` spect/full, preprocessed by the pipeline; cached in
   ``--cache-dir``) through the torch engine on ``--device``, every phase, blocks of 16384 lung voxels as the stage
   calls it, stopped after ``--radiomics-seconds`` (the patient time is then extrapolated from the voxels done, and
   labelled so); and the same centres of the first block through numba (float64 both): the largest relative
   difference, which must be <= 1e-6 (|a - b| <= 1e-6 max(1, |b|)), NaN where both are NaN.
   ``--quick``: a 32^3 ellipsoid lung, 6 centres, 2 phases.
2. **training**: the proposed LSTM (128-64-32-16-8) on synthetic radiomics files (T = 10, 38 of 56 features) through
   the train stage's data path (``StagedBatches``: staged once, on the GPU when it fits) and ``fit``, one epoch per
   batch size in ``--batch-sizes``, float32 and with ``mixed_precision`` (CUDA only): samples per second; the target
   on a GPU is >= 1,000,000 samples/s. Also the loader alone, streamed (HDF5 every epoch) vs staged, in this process.
3. **saliency**: ``vent.explain.explain_sample`` (the study's map, IG from 32 steps raised to 512 until completeness
   <= 1e-3, as the explain stage) on held-out voxels of the trained LSTM: voxels per second and steps used.

It prints every figure and a final "record" block, and writes them all as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGE_BLOCK = 16384
TOLERANCE = 1e-6


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _tiny_patient() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ct_tzyx, phase_masks_tzyx, lung_zyx) of a 2-phase 32^3 smooth-noise lung (the --quick patient)."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    zz, yy, xx = np.indices((32, 32, 32))
    lung = ((zz - 16) / 14.0) ** 2 + ((yy - 16) / 13.0) ** 2 + ((xx - 16) / 13.0) ** 2 <= 1.0
    ct = np.stack([-800.0 + 1500.0 * ndimage.gaussian_filter(rng.normal(size=lung.shape), 1.5) for _ in range(2)])
    return ct.astype(np.float32), np.stack([lung, lung]), lung


def _full_patient(cache_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full-size synthetic patient of ``scripts/bench_radiomics.py`` (generated and preprocessed once, cached)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_radiomics", Path(__file__).with_name("bench_radiomics.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with np.load(module.prepare_full_patient(cache_dir)) as data:
        return data["ct_tzyx"], data["phase_masks_tzyx"], data["lung_mask_zyx"]


def bench_radiomics(args: argparse.Namespace) -> dict:
    from vent.radiomics import FilterSettings, compute_voxel_features, discretise

    ct, masks, lung = _tiny_patient() if args.quick else _full_patient(args.cache_dir)
    coords = np.argwhere(lung)
    if args.quick:
        coords = coords[len(coords) // 2 : len(coords) // 2 + 6]
    n_phases = ct.shape[0]
    greys = [discretise(ct[t], masks[t], bin_count=64) for t in range(n_phases)]
    torch_settings = FilterSettings(kernel_voxels=13, bin_count=64, backend="torch", dtype="float64")
    numba_settings = FilterSettings(kernel_voxels=13, bin_count=64, backend="numba", dtype="float64")
    check = coords[: min(len(coords), args.check_voxels)]
    worst = 0.0
    for t in range(n_phases):
        a = compute_voxel_features(ct[t], greys[t][0], masks[t], check, greys[t][1], torch_settings)
        b = compute_voxel_features(ct[t], greys[t][0], masks[t], check, greys[t][1], numba_settings)
        both_nan = np.isnan(a) & np.isnan(b)
        diff = np.where(both_nan, 0.0, np.abs(a - b) / np.maximum(1.0, np.abs(b)))
        worst = max(worst, float(np.nanmax(np.where(np.isnan(diff), np.inf, diff))))
    _sync(args.device)
    started, done = time.perf_counter(), 0
    for start in range(0, len(coords), STAGE_BLOCK):
        block = coords[start : start + STAGE_BLOCK]
        for t in range(n_phases):
            compute_voxel_features(ct[t], greys[t][0], masks[t], block, greys[t][1], torch_settings)
        done += len(block)
        if time.perf_counter() - started > args.radiomics_seconds:
            break
    _sync(args.device)
    seconds = time.perf_counter() - started
    return {
        "lung_voxels": int(len(coords)), "phases": int(n_phases), "voxels_timed": int(done),
        "seconds_timed": seconds, "us_per_voxel_phase": seconds / (done * n_phases) * 1e6,
        "patient_seconds": seconds * len(coords) / done, "extrapolated": done < len(coords),
        "checked_voxels": int(len(check)), "max_relative_difference": worst, "tolerance": TOLERANCE,
        "equal_within_tolerance": worst <= TOLERANCE,
    }


def _write_cases(folder: Path, n_cases: int, n_voxels: int) -> list[Path]:
    from vent.io.artifacts import write_radiomics_case

    rng = np.random.default_rng(0)
    paths = []
    for case in range(n_cases):
        labels = (rng.random(n_voxels) < 0.3).astype(np.uint8)
        features = rng.normal(size=(n_voxels, 10, 56)).astype(np.float32)
        features[:, :, :5] += 0.8 * labels[:, None, None]
        paths.append(write_radiomics_case(folder / f"case{case:02d}.h5", features, labels))
    return paths


def _batches(paths: list[Path], standardiser, batch_size: int, shuffle: bool):
    from vent.models.data import VoxelBatches

    return VoxelBatches(paths, list(range(38)), "radiomics", standardiser, batch_size=batch_size, shuffle=shuffle,
                        seed=0)


def _loader_rate(batches) -> float:
    started = time.perf_counter()
    n = sum(int(y.shape[0]) for _, y in batches)
    return n / (time.perf_counter() - started)


def bench_training(args: argparse.Namespace, folder: Path) -> tuple[dict, object, list[Path]]:
    import torch

    from vent.models import build_model
    from vent.models.data import StagedBatches, fit_standardiser
    from vent.models.training import TrainSettings, fit

    paths = _write_cases(folder, args.cases, args.voxels)
    train_paths, val_paths = paths[:-1], paths[-1:]
    standardiser = fit_standardiser(train_paths, list(range(38)), "radiomics", max_voxels_per_case=20000)
    budget = int(args.memory_budget_gb * 1e9)
    streamed = _batches(train_paths, standardiser, 2048, True)
    staged = StagedBatches(streamed, budget, device=args.device)
    staged.stage()
    out = {"voxels_per_epoch": streamed.n_voxels, "staging_seconds": staged.staging_seconds,
           "held": staged.facts()["held"], "loader_streamed_samples_per_s": _loader_rate(streamed),
           "loader_staged_samples_per_s": _loader_rate(staged), "runs": []}
    out["loader_ratio_staged_vs_streamed"] = out["loader_staged_samples_per_s"] / out["loader_streamed_samples_per_s"]
    model = None
    for batch_size in args.batch_sizes:
        for mixed in ([False, True] if args.device.startswith("cuda") else [False]):
            train = StagedBatches(_batches(train_paths, standardiser, batch_size, True), budget, device=args.device)
            val = StagedBatches(_batches(val_paths, standardiser, batch_size, False), budget, device=args.device)
            train.stage()
            val.stage()
            torch.manual_seed(0)
            model = build_model("lstm", 38, 10)
            settings = TrainSettings(lr=1e-3, batch_size=batch_size, max_epochs=2, device=args.device,
                                     mixed_precision=mixed)
            result = fit(model, train, val, settings)
            epoch = result.history[-1]  # the second epoch: cuDNN and the allocator are warm
            rate = train.n_voxels / epoch["seconds"]
            out["runs"].append({"batch_size": batch_size, "precision": result.precision, "samples_per_s": rate,
                                "epoch_seconds": epoch["seconds"]})
            print(f"  training batch {batch_size:6d} {result.precision:9s}: {rate:12,.0f} samples/s "
                  f"(epoch incl. validation {epoch['seconds']:.2f} s)", flush=True)
    out["best_samples_per_s"] = max(run["samples_per_s"] for run in out["runs"])
    out["target_samples_per_s"] = 1_000_000
    return out, model, val_paths


def bench_saliency(args: argparse.Namespace, model, val_paths: list[Path]) -> dict:
    from vent.explain import explain_sample
    from vent.models.data import fit_standardiser, read_voxel_inputs

    standardiser = fit_standardiser(val_paths, list(range(38)), "radiomics")
    rows = np.arange(args.saliency_voxels)
    x = np.asarray(standardiser.apply(read_voxel_inputs(val_paths[0], rows, "radiomics", list(range(38)))))
    _sync(args.device)
    started = time.perf_counter()
    result = explain_sample(model, x, n_steps=32, max_steps=512, completeness_tolerance=1e-3, device=args.device,
                            internal_batch_size=args.explain_batch_size)
    _sync(args.device)
    seconds = time.perf_counter() - started
    return {"voxels": int(len(x)), "seconds": seconds, "voxels_per_s": len(x) / seconds,
            "max_steps_used": int(result.steps_per_voxel.max()), "mean_steps": float(result.steps_per_voxel.mean())}


def main(argv: list[str] | None = None) -> dict:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, any device (the CPU test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="write every figure here as JSON")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "vent_bench_radiomics")
    parser.add_argument("--radiomics-seconds", type=float, default=120.0, help="stop timing radiomics after this")
    parser.add_argument("--check-voxels", type=int, default=2000, help="centres compared torch vs numba")
    parser.add_argument("--cases", type=int, default=5, help="synthetic training patients (+1 validation)")
    parser.add_argument("--voxels", type=int, default=100_000, help="voxels per patient")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2048, 16384, 65536])
    parser.add_argument("--memory-budget-gb", type=float, default=16.0)
    parser.add_argument("--saliency-voxels", type=int, default=1000)
    parser.add_argument("--explain-batch-size", type=int, default=65536, help="execution.explain_batch_size")
    args = parser.parse_args(argv)
    if args.quick:
        args.check_voxels, args.radiomics_seconds, args.cases, args.voxels = 6, 60.0, 3, 1500
        args.batch_sizes, args.memory_budget_gb, args.saliency_voxels, args.explain_batch_size = [512], 1.0, 4, 4096
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available; use --device cpu (or --quick)")
    machine = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
               "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick}
    print(f"bench_gpu on {machine}", flush=True)
    figures: dict = {"machine": machine}
    started = time.perf_counter()
    figures["radiomics"] = bench_radiomics(args)
    print(f"radiomics: {figures['radiomics']}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="vent_bench_gpu_"))
    try:
        figures["training"], model, val_paths = bench_training(args, folder)
        print(f"training: {figures['training']}", flush=True)
        figures["saliency"] = bench_saliency(args, model, val_paths)
        print(f"saliency: {figures['saliency']}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    figures["seconds"] = time.perf_counter() - started
    radiomics, training, saliency = figures["radiomics"], figures["training"], figures["saliency"]
    print("\nrecord:")
    print(f"  device {machine['device']}, torch {machine['torch']}")
    print(f"  radiomics (torch engine on {args.device}): {radiomics['patient_seconds']:.0f} s per patient of "
          f"{radiomics['lung_voxels']} lung voxels x {radiomics['phases']} phases "
          f"({radiomics['us_per_voxel_phase']:.2f} us per voxel-phase"
          f"{', extrapolated' if radiomics['extrapolated'] else ''}); vs numba on {radiomics['checked_voxels']} "
          f"centres: max relative difference {radiomics['max_relative_difference']:.1e} "
          f"({'within' if radiomics['equal_within_tolerance'] else 'OVER'} {TOLERANCE:g})")
    print(f"  LSTM training: best {training['best_samples_per_s']:,.0f} samples/s (target >= 1,000,000 on a GPU); "
          + ", ".join(f"{r['batch_size']} {r['precision']} {r['samples_per_s']:,.0f}" for r in training["runs"]))
    print(f"  loader alone: staged {training['loader_staged_samples_per_s']:,.0f} vs streamed "
          f"{training['loader_streamed_samples_per_s']:,.0f} samples/s "
          f"(x{training['loader_ratio_staged_vs_streamed']:.1f}), staged in {training['held']}")
    print(f"  saliency: {saliency['voxels_per_s']:.1f} voxels/s ({saliency['voxels']} voxels, mean "
          f"{saliency['mean_steps']:.0f} IG steps, at most {saliency['max_steps_used']})")
    print(f"  total {figures['seconds']:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
