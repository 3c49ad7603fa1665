"""Execution backends: where a stage's independent tasks run (``execution.backend``), never what they compute.

A stage's driver builds one picklable job description per task (a frozen dataclass of plain data: paths, the config,
a case or a fold, and a ``label`` naming it) and hands them, with a module-level task function
``fn(job, progress) -> result``, to :func:`run_tasks`, which yields one :class:`TaskResult` per job in completion
order. Tasks write their own per-case or per-fold files through ``vent.io.atomic`` (on a cluster the run folder is on
a shared filesystem; a full-size patient's radiomics is about 1 GB, which a worker should not send back through the
scheduler) and return small records. Only the driver shows progress and writes the stage manifest; a finished task's
file stays when another fails, so the next run resumes.

Backends (:data:`EXECUTORS`):

- ``serial``: in the driver, one task at a time, with the driver's progress (radiomics' per-voxel bars);
- ``local``: a process pool (spawned) of ``execution.workers`` processes (None = all cores), each task limited to
  ``execution.threads`` CPU threads (None = cores // workers; ``vent.execution.threads``);
- ``dask``: ``dask.distributed`` futures on the scheduler at ``execution.scheduler_address`` (a cluster the user
  started, e.g. ``scripts/slurm_cluster.py``), or on a LocalCluster of ``execution.workers`` processes.

The process pool and the LocalCluster are started at the first stage that needs them and kept until the driver exits
(:func:`close_pools`), so the stages of a run share warm workers.

With the ``local`` backend, a stage with one task left (or ``workers: 1``) runs it in the driver: a pool would only
add start-up time.

A task may have follow-ups: ``run_tasks(..., follow_up=f)`` calls ``f(result)`` in the driver as each task finishes,
and the jobs it returns run before any job not yet started (radiomics: the merge of a case once its last phase is
done, so its per-phase files are merged and removed while the other cases' phases run). The ``local`` backend keeps
only ``workers`` tasks in the pool and hands out the next one as a task finishes; ``dask`` submits follow-ups with a
higher priority. Tasks are deterministic functions of their job, so every backend writes the same arrays
(preprocessing and radiomics whatever the threads; training and registration with the same ``execution.threads``,
as torch and elastix may round differently on another thread count).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from vent.errors import ConfigError
from vent.execution.threads import apply_thread_budget, available_cores, task_threads

__all__ = [
    "EXECUTORS", "ExecutionPlan", "TaskError", "TaskResult", "close_pools", "execution_record", "plan_execution",
    "run_tasks", "task_threads",
]

log = logging.getLogger(__name__)


class TaskError(RuntimeError):
    """A task failed with an exception that cannot carry its label; the original is its ``__cause__``."""


@dataclass(frozen=True)
class TaskResult:
    """One finished task: its job, what the task function returned, its own run time and where it ran."""

    job: Any
    value: Any
    seconds: float
    worker: str


@dataclass(frozen=True)
class ExecutionPlan:
    """How a batch of tasks runs: the backend, the worker processes (None: the scheduler's), threads per task."""

    backend: str
    workers: int | None
    threads: int | None
    address: str | None = None


def plan_execution(execution: Any, n_jobs: int) -> ExecutionPlan:
    """The backend, worker count and per-task threads for ``n_jobs`` tasks under the ``execution`` section."""
    cores = available_cores()
    if execution.backend == "dask":
        if execution.scheduler_address:
            return ExecutionPlan("dask", None, execution.threads, execution.scheduler_address)
        workers = execution.workers or cores  # not fewer for a small stage: the LocalCluster is kept for the run
        return ExecutionPlan("dask", workers, execution.threads or max(1, cores // workers))
    workers = 1 if execution.backend == "serial" else max(1, min(execution.workers or cores, n_jobs))
    if workers == 1:
        return ExecutionPlan("serial", 1, execution.threads)
    return ExecutionPlan("local", workers, execution.threads or max(1, cores // workers))


FollowUp = Callable[[TaskResult], Sequence[Any]]
"""Called in the driver with each finished task's result; returns the jobs that can run now because of it."""


def run_tasks(
    execution: Any, fn: Callable[[Any, Any], Any], jobs: Sequence[Any], progress: Any,
    follow_up: FollowUp | None = None,
) -> Iterator[TaskResult]:
    """Run ``fn(job, progress)`` for every job on the configured backend; yield the results in completion order.

    Args:
        execution: the ``execution`` section.
        fn: a module-level (picklable) task function; it receives a progress object (the driver's in the serial
            backend, a silent one in a worker).
        jobs: picklable job descriptions, each with a ``label`` (e.g. ``radiomics Subject_03``).
        progress: the driver's progress (``vent.runner.Progress``).
        follow_up: jobs made runnable by a finished task (module docstring); they run before the jobs not started
            yet, and their results are yielded like the others'.

    Raises:
        The task's exception with its label in the message (same type when it can be rebuilt, else
        :class:`TaskError`); tasks not started yet are cancelled, finished ones keep their files.
    """
    if not jobs:
        return
    plan = plan_execution(execution, len(jobs))
    log.info("%d task(s) on %s (workers %s, threads per task %s)", len(jobs), plan.backend, plan.workers, plan.threads)
    yield from EXECUTORS[plan.backend](plan, fn, list(jobs), progress, follow_up or _no_follow_up)


def _no_follow_up(result: TaskResult) -> Sequence[Any]:
    return ()


def execution_record(execution: Any, results: Sequence[TaskResult], wall_seconds: float, n_jobs: int) -> dict:
    """What the manifest records of a batch: backend, workers, threads, wall time and each task's time and worker."""
    plan = plan_execution(execution, max(1, n_jobs))
    busy = sum(r.seconds for r in results)
    return {
        "backend": plan.backend,
        "workers": plan.workers,
        "threads_per_task": plan.threads,
        "scheduler_address": plan.address,
        "tasks": len(results),
        "wall_seconds": round(wall_seconds, 3),
        "task_seconds_total": round(busy, 3),
        "per_task": {r.job.label: {"seconds": round(r.seconds, 3), "worker": r.worker} for r in results},
    }


def _reraise(error: BaseException, label: str) -> None:
    """Raise ``error`` with ``label`` (``radiomics Subject_03``) in its message: as it is when the message names it
    already, or an OSError (errno and file name kept, the label added as a note); else rebuilt as the same type from
    the labelled message (a ``VentError`` keeps its exit code), or as a TaskError when that type cannot be."""
    message = str(error)
    if label in message:
        raise error
    if isinstance(error, OSError):
        error.add_note(f"in task {label}")
        raise error
    text = f"{label}: {message}"
    try:
        rebuilt = type(error)(text)
    except Exception:  # noqa: BLE001 - a constructor with other arguments
        rebuilt = None
    if rebuilt is None or str(rebuilt) != text:
        rebuilt = TaskError(f"{label}: {type(error).__name__}: {message}")
    raise rebuilt from error


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _run_in_worker(fn: Callable[[Any, Any], Any], job: Any, threads: int | None) -> tuple[Any, float, str]:
    """The worker's side of every task: set the thread budget, run, time it."""
    from vent.runner import NullProgress

    apply_thread_budget(threads if threads is not None else _dask_worker_share())
    started = time.perf_counter()
    value = fn(job, NullProgress())
    return value, time.perf_counter() - started, _worker_name()


def _dask_worker_share() -> int:
    """On a scheduler's worker without ``execution.threads``: its cores divided among its task threads."""
    try:
        from distributed import get_worker

        return max(1, available_cores() // max(1, get_worker().state.nthreads))
    except (ImportError, ValueError):
        return available_cores()


def _serial(plan: ExecutionPlan, fn, jobs: list[Any], progress: Any, follow_up: FollowUp) -> Iterator[TaskResult]:
    queue = deque(jobs)
    while queue:
        job = queue.popleft()
        started = time.perf_counter()
        try:
            value = fn(job, progress)
        except Exception as error:  # noqa: BLE001 - re-raised with the task's label
            _reraise(error, job.label)
        result = TaskResult(job, value, time.perf_counter() - started, _worker_name())
        queue.extendleft(reversed(list(follow_up(result))))
        yield result


_POOLS: dict[tuple[str, Any], Any] = {}
"""Workers kept for the driver's life, one pool at a time, by (backend, workers or address): the stages of one run
share warm workers (imports done, numba's kernels loaded) and a LocalCluster starts once (5-10 s), not per stage."""


def close_pools() -> None:
    """Shut the kept process pool, dask client and LocalCluster down (at exit; or to free their memory earlier)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        if isinstance(pool, tuple):  # (dask client, our LocalCluster or None): close, never shut a user's cluster
            for part in pool:
                if part is not None:
                    part.close()
        else:
            pool.shutdown(wait=True, cancel_futures=True)


atexit.register(close_pools)


def _kept(key: tuple[str, Any], start: Callable[[], Any]) -> Any:
    if key not in _POOLS:
        close_pools()  # never more worker processes than the config of this stage asks for
        _POOLS[key] = start()
    return _POOLS[key]


def _discard(key: tuple[str, Any]) -> None:
    """Drop a broken or interrupted process pool without waiting for it."""
    pool = _POOLS.pop(key, None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def _local(plan: ExecutionPlan, fn, jobs: list[Any], progress: Any, follow_up: FollowUp) -> Iterator[TaskResult]:
    """The process pool, fed ``plan.workers`` tasks at a time (follow-ups first), so a follow-up never waits behind
    jobs submitted before it existed."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    key = ("local", plan.workers)
    spawn = multiprocessing.get_context("spawn")  # never fork a driver whose numba, torch or OpenMP threads run
    pool = _kept(key, lambda: ProcessPoolExecutor(plan.workers, mp_context=spawn))
    queue = deque(jobs)
    running: dict[Any, Any] = {}

    def top_up() -> None:
        while queue and len(running) < plan.workers:
            job = queue.popleft()
            running[pool.submit(_run_in_worker, fn, job, plan.threads)] = job

    finished = False
    try:
        top_up()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            results = []
            for future in [f for f in running if f in done]:  # submission order: a stable order of the results
                job = running.pop(future)
                error = future.exception()
                if error is not None:
                    queue.clear()
                    wait(running)  # the running tasks finish and keep their files
                    if isinstance(error, BrokenProcessPool):
                        _discard(key)
                    _reraise(error, job.label)
                value, seconds, worker = future.result()
                results.append(TaskResult(job, value, seconds, worker))
                queue.extendleft(reversed(list(follow_up(results[-1]))))
            top_up()  # before yielding: the workers never wait for the driver's consumer
            yield from results
        finished = True
    finally:
        if not finished:  # a task error (handled above), Ctrl-C or a driver error while the tasks ran
            for future in running:
                future.cancel()
            if not all(future.done() for future in running):
                _discard(key)


def _dask_client(plan: ExecutionPlan) -> Any:
    """The kept client: of the scheduler at ``plan.address``, or of a LocalCluster of ``plan.workers`` processes
    (one task thread each: a task's own threads are ``execution.threads``)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise ConfigError(
            "execution.backend: dask needs dask.distributed; install it with `pip install 'dask[distributed]'`"
        ) from error

    def start() -> tuple[Any, Any]:
        if plan.address is not None:
            return Client(plan.address, timeout="30s", set_as_default=False), None
        cluster = LocalCluster(n_workers=plan.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        return Client(cluster, set_as_default=False), cluster

    try:
        return _kept(("dask", plan.address or plan.workers), start)[0]
    except (OSError, TimeoutError) as error:
        raise ConfigError(
            f"execution.scheduler_address {plan.address!r}: no dask scheduler answered ({error}); start the cluster "
            "first (README, 'Running on a cluster'), or set execution.scheduler_address: null for a LocalCluster"
        ) from error


def _dask(plan: ExecutionPlan, fn, jobs: list[Any], progress: Any, follow_up: FollowUp) -> Iterator[TaskResult]:
    """Futures on the cluster: every job submitted at once (the scheduler places them) with falling priorities, so they
    start in order (dask's own order of equal-priority tasks is not the submission order); follow-ups with a priority
    above all of them, so the scheduler starts them next."""
    from distributed import as_completed

    client = _dask_client(plan)
    futures: dict[Any, Any] = {}
    token = uuid.uuid4().hex[:8]  # unique keys on a shared scheduler

    def submit(job: Any, priority: int) -> Any:
        key = f"{job.label}-{token}-{len(futures)}"
        future = client.submit(_run_in_worker, fn, job, plan.threads, pure=False, key=key, priority=priority)
        futures[future] = job
        return future

    try:
        pending = as_completed([submit(job, -i) for i, job in enumerate(jobs)], loop=client.loop)
        for future in pending:
            job = futures[future]
            if future.status == "error":
                _stop(client, futures)
                _reraise(future.exception(), job.label)
            value, seconds, worker = future.result()
            result = TaskResult(job, value, seconds, worker)
            for later in follow_up(result):
                pending.add(submit(later, 1))
            yield result
    finally:
        client.cancel([f for f in futures if not f.done()])


def _stop(client: Any, futures: dict[Any, Any]) -> None:
    """After a task error: cancel the tasks no worker has started, and wait for those on a worker to finish (their
    files are kept, as with the other backends)."""
    on_workers = {key for keys in client.processing().values() for key in keys}
    client.cancel([f for f in futures if not f.done() and f.key not in on_workers])
    for future in futures:
        if not future.cancelled() and future.key in on_workers:
            future.exception()  # waits until it finished, either way


EXECUTORS: dict[str, Callable[..., Iterator[TaskResult]]] = {"serial": _serial, "local": _local, "dask": _dask}
"""The backends of ``execution.backend``: name -> ``(plan, fn, jobs, progress) -> iterator of TaskResult``."""
