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
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


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
        """The file's SHA-256, from the cache when its size and mtime are unchanged."""
        path = Path(path).resolve()
        stat = path.stat()
        key = str(path)
        with self._lock:
            entry = self._entries.get(key)
            if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
                return entry[2]
        digest = file_sha256(path)
        with self._lock:
            self._entries[key] = [stat.st_size, stat.st_mtime_ns, digest]
            self._dirty = True
        return digest

    def save(self) -> None:
        """Persist new entries (atomically)."""
        if self._dirty:
            write_json(self.cache_file, self._entries)
            self._dirty = False
