"""The train stage's records, written and read here only (paths from ``vent.io.layout``).

- ``train/<row>/fold_<k>/result.json``: one (row, fold)'s record, written last (its presence means the fold
  finished): ``stamp``, ``identity``, ``length``, ``threshold_setting``, ``threshold``, ``test`` and the trainer's
  facts;
- ``train/runs.json``: the rows, ``[{"row", "model", "selection"}]`` in Table 2 order;
- ``train/thresholds.json``: ``{"setting", "rows": {row: [{"fold", "rule", "value", "validation", ...}]}}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vent.errors import ArtifactError
from vent.io import layout
from vent.io.atomic import write_json

__all__ = ["write_fold_result", "read_fold_result", "write_runs", "read_runs", "write_thresholds", "read_thresholds"]


def write_fold_result(run_dir: Path, row: str, fold: int, result: dict[str, Any]) -> None:
    write_json(layout.fold_result_file(run_dir, row, fold), result)


def read_fold_result(run_dir: Path, row: str, fold: int) -> dict[str, Any] | None:
    """A fold's record, or None when the fold never finished (no file, or a torn one from an older vent)."""
    try:
        return json.loads(layout.fold_result_file(run_dir, row, fold).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _read(path: Path) -> Any:
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; run the train stage (vent run CONFIG --from train)")
    return json.loads(path.read_text())


def write_runs(run_dir: Path, runs: list[dict[str, str]]) -> None:
    write_json(layout.runs_file(run_dir), runs)


def read_runs(run_dir: Path) -> list[dict[str, str]]:
    return _read(layout.runs_file(run_dir))


def write_thresholds(run_dir: Path, setting: Any, rows: dict[str, list[dict[str, Any]]]) -> None:
    write_json(layout.thresholds_file(run_dir), {"setting": setting, "rows": rows})


def read_thresholds(run_dir: Path) -> dict[str, Any]:
    return _read(layout.thresholds_file(run_dir))
