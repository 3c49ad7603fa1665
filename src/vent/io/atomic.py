"""Atomic file writes: write to a temporary name beside the target, flush it to disk, then rename into place.

A crash (SIGKILL, Ctrl-C, power loss) while writing leaves at most a hidden ``.tmp-*`` file behind, never a truncated
artifact under its final name. ``os.replace`` is atomic on POSIX within one filesystem; the ``fsync`` before it makes
the renamed file's bytes durable, not only its name. After the rename the file is sealed (``vent.io.seals``: its size
and SHA-256 beside it), and a later run trusts a file only when its seal verifies.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vent.io.seals import seal_file

__all__ = ["atomic_path", "write_json", "write_text", "clean_temporaries"]


@contextlib.contextmanager
def atomic_path(target: Path | str, seal: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on normal exit rename it to ``target``, on error delete it.

    ``seal=False`` writes no content seal: for input data vent generates (``vent synth``), which is read as a user's
    data, never verified as an artifact.

    Example:
        >>> with atomic_path(out / "case.h5") as tmp:
        ...     write_h5(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{target.name}")  # keeps the extension for writers that need it
    try:
        yield tmp
        _flush_to_disk(tmp)
        _fault_point(target, "before_rename")
        os.replace(tmp, target)
        _fault_point(target, "after_rename")
        if seal:
            seal_file(target)
    finally:
        if tmp.exists():
            tmp.unlink()


FAULT_KILL_VARIABLE = "VENT_FAULT_KILL"


def _fault_point(target: Path, moment: str) -> None:
    """Fault injection for the crash-safety harness (``scripts/crash_harness.py``), inert unless
    ``VENT_FAULT_KILL=<moment>:<path suffix>`` is set: then this process SIGKILLs itself at ``moment``
    (``before_rename``, or ``after_rename`` = before the seal) of the write whose final path ends with the suffix,
    the two instants where a crash could leave a torn or an unsealed file."""
    kill = os.environ.get(FAULT_KILL_VARIABLE)
    if kill and kill.split(":", 1)[0] == moment and str(target).endswith(kill.split(":", 1)[1]):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _flush_to_disk(path: Path) -> None:
    """``fsync`` a written file (and a folder's files, for writers that make folders) so a power loss after the rename
    cannot leave a renamed but empty file."""
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            descriptor = os.open(file, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


def write_text(target: Path | str, text: str, seal: bool = True) -> Path:
    """Write ``text`` to ``target`` atomically (and seal it unless ``seal`` is False)."""
    with atomic_path(target, seal=seal) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json(target: Path | str, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``target`` atomically (paths and numpy scalars become plain JSON)."""
    return write_text(target, json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def clean_temporaries(folder: Path) -> int:
    """Delete temporaries left by an interrupted write in ``folder``; return how many were removed."""
    removed = 0
    if folder.is_dir():
        for path in folder.rglob(".tmp-*"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
