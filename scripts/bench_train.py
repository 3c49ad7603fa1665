"""Benchmark training throughput and peak memory of the proposed LSTM on synthetic radiomics files.

Writes 2N synthetic patient files following the radiomics artifact contract (default 20k voxels, T = 10 phases,
F = 56 features of which 38 are selected), then, in a fresh subprocess per measurement (so peak RSS is per run),
trains the 5-layer LSTM with :func:`vent.models.training.fit` for a fixed number of shuffled batches, first on the
first N patients and then on all 2N. It prints samples/s and peak RSS for both, and the RSS ratio, which should be
about 1 because the shuffle buffer, not the number of patients, bounds the voxels held in memory. Runs on CPU, and
also on CUDA when available.

Usage::

    python scripts/bench_train.py --patients 4 --batches 20
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_cases(folder: Path, n_cases: int, n_voxels: int, n_steps: int, n_features: int, seed: int) -> list[Path]:
    """Write ``n_cases`` synthetic patient files; defects (30%) shift the first features upwards."""
    import numpy as np

    from vent.io.artifacts import write_radiomics_case

    rng = np.random.default_rng(seed)
    paths = []
    for case in range(n_cases):
        labels = (rng.random(n_voxels) < 0.3).astype(np.uint8)
        features = rng.normal(size=(n_voxels, n_steps, n_features)).astype(np.float32)
        features[:, :, :5] += 0.8 * labels[:, None, None]
        path = folder / f"case{case:03d}.h5"
        write_radiomics_case(path, features, labels, intensity=features[:, :, 0] * 100 - 800)
        paths.append(path)
    return paths


class _FirstBatches:
    """The first ``n_batches`` batches of a VoxelBatches (keeps set_epoch and label_counts)."""

    def __init__(self, batches, n_batches: int) -> None:
        self.batches = batches
        self.n_batches = n_batches
        self.batch_size = batches.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __iter__(self):
        return itertools.islice(iter(self.batches), self.n_batches)


def worker(args: argparse.Namespace) -> dict:
    """Train for a fixed number of batches on the given files; return throughput and memory figures."""
    import torch

    from vent.models import build_model
    from vent.models.data import VoxelBatches, fit_standardiser
    from vent.models.training import TrainSettings, fit

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [Path(p) for p in args.files]
    features = list(range(args.selected))
    standardiser = fit_standardiser(paths[:1], features, "radiomics", max_voxels_per_case=4096)
    train = VoxelBatches(paths, features, "radiomics", standardiser, batch_size=args.batch_size, shuffle=True,
                         seed=0, buffer_voxels=args.buffer_voxels)
    val = VoxelBatches(paths[:1], features, "radiomics", standardiser, batch_size=args.batch_size,
                       max_voxels_per_case=args.batch_size)
    torch.manual_seed(0)
    model = build_model("lstm", len(features), train.n_steps)
    settings = TrainSettings(batch_size=args.batch_size, max_epochs=1, device=args.device)

    # Loader alone: the same number of batches without the model.
    started = time.perf_counter()
    n_loaded = sum(y.shape[0] for _, y in itertools.islice(iter(train), args.batches))
    loader_seconds = time.perf_counter() - started

    rss_before = _rss_mib()
    started = time.perf_counter()
    fit(model, _FirstBatches(train, args.batches), val, settings)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    n_trained = min(args.batches * args.batch_size, train.n_voxels)
    return {
        "device": args.device,
        "patients": len(paths),
        "voxels_total": train.n_voxels,
        "samples": n_trained,
        "seconds": seconds,
        "samples_per_s": n_trained / seconds,
        "loader_samples_per_s": n_loaded / loader_seconds,
        "rss_before_training_mib": rss_before,
        "peak_rss_mib": _peak_rss_mib(),
        "peak_buffered_voxels": train.peak_buffered_voxels_,
        "torch_threads": torch.get_num_threads(),
    }


def _run_worker(args: argparse.Namespace, files: list[Path], device: str) -> dict:
    command = [
        sys.executable, __file__, "--worker", "--device", device,
        "--batches", str(args.batches), "--batch-size", str(args.batch_size), "--selected", str(args.selected),
        "--buffer-voxels", str(args.buffer_voxels), "--threads", str(args.threads), "--files", *map(str, files),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=4, help="N; the second run uses 2N patients")
    parser.add_argument("--voxels", type=int, default=20000, help="voxels per patient")
    parser.add_argument("--steps", type=int, default=10, help="phases T")
    parser.add_argument("--features", type=int, default=56, help="features F in the files")
    parser.add_argument("--selected", type=int, default=38, help="features fed to the model")
    parser.add_argument("--batches", type=int, default=20, help="training batches per measurement")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--buffer-voxels", type=int, default=65536)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (0 = torch default; 1 suits small shared machines)")
    parser.add_argument("--device", default="auto", help="auto = cpu, plus cuda if available")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return

    import torch

    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else (
        ["cpu"] if args.device == "auto" else [args.device]
    )
    folder = Path(tempfile.mkdtemp(prefix="vent_bench_"))
    try:
        started = time.perf_counter()
        paths = write_cases(folder, 2 * args.patients, args.voxels, args.steps, args.features, seed=0)
        size_mib = sum(p.stat().st_size for p in paths) / 2**20
        print(f"wrote {len(paths)} files x {args.voxels} voxels x {args.steps} phases x {args.features} features "
              f"({size_mib:.0f} MiB) in {time.perf_counter() - started:.1f} s; model input {args.selected} features; "
              f"{args.batches} batches of {args.batch_size}; buffer {args.buffer_voxels} voxels; "
              f"{os.cpu_count()} CPUs")
        for device in devices:
            results = [_run_worker(args, paths[: args.patients], device), _run_worker(args, paths, device)]
            for result in results:
                print(f"[{device}] {result['patients']:3d} patients ({result['voxels_total']} voxels): "
                      f"{result['samples_per_s']:8.0f} samples/s training ({result['seconds']:.1f} s for "
                      f"{result['samples']} samples), loader alone {result['loader_samples_per_s']:8.0f} samples/s; "
                      f"RSS before training {result['rss_before_training_mib']:.0f} MiB, "
                      f"peak RSS {result['peak_rss_mib']:.0f} MiB, peak buffered voxels "
                      f"{result['peak_buffered_voxels']}, torch threads {result['torch_threads']}")
            ratio = results[1]["peak_rss_mib"] / results[0]["peak_rss_mib"]
            print(f"[{device}] peak RSS ratio {2 * args.patients} vs {args.patients} patients: {ratio:.3f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
