"""One writer per run folder: an advisory lock on ``<run_dir>/.vent.lock`` held while a command writes there.

Two ``vent run`` on one run folder would otherwise interleave their writes (one stage's manifest from one, its files
from the other). The lock is ``fcntl.flock`` on an open file: the kernel releases it when the process dies, even by
SIGKILL, so a crashed run never leaves a stale lock behind; the file only says who held it last. A second command
refuses at once, naming the holder, or with ``wait=True`` waits for it. ``flock`` locks are per host on most network
filesystems: on a cluster run the driver on one node (workers never write the run folder's manifests).

Opening the lock is also where an unusable run folder is found: one that is a file, or that cannot be written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from vent.errors import ArtifactError, ConfigError

__all__ = ["run_lock", "LOCK_NAME"]

LOCK_NAME = ".vent.lock"


def _open_lock_file(run_dir: Path) -> int:
    """Create the run folder if needed and open its lock file; clear errors for a folder vent cannot use."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir {run_dir} is a file, not a folder: set run_dir (or --run-dir) to a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError as error:
        raise ConfigError(
            f"run_dir {run_dir} is not writable ({error.strerror}): choose another run_dir (or --run-dir) or fix "
            "its permissions"
        ) from error
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise ArtifactError(
                f"no space left on the device of run_dir {run_dir}: free space and run again"
            ) from error
        raise ConfigError(f"cannot use run_dir {run_dir} ({error.strerror}): choose another run_dir") from error


def _holder(descriptor: int) -> str:
    try:
        os.lseek(descriptor, 0, os.SEEK_SET)
        record = json.loads(os.read(descriptor, 4096).decode() or "{}")
    except (OSError, ValueError):
        record = {}
    if not record:
        return "another vent process"
    return (
        f"vent (pid {record.get('pid')} on {record.get('host')}, `{record.get('command')}`, "
        f"since {record.get('since')})"
    )


@contextlib.contextmanager
def run_lock(run_dir: Path, command: str | None = None, wait: bool = False, poll_s: float = 1.0) -> Iterator[None]:
    """Hold the run folder's lock for the duration of the block (module docstring).

    Raises:
        ArtifactError: another process holds the lock and ``wait`` is False.
        ConfigError: ``run_dir`` is a file or not writable.
    """
    descriptor = _open_lock_file(run_dir)
    try:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise ArtifactError(
                        f"run folder {run_dir} is in use by {_holder(descriptor)}: wait for it to finish, pass --wait "
                        "to queue behind it, or use another --run-dir"
                    ) from None
                time.sleep(poll_s)
        record = {
            "pid": os.getpid(), "host": platform.node(), "command": command or " ".join(sys.argv),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(record).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
