"""The study's Table 2 from per-patient metrics: mean (min-max) per model and Wilcoxon tests against the reference.

Pure functions over rows ``{model, case, fold, dice, auc, sensitivity, accuracy}``; no file I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from vent.metrics import format_cell, summarise, wilcoxon_vs_reference

__all__ = ["METRICS", "table2_rows", "table2_markdown"]

METRICS = ("dice", "auc", "sensitivity", "accuracy")
_HEADERS = {"dice": "Dice", "auc": "AUC-ROC", "sensitivity": "Sensitivity", "accuracy": "Accuracy"}


def table2_rows(per_patient: Sequence[dict[str, Any]], reference: str, models: Sequence[str]) -> list[dict[str, Any]]:
    """One row per model: ``model, n_patients`` and for each metric ``_mean, _min, _max, _p``.

    ``_p`` is the two-sided Wilcoxon signed-rank p-value over patients against ``reference`` (NaN for the reference
    itself), pairing each patient's held-out value of the two models (the same folds for every model).
    """
    by_model: dict[str, dict[str, dict[str, float]]] = {}
    for row in per_patient:
        by_model.setdefault(row["model"], {}).setdefault(row["case"], {}).update({m: float(row[m]) for m in METRICS})
    rows = []
    for model in models:
        cases = by_model.get(model, {})
        out: dict[str, Any] = {"model": model, "n_patients": len(cases)}
        for metric in METRICS:
            values = {case: v[metric] for case, v in cases.items()}
            summary = summarise(values)
            out[f"{metric}_mean"], out[f"{metric}_min"], out[f"{metric}_max"] = summary.mean, summary.lo, summary.hi
            if model == reference or reference not in by_model:
                out[f"{metric}_p"] = math.nan
            else:
                ref_values = {case: v[metric] for case, v in by_model[reference].items()}
                out[f"{metric}_p"] = wilcoxon_vs_reference(ref_values, values)
        rows.append(out)
    return rows


def table2_markdown(
    rows: Sequence[dict[str, Any]], reference: str, alpha: float = 0.01, labels: dict[str, str] | None = None
) -> str:
    """Markdown Table 2 in the study's format, e.g. ``0.78(0.74-0.79)*`` (``*``: p < alpha vs the reference)."""
    labels = labels or {}
    lines = ["| Model | n | " + " | ".join(_HEADERS[m] for m in METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for row in rows:
        cells = [
            format_cell(
                row[f"{m}_mean"],
                row[f"{m}_min"],
                row[f"{m}_max"],
                None if row["model"] == reference else row[f"{m}_p"],
                alpha,
            )
            for m in METRICS
        ]
        name = labels.get(row["model"], row["model"]) + (" (proposed)" if row["model"] == reference else "")
        lines.append(f"| {name} | {row['n_patients']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
