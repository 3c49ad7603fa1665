"""Atomic file writes: write to a temporary name beside the target, then rename into place.

A crash (or Ctrl-C) while writing leaves at most a hidden ``.tmp-*`` file behind, never a truncated artifact under its
final name, so a later run can trust every file it finds. ``os.replace`` is atomic on POSIX within one filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_json", "write_text", "clean_temporaries"]


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on normal exit rename it to ``target``, on error delete it.

    Example:
        >>> with atomic_path(out / "case.h5") as tmp:
        ...     write_h5(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{target.name}")  # keeps the extension for writers that need it
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(target: Path | str, text: str) -> Path:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
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
