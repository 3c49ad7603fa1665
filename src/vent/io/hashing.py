"""Content hashes of input files, cached by (path, size, mtime) so a re-run does not re-read gigabytes.

The cache follows DVC's lesson: hash once when a file is first seen, then trust the file's size and modification
time; a changed file gets a new mtime and is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from vent.io.atomic import write_json

__all__ = ["HashCache", "file_sha256"]

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks; of a folder (a DICOM series), the SHA-256 of its files'
    relative names and hashes in name order, so a changed, added or removed slice changes it."""
    path = Path(path)
    if path.is_dir():
        listing = [f"{f.relative_to(path)}:{file_sha256(f)}" for f in sorted(path.rglob("*")) if f.is_file()]
        return hashlib.sha256("\n".join(listing).encode()).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> tuple[int, int]:
    """(size, newest mtime) of a file, or of every file in a folder (sizes summed)."""
    if not path.is_dir():
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns
    stats = [f.stat() for f in path.rglob("*") if f.is_file()]
    return sum(s.st_size for s in stats) + len(stats), max((s.st_mtime_ns for s in stats), default=0)


class HashCache:
    """A JSON cache ``{path: [size, mtime_ns, sha256]}`` stored under the run folder."""

    def __init__(self, cache_file: Path) -> None:
        self.cache_file = cache_file
        self._lock = threading.Lock()
        try:
            self._entries: dict[str, list] = json.loads(cache_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self._entries = {}
        self._dirty = False

    def sha256(self, path: Path) -> str:
        """The file's (or DICOM folder's) SHA-256, from the cache when its size and mtime are unchanged."""
        path = Path(path).resolve()
        size, mtime = _stamp(path)
        key = str(path)
        with self._lock:
            entry = self._entries.get(key)
            if entry and entry[0] == size and entry[1] == mtime:
                return entry[2]
        digest = file_sha256(path)
        with self._lock:
            self._entries[key] = [size, mtime, digest]
            self._dirty = True
        return digest

    def save(self) -> None:
        """Persist new entries (atomically)."""
        if self._dirty:
            write_json(self.cache_file, self._entries)
            self._dirty = False
