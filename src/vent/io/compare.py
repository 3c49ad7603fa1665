"""Compare two run folders artifact by artifact: the same config and seed must give the same artifacts.

``compare_run_folders(a, b)`` lists every difference (empty when the runs are equal). Each file is compared by what
it holds, bit for bit:

- ``*.h5``: the same groups, datasets and attributes; every dataset ``array_equal`` with NaN at the same positions,
  the same dtype and shape; every attribute equal (arrays with their dtype);
- a ``*.json`` or ``*.pt`` file with ``RUN_SPECIFIC`` keys: the same tree (key order included; tensors by
  ``torch.equal`` with their dtype) once those keys are left out;
- ``report.md``, ``report.html``: line by line; a differing line is allowed only when it matches
  ``RUN_SPECIFIC_LINES`` on both sides;
- every other file (CSV, PNG, SVG, NIfTI, joblib, model.pt, the other JSON files): its bytes.

Before comparing, a text or string value has its run folder's absolute path replaced by ``<run>`` (two runs live in
two folders). ``RUN_SPECIFIC``, ``RUN_SPECIFIC_LINES`` and ``NOT_COMPARED`` are the one list of what legitimately
differs between two runs, each with the reason; nothing else is excluded.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RUN_SPECIFIC", "RUN_SPECIFIC_LINES", "NOT_COMPARED", "compare_run_folders"]

RUN_SPECIFIC: dict[tuple[str, str], str] = {
    ("*/manifest.json", "provenance.started"): "when the stage ran",
    ("*/manifest.json", "provenance.seconds"): "how long the stage took",
    ("*/manifest.json", "provenance.host"): "the machine that ran it",
    ("*/manifest.json", "provenance.platform"): "the machine's operating system",
    ("*/manifest.json", "provenance.config_file"): "the absolute path of the config file",
    ("*/manifest.json", "provenance.config_sha256"): (
        "a hash of the effective config, which holds the absolute run_dir (the sections each stage reads are in "
        "definition.config and compared)"
    ),
    **{
        (file, f"{prefix}{key}"): reason
        for file, prefix in (("*/execution.json", ""), ("*/manifest.json", "outputs.execution.json."))
        for key, reason in (
            ("wall_seconds", "how long the stage's tasks took"),
            ("task_seconds_total", "how long the stage's tasks took"),
            ("per_task.*.seconds", "how long each task took"),
            ("per_task.*.worker", "the host and process id that ran each task"),
            ("tasks", "how many tasks this invocation ran: a resumed run runs only what an interruption left undone"),
            ("per_task", "the tasks this invocation ran (a resumed run: only what an interruption left undone)"),
        )
    },
    ("train/*/fold_*/result.json", "seconds"): "how long the fold trained",
    ("train/*/fold_*/result.json", "history.*.seconds"): "how long each epoch took",
    ("train/*/fold_*/result.json", "data_path.*.staging_seconds"): "how long staging the fold's inputs took",
    ("train/*/fold_*/checkpoint.pt", "history.*.seconds"): "how long each epoch took",
}
"""``{(file pattern, dotted key pattern): reason}``: values that differ between two runs of one config by design.
A key pattern's ``*`` matches one key or list index."""

RUN_SPECIFIC_LINES: dict[str, str] = {
    r"^Versions: .*\. Every number in this report is read from this run's artifacts in .*\.": (
        "provenance: the library versions, the host and the run folder of the run"
    ),
    r"^\| (preprocess|radiomics|split|select|train|evaluate|explain) \| [0-9-]+ [0-9:]+ \| ": (
        "provenance: when each stage ran and how long it took"
    ),
    r"^<table>.*<th>last run \(UTC\)</th>": "provenance: when each stage ran and how long it took",
    r"^- Config: |^<ul><li>Excluded subjects: ": "provenance: names the config file of the run",
    r"^(<details><summary>The effective config</summary><pre>)?run_dir: |^  root: ": (
        "the effective config: the run folder and the data root of the run"
    ),
    r"^Data: /|^Data: [A-Za-z]:": "the data root of the run",
}
"""Line patterns of ``report.md`` and ``report.html`` (HTML unescaped, ``<p>`` stripped) that may differ."""

NOT_COMPARED: dict[str, str] = {
    "*.seal.json": (
        "a seal restates its file's size and SHA-256 (the file itself is compared) and its stat (inode, times)"
    ),
    ".vent.lock": "who held the run folder's lock last (process id, host, time; vent.io.lock)",
    "report/screenshot.png": "a browser's rendering (vent report --check), not a result",
    "report/browser_check.json": "the browser check's record",
}
"""``{file pattern: reason}``: files that are not compared at all."""

_TEXT_SUFFIXES = (".json", ".csv", ".md", ".html", ".svg", ".txt")
_LINE_COMPARED = ("report/report.md", "report/report.html")


