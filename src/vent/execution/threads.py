"""The thread budget of one task: how many CPU threads numba, torch, BLAS/OpenMP and elastix may use while it runs.

In the driver (the serial backend) a task uses ``execution.threads`` (None = the libraries' defaults: all cores), as
before the execution backends existed. A worker process of the ``local`` or ``dask`` backend sets its budget once per
task (:func:`apply_thread_budget`), so W workers x T threads never oversubscribe the machine; the code that starts
threads asks :func:`task_threads`. This module imports nothing heavy: a spawned worker reads it before numpy.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["available_cores", "task_threads", "apply_thread_budget"]

_BUDGET: int | None = None
"""The budget of the task now running in this worker process; None in the driver."""

_THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)
"""Read by the libraries when they load: set before a task imports them, so a fresh worker starts within budget.
(Not NUMBA_NUM_THREADS: it caps numba's pool for the process's life; ``numba.set_num_threads`` limits it instead,
here and in the radiomics engine.)"""


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity: a Slurm allocation or a cgroup, not the whole node)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def task_threads(execution: Any) -> int | None:
    """Threads the running task may use: the worker's budget inside a worker, else ``execution.threads`` (None =
    the libraries' defaults, all cores)."""
    return _BUDGET if _BUDGET is not None else execution.threads


def apply_thread_budget(threads: int) -> None:
    """Limit this (worker) process to ``threads`` CPU threads: the libraries' environment variables for those not
    loaded yet, and threadpoolctl (BLAS, OpenMP), numba and torch for those already loaded."""
    global _BUDGET
    _BUDGET = max(1, int(threads))
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(_BUDGET)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=_BUDGET)  # kept (not a context manager): the worker runs only budgeted tasks
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(_BUDGET, numba.config.NUMBA_NUM_THREADS))
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(_BUDGET)
