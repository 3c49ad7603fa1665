"""Peak memory of training and explanation on a cohort whose feature store is larger than a fixed bound.

Writes a synthetic cohort of radiomics files with the artifact writer (``vent.io.artifacts``; random but plausible
features: per-feature scale and offset, a smooth breathing trend over the phases, defects shifting the first
features), ``--store-gb`` of float32 features in all, then in a fresh subprocess each (so the peak is per measurement):

- ``train``: the real sequence trainer (``vent.models.sequence.train_sequence_fold``) on one fold using every voxel
  (no ``train.max_voxels_per_case``): the standardiser streamed over the training files, the batches staged once
  (``execution.memory_budget_gb``: in RAM within it, else a mapped file), one epoch, the validation threshold and
  the prediction of the test patient;
- ``explain``: the explain stage's reading and explanation of that fold (``vent.stages.explain``: a stratified
  sample of the test patient's voxels, IG with completeness-driven steps, the deletion and randomisation checks).

Each prints its peak RSS (``ru_maxrss``, the process's high-water mark, which includes pages of mapped files) and the
script checks it against ``--bound-gb``. It exits 1 when a peak is over the bound.

Usage::

    python scripts/bench_memory.py                       # store 5 GB, bound 4 GB, budget 2 GB and 0.25 GB
    python scripts/bench_memory.py --quick               # store 0.3 GB, bound 1.5 GB (a minute)
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROW = "lstm"
CHUNK = 4096


def _peak_rss_gb() -> float:
    """This process's peak resident set size in GB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _cases(n_cases: int) -> list[str]:
    return [f"case{k:02d}" for k in range(n_cases)]