def compare_run_folders(a: Path | str, b: Path | str) -> list[str]:
    """Every difference between the artifacts of run folders ``a`` and ``b``; empty when they are equal.

    Args:
        a: a run folder.
        b: another run folder of the same config and seed.

    Returns:
        One line per difference, naming the file (relative to the run folder) and what differs.
    """
    a, b = Path(a), Path(b)
    files_a, files_b = _files(a), _files(b)
    out = [f"{rel}: only in {a}" for rel in sorted(files_a - files_b)]
    out += [f"{rel}: only in {b}" for rel in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        out += [f"{rel}: {d}" for d in _compare_file(rel, a, b)]
    return out


def _matches(rel: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(Path(rel).name, pattern)


def _files(root: Path) -> set[str]:
    rels = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return {r for r in rels if not any(_matches(r, pattern) for pattern in NOT_COMPARED)}


def _compare_file(rel: str, a: Path, b: Path) -> list[str]:
    x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
    if x == y:
        return []
    if rel.endswith(_TEXT_SUFFIXES):
        x, y = _without_run(x, a), _without_run(y, b)
        if x == y:
            return []
    if rel.endswith(".h5"):
        return _compare_h5(a / rel, b / rel, (str(a), str(b)))
    if rel in _LINE_COMPARED:
        return _compare_lines(x.decode(), y.decode())
    if not any(_matches(rel, file) for file, _ in RUN_SPECIFIC):
        return [f"bytes differ ({len(x)} vs {len(y)} bytes)"]
    if rel.endswith(".json"):
        return _compare_trees(rel, json.loads(x), json.loads(y))
    return _compare_torch(rel, a / rel, b / rel)


def _run_pattern(run: Path | str) -> str:
    """The run folder's absolute path as a whole path (``/x/run`` in ``/x/run/a`` but not in ``/x/runs``)."""
    return re.escape(str(run)) + r"(?![\w.-])"


def _without_run(data: bytes, run: Path) -> bytes:
    return re.sub(_run_pattern(run).encode(), b"<run>", data)


def _excluded(rel: str, key: str) -> bool:
    return any(
        _matches(rel, file) and fnmatch.fnmatchcase(key, pattern) and key.count(".") == pattern.count(".")
        for file, pattern in RUN_SPECIFIC
    )


def _compare_trees(rel: str, x: Any, y: Any, key: str = "") -> list[str]:
    """Differences of two JSON-like trees (dicts in key order, lists, tensors, arrays, scalars)."""
    if key and _excluded(rel, key):
        return []
    where = key or "(top level)"
    if isinstance(x, dict) and isinstance(y, dict):
        if list(x) != list(y):
            return [f"{where}: keys {list(x)} vs {list(y)}"]
        return [d for k in x for d in _compare_trees(rel, x[k], y[k], f"{key}.{k}" if key else str(k))]
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        if len(x) != len(y) or type(x) is not type(y):
            return [f"{where}: {type(x).__name__} of {len(x)} vs {type(y).__name__} of {len(y)}"]
        return [d for i, (u, v) in enumerate(zip(x, y)) for d in _compare_trees(rel, u, v, f"{key}.{i}")]
    if hasattr(x, "detach") or hasattr(y, "detach"):  # torch tensors
        import torch

        same = isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == y.dtype
        return [] if same and x.shape == y.shape and torch.equal(x, y) else [f"{where}: tensors differ"]
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return [] if _same_array(np.asarray(x), np.asarray(y)) else [f"{where}: arrays differ"]
    if type(x) is not type(y):
        return [f"{where}: {x!r} vs {y!r}"]
    if isinstance(x, float) and np.isnan(x) and np.isnan(y):
        return []
    return [] if x == y else [f"{where}: {_short(x)} vs {_short(y)}"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _same_array(x: np.ndarray, y: np.ndarray) -> bool:
    """Bit for bit: dtype, shape and values, NaN at the same positions."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype.kind in "fc":
        return bool(np.array_equal(x, y, equal_nan=True)) and bool(np.array_equal(np.signbit(x), np.signbit(y)))
    return bool(np.array_equal(x, y))


def _compare_torch(rel: str, x: Path, y: Path) -> list[str]:
    import torch

    return _compare_trees(rel, torch.load(x, map_location="cpu", weights_only=False),
                          torch.load(y, map_location="cpu", weights_only=False))


def _attr(value: Any, run: str) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    return re.sub(_run_pattern(run), "<run>", value) if isinstance(value, str) else value


def _compare_h5(x: Path, y: Path, runs: tuple[str, str]) -> list[str]:
    import h5py

    out: list[str] = []
    with h5py.File(x, "r") as fx, h5py.File(y, "r") as fy:
        names_x, names_y = [], []
        fx.visit(names_x.append)
        fy.visit(names_y.append)
        if names_x != names_y:
            return [f"objects {names_x} vs {names_y}"]
        for name in ["/", *names_x]:
            nx, ny = fx[name], fy[name]
            if list(nx.attrs) != list(ny.attrs):
                out.append(f"{name} attributes {list(nx.attrs)} vs {list(ny.attrs)}")
                continue
            for key in nx.attrs:
                u, v = _attr(nx.attrs[key], runs[0]), _attr(ny.attrs[key], runs[1])
                same = _same_array(u, v) if isinstance(u, np.ndarray) and isinstance(v, np.ndarray) else (
                    type(u) is type(v) and (u == v or (isinstance(u, float) and np.isnan(u) and np.isnan(v))))
                if not same:
                    out.append(f"{name} attribute {key}: {_short(u)} vs {_short(v)}")
            if isinstance(nx, h5py.Dataset):
                if not isinstance(ny, h5py.Dataset) or not _same_array(nx[()] if nx.shape else np.asarray(nx[()]),
                                                                       ny[()] if ny.shape else np.asarray(ny[()])):
                    out.append(f"dataset {name} differs")
    return out or ["bytes differ but every dataset and attribute is equal (HDF5 layout or timestamps)"]


def _expected_line(line: str) -> bool:
    import html

    text = html.unescape(line.removeprefix("<p>").removesuffix("</p>"))
    return any(re.match(pattern, text) for pattern in RUN_SPECIFIC_LINES)


def _compare_lines(x: str, y: str) -> list[str]:
    import difflib

    a, b = x.splitlines(), y.splitlines()
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            out += [f"line {i1 + 1 + k}: {_short(line)}" for k, line in enumerate(a[i1:i2]) if not _expected_line(line)]
            out += [f"line {j1 + 1 + k}: {_short(line)}" for k, line in enumerate(b[j1:j2]) if not _expected_line(line)]
    return out
