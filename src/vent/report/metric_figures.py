"""Per-patient metric figures of the report (matplotlib, Agg backend): every held-out patient of every method."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vent.errors import DataError  # noqa: E402
from vent.report.figures import LineStyle, save_figure  # noqa: E402

__all__ = ["PANEL_METRICS", "draw_per_patient_metrics", "per_patient_metrics_figure"]

PANEL_METRICS: tuple[tuple[str, str], ...] = (
    ("dice", "Dice"),
    ("auc", "AUC"),
    ("sensitivity", "Sensitivity"),
    ("accuracy", "Accuracy"),
)
"""(key in the per-patient records, panel title), left to right."""

_LABEL_WIDTH = 34  # characters per line of a row label (Table 2 names are up to ~70)
_JITTER_HALF_HEIGHT = 0.28  # patients spread over +/- this much around their row (rows 1 apart)


def _patient_offsets(per_patient: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Deterministic vertical jitter: patient k of the sorted case names sits at the k-th of evenly spaced offsets,
    the same in every row and panel, so one patient can be followed across methods."""
    cases = sorted({str(r["case"]) for r in per_patient})
    if len(cases) == 1:
        return {cases[0]: 0.0}
    return dict(zip(cases, np.linspace(-_JITTER_HALF_HEIGHT, _JITTER_HALF_HEIGHT, len(cases)).tolist()))


def _values(records: Sequence[Mapping[str, Any]], metric: str) -> tuple[list[str], np.ndarray]:
    cases = [str(r["case"]) for r in records]
    return cases, np.array([float("nan") if r[metric] is None else float(r[metric]) for r in records])


def _draw_panel(
    ax: plt.Axes,
    metric: str,
    by_row: dict[str, list[Mapping[str, Any]]],
    rows: Sequence[tuple[str, LineStyle]],
    offsets: dict[str, float],
) -> dict[str, int]:
    """One metric: each patient a dot in its row's colour (hollow for a dashed variant row), the mean a black tick.
    Returns the NaN values skipped per row label."""
    skipped: dict[str, int] = {}
    for position, (row, style) in enumerate(rows):
        cases, values = _values(by_row.get(row, []), metric)
        finite = np.isfinite(values)
        if (~finite).any():
            skipped[style.label] = int((~finite).sum())
        if not finite.any():
            continue
        y = position + np.array([offsets[c] for c, ok in zip(cases, finite) if ok])
        solid = style.linestyle == "-"
        ax.scatter(values[finite], y, s=22, facecolors=[style.color] if solid else "none", edgecolors=[style.color],
                   linewidths=1.0, alpha=0.9, zorder=3, gid=f"patients:{row}")
        ax.plot([float(values[finite].mean())] * 2, [position - 0.38, position + 0.38], color="k", lw=2.0,
                zorder=4, gid=f"mean:{row}")
    return skipped


def _nan_note(skipped: dict[str, dict[str, int]]) -> str:
    parts = [f"{title}: " + ", ".join(f"{label} {n}" for label, n in rows.items())
             for title, rows in skipped.items() if rows]
    if not parts:
        return "No value is NaN."
    total = sum(sum(rows.values()) for rows in skipped.values())
    return f"{total} NaN value{'s' if total != 1 else ''} skipped (undefined for that patient): " + "; ".join(parts)


def draw_per_patient_metrics(
    per_patient: Sequence[Mapping[str, Any]], rows: Sequence[tuple[str, LineStyle]], reference: str
) -> plt.Figure:
    """The per-patient metrics figure, drawn but not saved (see ``per_patient_metrics_figure``).

    Each panel's patient dots are a PathCollection with gid ``patients:<row>``, its mean a Line2D with gid
    ``mean:<row>``.

    Raises:
        DataError: A record's row (its ``model`` key) is not among ``rows``, or ``rows`` is empty.
    """
    if not rows:
        raise DataError("the per-patient metrics figure needs at least one row.")
    names = [row for row, _ in rows]
    unknown = sorted({str(r["model"]) for r in per_patient} - set(names))
    if unknown:
        raise DataError(f"per-patient records of rows {unknown} that the figure is not given; rows: {names}.")
    by_row: dict[str, list[Mapping[str, Any]]] = {}
    for record in per_patient:
        by_row.setdefault(str(record["model"]), []).append(record)
    offsets = _patient_offsets(per_patient)
    n_cases = len(offsets)
    fig, axes = plt.subplots(1, len(PANEL_METRICS), sharey=True, figsize=(12, 0.38 * len(rows) + 1.6))
    skipped: dict[str, dict[str, int]] = {}
    for ax, (metric, title) in zip(axes, PANEL_METRICS):
        if reference in names:
            ax.axhspan(names.index(reference) - 0.5, names.index(reference) + 0.5, color="0.93", zorder=0)
        skipped[title] = _draw_panel(ax, metric, by_row, rows, offsets)
        n_nan = sum(skipped[title].values())
        ax.set_title(title + (f"  ({n_nan} NaN skipped)" if n_nan else ""), fontsize=9)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(f"{title} (0 to 1)", fontsize=8)
        ax.set_xticks(np.linspace(0, 1, 6))
        ax.grid(axis="x", color="0.85", lw=0.6, zorder=1)
        ax.tick_params(labelsize=7.5)
    axes[0].set_yticks(range(len(rows)), [textwrap.fill(style.label, _LABEL_WIDTH) for _, style in rows], fontsize=7.5)
    axes[0].set_ylim(len(rows) - 0.5, -0.5)  # Table 2 order from the top
    for label, name in zip(axes[0].get_yticklabels(), names):
        label.set_fontweight("bold" if name == reference else "normal")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.text(0.01, 0.005, f"Each dot is one held-out patient ({n_cases} patients; a patient keeps its vertical offset "
             "in every row and panel; hollow dots: a variant row); black tick: mean over the row's patients; bold, "
             "shaded: the proposed model.\n" + _nan_note(skipped), fontsize=7, va="bottom", ha="left", wrap=True)
    return fig


def per_patient_metrics_figure(
    per_patient: Sequence[Mapping[str, Any]], rows: Sequence[tuple[str, LineStyle]], path: Path, reference: str
) -> Path:
    """Per-patient Dice, AUC, sensitivity and accuracy of every row of Table 2, one panel per metric.

    Args:
        per_patient: One record per (row, held-out patient): keys model (the row), case, fold, dice, auc,
            sensitivity, accuracy (``per_patient_metrics.csv``); NaN or None values are skipped and counted.
        rows: (row, its style) in Table 2 order, top to bottom; the dots take the style's colour.
        path: The PNG to write (its SVG beside it).
        reference: The proposed model's row, drawn bold on a shaded band.

    Returns:
        ``path``.
    """
    return save_figure(draw_per_patient_metrics(per_patient, rows, reference), path)