def write_case(run_dir: Path, case: str, n_voxels: int, n_steps: int, n_features: int, seed: int) -> int:
    """Write one radiomics file of ``n_voxels`` voxels, chunk by chunk (bounded memory); returns its bytes on disk.

    Skipped (its size returned) when the file is already there with that many voxels (``--keep`` reuses a store).
    """
    import h5py
    import numpy as np

    from vent.io import layout
    from vent.io.artifacts import create_radiomics_case, open_radiomics_case, write_radiomics_voxel_data
    from vent.io.images import Grid

    path = layout.case_file(run_dir, "radiomics", case)
    if path.is_file() and open_radiomics_case(path).n_voxels == n_voxels:
        return path.stat().st_size
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, int(case.removeprefix("case"))])
    ids = [f"feature_{k}" for k in range(n_features)]
    scale = rng.uniform(0.5, 50.0, n_features).astype(np.float32)
    offset = rng.uniform(-100.0, 100.0, n_features).astype(np.float32)
    trend = np.sin(np.linspace(0, np.pi, n_steps, dtype=np.float32))[None, :, None]
    side = int(np.ceil(n_voxels ** (1 / 3)))
    grid = Grid((side, side, side), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    labels = (rng.random(n_voxels) < 0.3).astype(np.uint8)
    flat = np.arange(n_voxels)
    coords = np.stack([flat // (side * side), (flat // side) % side, flat % side], axis=1)
    with h5py.File(path, "w") as handle:
        features = create_radiomics_case(handle, n_voxels, n_steps, ids, ids, {"case_id": case, **grid.to_attrs()})
        intensity = np.empty((n_voxels, n_steps), dtype=np.float32)
        for start in range(0, n_voxels, CHUNK):
            stop = min(start + CHUNK, n_voxels)
            block = rng.normal(size=(stop - start, n_steps, n_features)).astype(np.float32)
            block += 0.3 * trend + 0.8 * labels[start:stop, None, None] * (np.arange(n_features) < 5)
            features[start:stop] = block * scale + offset
            intensity[start:stop] = -800.0 + 100.0 * block[:, :, 0]
        write_radiomics_voxel_data(handle, intensity, labels, np.zeros(n_voxels, np.float32), coords)
    return path.stat().st_size


def write_store(run_dir: Path, n_cases: int, n_voxels: int, n_steps: int, n_features: int, seed: int) -> int:
    """Write the cohort's radiomics files, two at a time; returns their bytes on disk."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2) as pool:
        sizes = pool.map(write_case, *zip(*[(run_dir, case, n_voxels, n_steps, n_features, seed)
                                            for case in _cases(n_cases)]))
        return sum(sizes)


def _job(run_dir: Path, n_cases: int, budget_gb: float, selected: int):
    from vent.config import ExecutionConfig, GroundTruthConfig, TrainConfig
    from vent.cv import Fold
    from vent.io import layout
    from vent.io.atomic import write_json
    from vent.models.jobs import FoldJob

    cases = _cases(n_cases)
    fold = Fold(0, train=cases[:-2], val=cases[-2:-1], test=cases[-1:])
    selection = layout.selection_file(run_dir, "nested", 0)
    selection.parent.mkdir(parents=True, exist_ok=True)
    write_json(selection, {"selected": [f"feature_{k}" for k in range(selected)]})
    train = TrainConfig(models={ROW: {"hidden": [16, 8]}}, reference_model=ROW, max_epochs=1, lr=1e-3,
                        batch_size=4096)
    execution = ExecutionConfig(memory_budget_gb=budget_gb, device="cpu", threads=2)
    return FoldJob(run_dir, ROW, ROW, "nested", fold, train, execution, GroundTruthConfig())


def worker_train(args: argparse.Namespace) -> dict:
    import torch

    from vent.io import layout
    from vent.models.sequence import train_sequence_fold
    from vent.runner import NullProgress

    torch.set_num_threads(2)
    job = _job(Path(args.run_dir), args.cases, args.budget_gb[0], args.selected)
    shutil.rmtree(layout.fold_dir(job.run_dir, ROW, 0), ignore_errors=True)  # train afresh, no checkpoint resumed
    started = time.perf_counter()
    outcome = train_sequence_fold(job, NullProgress())
    return {"seconds": time.perf_counter() - started, "peak_rss_gb": _peak_rss_gb(),
            "data_path": outcome.record["data_path"], "test_voxels": int(outcome.predictions[0].probability.size)}


def worker_explain(args: argparse.Namespace) -> dict:
    from types import SimpleNamespace

    import torch

    from vent.config import ExplainConfig
    from vent.io import layout
    from vent.stages.explain import _explain_fold, _read_fold

    torch.set_num_threads(2)
    job = _job(Path(args.run_dir), args.cases, args.budget_gb[0], args.selected)
    config = ExplainConfig(voxels_per_class_per_case=args.explain_voxels, max_steps=args.explain_max_steps,
                           n_steps=min(ExplainConfig().n_steps, args.explain_max_steps))
    ctx = SimpleNamespace(config=SimpleNamespace(explain=config), run_dir=job.run_dir,
                          case_file=lambda stage, case: layout.case_file(job.run_dir, stage, case))
    started = time.perf_counter()
    inputs = _read_fold(ctx, job.fold, ROW)
    _, summary = _explain_fold(inputs, ctx.config.explain, "cpu", 4096, randomise=True)
    return {"seconds": time.perf_counter() - started, "peak_rss_gb": _peak_rss_gb(),
            "explained_voxels": summary["n_voxels"]}


def _run(args: argparse.Namespace, what: str, budget_gb: float) -> dict:
    command = [sys.executable, __file__, "--worker", what, "--run-dir", str(args.run_dir), "--cases",
               str(args.cases), "--budget-gb", str(budget_gb), "--selected", str(args.selected),
               "--explain-voxels", str(args.explain_voxels), "--explain-max-steps", str(args.explain_max_steps)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {what} measurement failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-gb", type=float, default=5.0,
                        help="float32 bytes of /features over the cohort (what loading it whole would hold)")
    parser.add_argument("--bound-gb", type=float, default=4.0, help="peak RSS every measurement must stay under")
    parser.add_argument("--budget-gb", type=float, nargs="+", default=[2.0, 0.25],
                        help="execution.memory_budget_gb values to train with (one measurement each)")
    parser.add_argument("--cases", type=int, default=8, help="patients (fold: all but 2 train, 1 val, 1 test)")
    parser.add_argument("--steps", type=int, default=10, help="phases T")
    parser.add_argument("--features", type=int, default=56, help="features F in the files")
    parser.add_argument("--selected", type=int, default=8, help="features fed to the model")
    parser.add_argument("--explain-voxels", type=int, default=200, help="explain.voxels_per_class_per_case")
    parser.add_argument("--explain-max-steps", type=int, default=512, help="explain.max_steps (IG steps)")
    parser.add_argument("--quick", action="store_true",
                        help="store 0.3 GB, bound 1.5 GB, budgets 0.1 and 0.01 GB, 50 voxels per class, 64 IG steps")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the store here and keep it (a store of the same size already there is reused)")
    parser.add_argument("--worker", choices=["train", "explain"], help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps((worker_train if args.worker == "train" else worker_explain)(args)))
        return
    if args.quick:
        args.store_gb, args.bound_gb, args.budget_gb = 0.3, 1.5, [0.1, 0.01]
        args.explain_voxels, args.explain_max_steps = 50, 64
    args.run_dir = args.keep or Path(tempfile.mkdtemp(prefix="vent_bench_memory_"))
    failed = False
    try:
        n_voxels = int(args.store_gb * 1e9 / (args.cases * args.steps * args.features * 4))
        started = time.perf_counter()
        store = write_store(args.run_dir, args.cases, n_voxels, args.steps, args.features, seed=0)
        print(f"feature store: {args.cases} patients x {n_voxels} voxels x {args.steps} phases x {args.features} "
              f"features = {args.cases * n_voxels * args.steps * args.features * 4 / 1e9:.2f} GB of float32 "
              f"features ({store / 1e9:.2f} GB on disk), written in {time.perf_counter() - started:.0f} s; "
              f"bound {args.bound_gb:.2f} GB; model input {args.selected} features")
        for budget in args.budget_gb:
            result = _run(args, "train", budget)
            train = result["data_path"]["train"]
            print(f"train   (budget {budget:5.2f} GB): peak RSS {result['peak_rss_gb']:.2f} GB, "
                  f"{result['seconds']:.0f} s; staged {train['staged_gb']:.2f} GB held in {train['held']} "
                  f"({train['staging_seconds']:.0f} s)")
            failed |= result["peak_rss_gb"] >= args.bound_gb
        result = _run(args, "explain", args.budget_gb[0])
        print(f"explain: peak RSS {result['peak_rss_gb']:.2f} GB, {result['seconds']:.0f} s, "
              f"{result['explained_voxels']} voxels explained")
        failed |= result["peak_rss_gb"] >= args.bound_gb
        print("record: store GB on disk, bound, and per line the peak RSS;", "FAIL: a peak is over the bound"
              if failed else "every peak is under the bound")
    finally:
        if args.keep is None:
            shutil.rmtree(args.run_dir, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
