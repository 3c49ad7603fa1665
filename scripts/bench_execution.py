"""Benchmark the execution backends on preprocess + radiomics of a small synthetic cohort, and check equality.

Runs the two per-case stages from scratch three times in this process, on one synthetic cohort: ``serial`` (the
driver, one case at a time, numba on ``--threads`` threads: all cores by default, as before the backends), ``local``
(a process pool of ``--workers`` processes) and ``dask`` (a LocalCluster of ``--workers`` processes), the last two
with ``cores // workers`` threads per task. It prints each run's wall time per stage (worker start-up included: it is
part of what a run pays) and its ratio to the serial run's, and whether every array of every ``<case>.h5`` equals the
serial run's bit for bit. A warm-up case is computed first (not timed) so that the driver's numba kernels are loaded
before the serial run, as the workers load theirs inside the timed runs. Machines are noisy: compare the ratios of
one invocation, not seconds across invocations.

Usage::

    python scripts/bench_execution.py                     # 4 demo-size PET-like cases, 2 workers
    python scripts/bench_execution.py --cases 6 --size tiny --workers 2 --keep /tmp/bench_exec
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

STAGES = ("preprocess", "radiomics")


def _config(root: Path, run_dir: Path, args: argparse.Namespace, execution: dict[str, Any]) -> Any:
    from vent.config import config_from_dict

    raw = {
        "run_dir": str(run_dir),
        "data": {"root": str(root), "synthetic": {"cases": args.cases, "modality": "pet", "size": args.size,
                                                  "seed": 0}},
        "execution": {"device": "cpu", **execution},
    }
    return config_from_dict(raw, run_dir.parent)


def _run(config: Any) -> dict[str, float]:
    """Wall seconds per stage, from scratch."""
    from vent.runner import RunContext, execute_plan, plan_run
    from vent.stages import get_stage

    ctx = RunContext(config=config)
    plans = plan_run(ctx, [get_stage(name) for name in STAGES], force=True)
    return {row["stage"]: row["seconds"] for row in execute_plan(ctx, plans)}


def _arrays(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    import h5py
    import numpy as np

    out: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    with h5py.File(path, "r") as handle:
        def visit(name: str, item: Any) -> None:
            if isinstance(item, h5py.Dataset):
                out[name] = (str(item.dtype), item.shape, np.asarray(item[()]).tobytes())

        handle.visititems(visit)
    return out


def _equal(run_dir: Path, reference: Path) -> tuple[bool, int]:
    """Whether every per-case artifact's arrays equal the reference run's; and how many files were compared."""
    from vent.io import layout

    files = [p for stage in STAGES for p in sorted(layout.stage_dir(reference, stage).glob("*.h5"))]
    same = all(_arrays(layout.case_file(run_dir, p.parent.name, p.stem)) == _arrays(p) for p in files)
    return same, len(files)


def _warm_up(root: Path, work: Path, args: argparse.Namespace) -> None:
    """One case through both stages in the driver, untimed: loads numba's kernels (the workers do it when timed)."""
    from vent.config import config_from_dict
    from vent.runner import RunContext, execute_plan, plan_run
    from vent.stages import get_stage

    raw = {"run_dir": str(work / "warmup"), "data": {"root": str(root), "subjects": ["Subject_01"],
                                                     "synthetic": {"cases": args.cases, "modality": "pet",
                                                                   "size": args.size, "seed": 0}},
           "execution": {"backend": "serial", "device": "cpu"}}
    ctx = RunContext(config=config_from_dict(raw, work))
    execute_plan(ctx, plan_run(ctx, [get_stage(name) for name in STAGES], force=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--size", default="demo", choices=["tiny", "demo", "full"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="the serial run's threads (default: all cores)")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the runs (default: a temp dir)")
    args = parser.parse_args()

    from vent.execution import close_pools
    from vent.execution.threads import available_cores
    from vent.stages.preprocess import ensure_data

    work = args.keep or Path(tempfile.mkdtemp(prefix="vent_bench_exec_"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "cohort"
    ensure_data(_config(root, work / "unused", args, {}))
    _warm_up(root, work, args)
    runs = {
        "serial": {"backend": "serial", "threads": args.threads},
        "local": {"backend": "local", "workers": args.workers},
        "dask": {"backend": "dask", "workers": args.workers},
    }
    print(f"{args.cases} {args.size}-size cases, {available_cores()} cores; preprocess + radiomics from scratch")
    times: dict[str, dict[str, float]] = {}
    for name, execution in runs.items():
        shutil.rmtree(work / name, ignore_errors=True)
        times[name] = _run(_config(root, work / name, args, execution))
        close_pools()  # the next backend starts its own workers
    serial = sum(times["serial"].values())
    print(f"{'backend':8} {'preprocess s':>13} {'radiomics s':>12} {'total s':>8} {'ratio':>6}  equal to serial")
    for name, seconds in times.items():
        total = sum(seconds.values())
        same, n_files = _equal(work / name, work / "serial") if name != "serial" else (True, 0)
        verdict = "(reference)" if name == "serial" else f"{'yes' if same else 'NO'}, {n_files} files bit for bit"
        print(f"{name:8} {seconds['preprocess']:13.1f} {seconds['radiomics']:12.1f} {total:8.1f} "
              f"{total / serial:6.2f}  {verdict}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
