"""vent.execution: the serial, local (process pool) and dask backends run the same tasks to the same files, carry a
task's error to the driver with its label, budget threads per worker, and are read by no fingerprint; on the tiny
cohort a dask LocalCluster of 2 worker processes writes arrays equal bit for bit to the serial run's."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from execution_tasks import WriteJob, write_value
from vent.config import ExecutionConfig
from vent.errors import ConfigError, DataError
from vent.execution import TaskError, execution_record, plan_execution, run_tasks
from vent.execution.threads import available_cores
from vent.runner import NullProgress


def _run(execution: ExecutionConfig, jobs: list[WriteJob]) -> list:
    return list(run_tasks(execution, write_value, jobs, NullProgress()))


def test_plan_defaults_use_every_core_once() -> None:
    cores = available_cores()
    default = plan_execution(ExecutionConfig(), n_jobs=100)
    assert default.backend == ("local" if cores > 1 else "serial")
    assert default.workers * (default.threads or 1) <= max(cores, 1) or default.backend == "serial"
    assert plan_execution(ExecutionConfig(workers=1), 10).backend == "serial"
    assert plan_execution(ExecutionConfig(workers=4), 1).backend == "serial"  # one task: no pool to start
    assert plan_execution(ExecutionConfig(workers=4, threads=3), 10) == plan_execution(
        ExecutionConfig(backend="local", workers=4, threads=3), 10
    )
    assert plan_execution(ExecutionConfig(workers=4, threads=3), 10).threads == 3
    local = plan_execution(ExecutionConfig(workers=2), 10)
    assert (local.backend, local.workers, local.threads) == ("local", 2, max(1, cores // 2))
    remote = plan_execution(ExecutionConfig(backend="dask", scheduler_address="tcp://10.0.0.5:8786"), 10)
    assert (remote.workers, remote.threads, remote.address) == (None, None, "tcp://10.0.0.5:8786")


def test_scheduler_address_needs_the_dask_backend(tmp_path) -> None:
    from vent.config import config_from_dict

    with pytest.raises(ConfigError, match="execution.backend: dask"):
        config_from_dict({"execution": {"scheduler_address": "tcp://10.0.0.5:8786"}}, tmp_path)


@pytest.mark.parametrize("backend", ["serial", "local", "dask"])
def test_every_backend_runs_every_task_once(tmp_path, backend) -> None:
    jobs = [WriteJob(tmp_path / f"case_{i}.txt", i) for i in range(5)]
    execution = ExecutionConfig(backend=backend, workers=2, threads=1)
    results = _run(execution, jobs)
    assert sorted(r.value["value"] for r in results) == list(range(5))
    assert all((tmp_path / f"case_{i}.txt").read_text() == str(i) for i in range(5))
    if backend != "serial":  # in the workers: the budget set explicitly, for libraries loaded later too
        assert {r.value["threads"] for r in results} == {1} and {r.value["omp"] for r in results} == {"1"}
        assert all(r.value["pid"] != os.getpid() for r in results)
    record = execution_record(execution, results, 1.0, len(jobs))
    assert record["backend"] == backend and record["tasks"] == 5
    assert set(record["per_task"]) == {job.label for job in jobs}


@pytest.mark.parametrize("backend", ["serial", "local", "dask"])
def test_a_follow_up_runs_before_the_jobs_not_started_yet(tmp_path, backend) -> None:
    """The radiomics merge of a case is a follow-up of its last phase: it must not wait behind every other phase."""
    jobs = [WriteJob(tmp_path / f"phase_{i}.txt", i, seconds=0.3) for i in range(8)]
    merge = WriteJob(tmp_path / "merge.txt", 100, seconds=0.3)

    def follow_up(result):
        return [merge] if result.job.value == 0 else []

    execution = ExecutionConfig(backend=backend, workers=2, threads=1)
    results = list(run_tasks(execution, write_value, jobs, NullProgress(), follow_up=follow_up))
    assert sorted(r.value["value"] for r in results) == [*range(8), 100]
    started = {r.job.value: r.value["started"] for r in results}
    later = [v for v in range(8) if started[v] > started[100]]
    if backend == "dask":  # the scheduler may already have sent each worker its next tasks
        assert len(later) >= 2
    else:  # handed out next: every job started after job 0 finished started after the merge
        trigger_done = next(r.value["finished"] for r in results if r.job.value == 0)
        after_trigger = [v for v in range(8) if started[v] > trigger_done]
        assert after_trigger and set(after_trigger) <= set(later)
    assert (tmp_path / "merge.txt").read_text() == "100"


@pytest.mark.parametrize("backend", ["serial", "local", "dask"])
def test_a_task_error_reaches_the_driver_with_its_label(tmp_path, backend) -> None:
    jobs = [WriteJob(tmp_path / "case_0.txt", 0), WriteJob(tmp_path / "broken.txt", 1, fail=True)]
    jobs += [WriteJob(tmp_path / f"case_{i}.txt", i) for i in (2, 3)]
    with pytest.raises(DataError, match="write broken: the input file is truncated"):  # same type: same exit code
        _run(ExecutionConfig(backend=backend, workers=2, threads=1), jobs)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [name for name in names if name.startswith(".tmp-")] and "broken.txt" not in names
    for path in tmp_path.glob("case_*.txt"):  # what finished is complete (and kept: a re-run computes only the rest)
        assert path.read_text() == path.stem.removeprefix("case_")


def test_an_error_that_cannot_take_a_label_is_wrapped() -> None:
    from vent.execution import _reraise

    class Strict(Exception):
        def __init__(self, code: int, detail: str) -> None:
            super().__init__(code, detail)

    with pytest.raises(TaskError, match="radiomics Subject_03: Strict") as caught:
        _reraise(Strict(3, "bad"), "radiomics Subject_03")
    assert isinstance(caught.value.__cause__, Strict)


def test_changing_the_backend_reruns_nothing(tiny_run) -> None:
    from tinyrun import UPSTREAM, plan_stages

    for changes in ({"backend": "dask", "workers": 2}, {"backend": "local", "workers": 2, "threads": 1},
                    {"backend": "dask", "scheduler_address": "tcp://10.0.0.5:8786"}):
        plans, _ = plan_stages(tiny_run.config({"execution": changes}))
        assert [p.action for p in plans] == ["skip"] * len(UPSTREAM), changes


def _datasets(path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    out = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: out.__setitem__(name, (str(item.dtype), item.shape, np.asarray(item[()]).tobytes()))
            if isinstance(item, h5py.Dataset) else None
        )
    return out


@pytest.mark.slow
def test_dask_local_cluster_writes_the_serial_runs_arrays(tiny_run, tmp_path) -> None:
    """preprocess, radiomics (by phase) and train (the raw-intensity LSTM's two folds; a row's folds depend on no
    other row) as tasks on a LocalCluster of 2 worker processes: every array of every per-case artifact and of every
    prediction equals the serial run's (``tiny_run``), bit for bit."""
    from tinyrun import run_stages, tiny_config
    from vent.execution import close_pools
    from vent.io import layout

    changes = {"execution": {"backend": "dask", "workers": 2},
               "train": {"models": {"lstm_raw": {"hidden": [8]}}, "reference_model": "lstm_raw"}}
    config = tiny_config(tmp_path / "run", tiny_run.data_root, changes)
    try:
        plans, messages = run_stages(config, ("preprocess", "split", "radiomics", "train"))
    finally:
        close_pools()
    assert [p.action for p in plans] == ["run"] * 4
    compared = 0
    for stage in ("preprocess", "radiomics"):
        for serial in sorted(layout.stage_dir(tiny_run.run_dir, stage).glob("*.h5")):
            assert _datasets(layout.case_file(config.run_dir, stage, serial.stem)) == _datasets(serial), serial
            compared += 1
        record = json.loads(layout.execution_file(config.run_dir, stage).read_text())
        assert record["backend"] == "dask" and record["workers"] == 2
        if stage == "preprocess":
            assert record["tasks"] == 4
        else:  # a task per case and phase (the tiny cohort's 5), and each case's merge
            assert sorted(label.split()[2] for label in record["per_task"]) == ["merge"] * 4 + ["phase"] * 20
            assert not layout.radiomics_partial_dir(config.run_dir, "_").parent.exists()  # merged and removed
        assert len({task["worker"] for task in record["per_task"].values()}) == 2  # both workers took cases
    for serial in sorted(layout.prediction_dir(tiny_run.run_dir, "lstm_raw").glob("*.h5")):
        assert _datasets(layout.prediction_file(config.run_dir, "lstm_raw", serial.stem)) == _datasets(serial), serial
        compared += 1
    assert compared == 4 + 4 + 4
    assert sum(m.startswith("[train] lstm_raw fold") for m in messages) == 2  # the driver logs each finished fold


def test_the_slurm_example_runs_one_task_per_worker_process() -> None:
    """scripts/slurm_cluster.py --dry-run: the worker job script it would submit (dask-jobqueue; no Slurm needed)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "slurm_cluster.py"
    done = subprocess.run(
        [sys.executable, str(script), "--dry-run", "--cores", "8", "--processes", "2", "--queue", "compute",
         "--prologue", "source /shared/vent/.venv/bin/activate"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    lines = done.stdout.splitlines()
    assert "#SBATCH --cpus-per-task=8" in lines and "#SBATCH -p compute" in lines
    assert "source /shared/vent/.venv/bin/activate" in lines
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert worker.rsplit("--nthreads", 1)[1].split()[0] == "1" and "--nworkers 2" in worker  # the last one counts
