"""Task functions and jobs for the execution-backend tests (importable as `execution_tasks`: a spawned worker process
imports a task function by its module's name, which a test module under --import-mode=importlib does not have)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vent.errors import DataError
from vent.io.atomic import atomic_path


@dataclass(frozen=True)
class WriteJob:
    """Write ``value`` to ``path`` (atomically); ``fail`` raises a DataError instead, naming no task."""

    path: Path
    value: int
    fail: bool = False
    seconds: float = 0.0  # how long the task works (sleeps) before it writes

    @property
    def label(self) -> str:
        return f"write {self.path.stem}"


def write_value(job: WriteJob, progress: Any) -> dict[str, Any]:
    """Task function: the job's file, or its DataError; returns the value, the process and its thread budget."""
    import time

    from vent.execution.threads import task_threads

    started = time.time()
    time.sleep(job.seconds)
    if job.fail:
        raise DataError("the input file is truncated")
    with atomic_path(job.path) as tmp:
        tmp.write_text(str(job.value))
    return {"value": job.value, "pid": os.getpid(), "threads": task_threads(_NoThreads()),
            "omp": os.environ.get("OMP_NUM_THREADS"), "started": started, "finished": time.time()}


class _NoThreads:
    threads = None
