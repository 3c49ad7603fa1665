"""The evaluate stage's artifacts: written and read here only (``vent.io.layout.evaluate_file``).

``evaluate/``::

    rows.json                the rows of Table 2: row, model, selection, label, family, learns, reference,
                             thresholds (per fold), predictions (case -> path relative to the run folder),
                             warnings (the trainers' recorded warnings, "fold k: ..."); plus
                             reference, selection_mode, threshold_setting, n_folds
    per_patient_metrics.csv  model (the row), case, fold, dice, auc, sensitivity, accuracy (full precision)
    table2.csv               model, n_patients and per metric _mean, _min, _max, _p (full precision)
    vampire_per_patient.csv  model, case, fold, estimate (its name), r_s, dsc_low, dsc_high
    vampire_metrics.csv      model, estimate, n_patients and per VAMPIRE metric _mean, _min, _max, _p
    roc.h5                   /<row>/fpr, /<row>/tpr (pooled over held-out voxels), attrs auc, n_points_pooled
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vent.errors import ArtifactError
from vent.io import layout
from vent.io.artifacts import read_csv_rows
from vent.io.atomic import atomic_path, write_json, write_text
from vent.metrics import METRIC_NAMES as METRIC_COLUMNS
from vent.metrics import VAMPIRE_METRIC_NAMES as VAMPIRE_COLUMNS

__all__ = ["EvaluatedRow", "Evaluation", "write_evaluation", "read_evaluation", "write_roc", "read_roc"]

EVALUATION_FORMAT = 2


@dataclass
class EvaluatedRow:
    """One scored row of Table 2."""

    row: str
    model: str
    selection: str
    label: str
    family: str
    learns: bool
    reference: bool
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    predictions: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    """Everything the report needs to show how the methods scored."""

    reference: str
    selection_mode: str
    threshold_setting: Any
    n_folds: int
    rows: list[EvaluatedRow]
    per_patient: list[dict[str, Any]]
    table2: list[dict[str, Any]]
    vampire_fraction: float = 0.3
    vampire_per_patient: list[dict[str, Any]] = field(default_factory=list)
    vampire: list[dict[str, Any]] = field(default_factory=list)

    def labels(self) -> dict[str, str]:
        return {r.row: r.label for r in self.rows}


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def table2_columns() -> list[str]:
    return ["model", "n_patients"] + [f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "min", "max", "p")]


def vampire_columns() -> list[str]:
    return ["model", "estimate", "n_patients"] + [
        f"{m}_{s}" for m in VAMPIRE_COLUMNS for s in ("mean", "min", "max", "p")
    ]


_TEXT_COLUMNS = ("model", "case", "estimate")


def _typed(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row with its numbers back as numbers (n_patients and fold as int)."""
    return {
        k: v if k in _TEXT_COLUMNS else int(v) if k in ("n_patients", "fold") else float(v) for k, v in row.items()
    }


def write_evaluation(run_dir: Path, evaluation: Evaluation) -> dict[str, str]:
    """Write rows.json, per_patient_metrics.csv and table2.csv; returns the manifest entries."""
    document = {
        "format_version": EVALUATION_FORMAT,
        "reference": evaluation.reference,
        "selection_mode": evaluation.selection_mode,
        "threshold_setting": evaluation.threshold_setting,
        "n_folds": evaluation.n_folds,
        "vampire_fraction": evaluation.vampire_fraction,
        "rows": [asdict(r) for r in evaluation.rows],
    }
    write_json(layout.evaluate_file(run_dir, "rows.json"), document)
    per_patient_columns = ["model", "case", "fold", *METRIC_COLUMNS]
    per_patient = _csv(evaluation.per_patient, per_patient_columns)
    write_text(layout.evaluate_file(run_dir, "per_patient_metrics.csv"), per_patient)
    write_text(layout.evaluate_file(run_dir, "table2.csv"), _csv(evaluation.table2, table2_columns()))
    vampire_per_patient = _csv(evaluation.vampire_per_patient, ["model", "case", "fold", "estimate", *VAMPIRE_COLUMNS])
    write_text(layout.evaluate_file(run_dir, "vampire_per_patient.csv"), vampire_per_patient)
    write_text(layout.evaluate_file(run_dir, "vampire_metrics.csv"), _csv(evaluation.vampire, vampire_columns()))
    return {
        "vampire_per_patient.csv": "per-patient r_s, DSC_low and DSC_high of every row's ventilation estimate",
        "vampire_metrics.csv": "the VAMPIRE metrics: mean, min, max and Wilcoxon p per metric",
        "rows.json": "the rows of Table 2, their labels, thresholds and prediction files",
        "per_patient_metrics.csv": "per-patient metrics of every row",
        "table2.csv": "Table 2: mean, min, max and Wilcoxon p per metric",
    }


def read_evaluation(run_dir: Path) -> Evaluation:
    """Read the evaluate stage's tables; a missing file or an older format names what to re-run."""
    path = layout.evaluate_file(run_dir, "rows.json")
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; run the evaluate stage (vent run CONFIG --from evaluate)")
    document = json.loads(path.read_text())
    if document.get("format_version") != EVALUATION_FORMAT:
        raise ArtifactError(f"{path} has format_version {document.get('format_version')!r}; re-run evaluate")
    def table(name: str) -> list[dict[str, Any]]:
        return [_typed(r) for r in read_csv_rows(layout.evaluate_file(run_dir, name), "evaluate")]

    return Evaluation(
        reference=document["reference"],
        selection_mode=document["selection_mode"],
        threshold_setting=document["threshold_setting"],
        n_folds=int(document["n_folds"]),
        rows=[EvaluatedRow(**r) for r in document["rows"]],
        per_patient=table("per_patient_metrics.csv"),
        table2=table("table2.csv"),
        vampire_fraction=float(document["vampire_fraction"]),
        vampire_per_patient=table("vampire_per_patient.csv"),
        vampire=table("vampire_metrics.csv"),
    )


def write_roc(run_dir: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, float, int]]) -> None:
    """``roc.h5``: per row the pooled curve (fpr, tpr), its AUC and how many points the full curve had."""
    with atomic_path(layout.evaluate_file(run_dir, "roc.h5")) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs["format_version"] = EVALUATION_FORMAT
        for row, (fpr, tpr, auc, n_points) in curves.items():
            group = handle.create_group(row)
            group.create_dataset("fpr", data=np.asarray(fpr, dtype=np.float64))
            group.create_dataset("tpr", data=np.asarray(tpr, dtype=np.float64))
            group.attrs["auc"] = float(auc)
            group.attrs["n_points_pooled"] = int(n_points)


def read_roc(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{row: (fpr, tpr, auc)}`` of every row with a pooled curve."""
    path = layout.evaluate_file(run_dir, "roc.h5")
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; run the evaluate stage (vent run CONFIG --from evaluate)")
    with h5py.File(path, "r") as handle:
        return {row: (g["fpr"][...], g["tpr"][...], float(g.attrs["auc"])) for row, g in handle.items()}
