"""Content seals: an artifact is current only if its bytes are the ones vent wrote.

Every file written through ``vent.io.atomic.atomic_path`` gets a *seal* beside it, ``.<name>.seal.json``, written
right after the file is renamed into place:

    {"format": 1, "size": bytes, "sha256": hex digest, "stat": [device, inode, size, mtime_ns, ctime_ns]}

``verify_artifact`` is what every freshness decision calls (a per-case file before a resume keeps it, a stage's
manifest outputs, a fold's model files, ``vent predict``'s model): a file is current only if it has a seal, its
size is the sealed size, and its SHA-256 is the sealed one. Hashing gigabytes on every ``vent status`` would be slow,
so the hash is trusted without re-reading when the file's stat is the sealed stat: any write, copy, truncation or
``touch`` changes the change time (``ctime``), which no user call can set back, so an unchanged stat means
unchanged bytes (the reasoning of git's index and of DVC's cache, made stricter by ``ctime`` and the inode).
When the stat differs but the hash still matches (a ``touch``), the seal's stat is refreshed.

A crash between the rename and the seal leaves a file without a seal (or with the previous file's seal): it is
then *not* current and is recomputed, never trusted. HDF5 case files also carry their ``case_id``; with
``case_id=`` given, a file holding another case (copied into place, seal and all) is refused too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["seal_file", "seal_path", "sealed_files", "verify_artifact", "SEAL_SUFFIX"]

SEAL_SUFFIX = ".seal.json"
SEAL_FORMAT = 1


def seal_path(path: Path) -> Path:
    """Where the seal of ``path`` lives: ``.<name>.seal.json`` beside it (hidden, like the temporaries)."""
    path = Path(path)
    return path.with_name(f".{path.name}{SEAL_SUFFIX}")


def sealed_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` that has a seal (whether or not it still verifies), in path order."""
    seals = sorted(Path(folder).rglob(f".*{SEAL_SUFFIX}"))
    return [seal.with_name(seal.name[1 : -len(SEAL_SUFFIX)]) for seal in seals]


def _stat_key(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _write_seal(path: Path, payload: dict[str, Any]) -> None:
    # a plain temporary + rename (not atomic_path, which would seal the seal)
    target = seal_path(path)
    temporary = target.with_name(f".tmp-seal-{os.getpid()}-{target.name}")
    temporary.write_text(json.dumps(payload) + "\n")
    os.replace(temporary, target)


def seal_file(path: Path) -> dict[str, Any]:
    """Hash ``path`` and write its seal; returns the seal."""
    from vent.io.hashing import file_sha256

    path = Path(path)
    payload = {"format": SEAL_FORMAT, "size": path.stat().st_size, "sha256": file_sha256(path),
               "stat": _stat_key(path)}
    _write_seal(path, payload)
    return payload


def read_seal(path: Path) -> dict[str, Any] | None:
    """The seal of ``path``, or None when there is none (or it is unreadable: then it is no seal)."""
    try:
        payload = json.loads(seal_path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == SEAL_FORMAT else None


def _h5_case_id(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            value = handle.attrs.get("case_id")
    except OSError:
        return None
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def verify_artifact(path: Path, case_id: str | None = None) -> str | None:
    """Why ``path`` is not a current artifact, or None when it is (module docstring).

    Args:
        path: the artifact. A folder counts as present (its files are verified one by one by their owners).
        case_id: for an HDF5 case file, the case it must hold (its ``case_id`` attribute).
    """
    from vent.io.hashing import file_sha256

    path = Path(path)
    if not path.exists():
        return "missing"
    if path.is_dir():
        return None
    seal = read_seal(path)
    if seal is None:
        return "has no content seal (written by an interrupted run or an older vent)"
    stat = _stat_key(path)
    if stat[2] != seal["size"]:
        return f"is {stat[2]} bytes, {seal['size']} when written (truncated or replaced)"
    if stat != seal["stat"]:
        if file_sha256(path) != seal["sha256"]:
            return "changed since it was written (its SHA-256 differs)"
        try:  # a cache of the check: a run folder shared read-only is still verified (by hashing) every time
            _write_seal(path, {**seal, "stat": stat})
        except OSError:
            pass
    if case_id is not None and path.suffix == ".h5":
        found = _h5_case_id(path)
        if found != case_id:
            return f"holds case {found!r}, not {case_id!r} (another case's file copied into place?)"
    return None
