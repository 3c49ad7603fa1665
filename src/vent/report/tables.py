"""The report's table model: one :class:`Table`, rendered to Markdown, HTML and CSV from the same cells.

A :class:`Cell` holds the text a reader sees (Markdown, HTML) and the values a machine reads (CSV); a
:class:`Column` holds its heading and its CSV field names, so one shown column may carry several CSV fields (Table
2's "Dice" cell ``0.58(0.48-0.67)*`` is ``dice_mean, dice_min, dice_max, dice_p`` in the CSV). CSV numbers keep 6
significant digits; NaN is an empty field.

Also here: the study's Table 2 (:func:`table2_table`) and the per-patient table (:func:`per_patient_table`) built
from the evaluate stage's rows (``vent.io.evaluation``; the scoring itself is ``vent.evaluation``). No file I/O.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vent.evaluation import METRICS, VAMPIRE_METRICS
from vent.metrics import format_cell

__all__ = [
    "Cell",
    "Column",
    "Table",
    "table2_table",
    "table2_markdown",
    "vampire_table",
    "per_patient_table",
    "METRICS",
]

_HEADERS = {
    "dice": "Dice",
    "auc": "AUC-ROC",
    "sensitivity": "Sensitivity",
    "accuracy": "Accuracy",
    "r_s": "Spearman r_s",
    "dsc_low": "DSC_low",
    "dsc_high": "DSC_high",
}
_STATS = ("mean", "min", "max", "p")


@dataclass(frozen=True)
class Column:
    """A column: its heading, and its CSV field names (default: the heading)."""

    header: str
    fields: tuple[str, ...] = ()

    @property
    def csv_fields(self) -> tuple[str, ...]:
        return self.fields or (self.header,)


@dataclass(frozen=True)
class Cell:
    """A cell: the text shown (Markdown, HTML) and the values written to the CSV (default: the text)."""

    text: str
    values: tuple[Any, ...] | None = None

    @property
    def csv_values(self) -> tuple[Any, ...]:
        return (self.text,) if self.values is None else self.values


def _cell(value: Any) -> Cell:
    return value if isinstance(value, Cell) else Cell(str(value), (value,))


def _column(value: Column | str) -> Column:
    return value if isinstance(value, Column) else Column(value)


def _csv_value(value: Any) -> Any:
    """6 significant digits for floats, an empty field for NaN or None, everything else as is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def _md_escape(text: str) -> str:
    """A cell's text safe inside a Markdown table row: pipes and backslashes escaped, no HTML, one line."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


@dataclass
class Table:
    """Columns, rows of cells (a :class:`Cell` or a plain value), an optional caption and notes.

    Plain strings as columns and plain values as cells are wrapped on construction.
    """

    columns: list[Column]
    rows: list[list[Cell]]
    caption: str | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.columns = [_column(c) for c in self.columns]
        self.rows = [[_cell(c) for c in row] for row in self.rows]
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table row {i} has {len(row)} cells for {len(self.columns)} columns")
            for column, cell in zip(self.columns, row):
                if len(cell.csv_values) != len(column.csv_fields):
                    raise ValueError(
                        f"table row {i}, column {column.header!r}: {len(cell.csv_values)} CSV values for "
                        f"{len(column.csv_fields)} fields"
                    )

    def markdown_lines(self) -> list[str]:
        """The Markdown lines: caption (bold), header, rule, rows, notes (italic)."""
        lines = [f"**{_md_escape(self.caption)}**", ""] if self.caption else []
        lines.append("| " + " | ".join(_md_escape(c.header) for c in self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(_md_escape(c.text) for c in row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", *(f"*{_md_escape(note)}*" for note in self.notes)]
        return lines

    def to_markdown(self) -> str:
        return "\n".join(self.markdown_lines()) + "\n"

    def to_html(self) -> str:
        caption = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        head = "".join(f"<th>{html.escape(c.header)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c.text)}</td>" for c in row) + "</tr>" for row in self.rows
        )
        notes = "".join(f"<p class='note'>{html.escape(note)}</p>" for note in self.notes)
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"

    def to_csv(self) -> str:
        """One line per row, the columns' CSV fields and values (``\\r\\n`` line ends, the csv module's default)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([name for column in self.columns for name in column.csv_fields])
        for row in self.rows:
            writer.writerow([_csv_value(v) for cell in row for v in cell.csv_values])
        return buffer.getvalue()


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table2_table(
    rows: Sequence[Mapping[str, Any]], reference: str, alpha: float = 0.01, labels: Mapping[str, str] | None = None
) -> Table:
    """The study's Table 2: per row ``label (proposed)``, n and ``mean(min-max)*`` per metric (``*``: p < alpha).

    ``rows`` are ``vent.evaluation.table2_rows``; the CSV holds ``model, n_patients`` and per metric ``_mean,
    _min, _max, _p`` (p = two-sided Wilcoxon signed-rank over patients against ``reference``).
    """
    return _summary_table(rows, METRICS, reference, alpha, labels or {})


def vampire_table(
    rows: Sequence[Mapping[str, Any]], reference: str, alpha: float = 0.01, labels: Mapping[str, str] | None = None
) -> Table:
    """The VAMPIRE challenge's metrics beside Table 2: per row the estimate scored (the method's ventilation map, or
    1 - p(defect)), n and ``mean(min-max)*`` of Spearman r_s, DSC_low and DSC_high; the CSV adds ``estimate``."""
    return _summary_table(rows, VAMPIRE_METRICS, reference, alpha, labels or {}, with_estimate=True)


def _summary_table(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], reference: str, alpha: float,
    labels: Mapping[str, str], with_estimate: bool = False,
) -> Table:
    """Per row: label (proposed), [estimate], n and a ``mean(min-max)*`` cell per metric (CSV: _mean, _min, _max,
    _p)."""
    columns = [Column("Model", ("model",))] + ([Column("Estimate", ("estimate",))] if with_estimate else [])
    columns += [Column("n", ("n_patients",))]
    columns += [Column(_HEADERS[m], tuple(f"{m}_{s}" for s in _STATS)) for m in metrics]
    body = []
    for row in rows:
        name = labels.get(row["model"], row["model"]) + (" (proposed)" if row["model"] == reference else "")
        p = {m: None if row["model"] == reference else row[f"{m}_p"] for m in metrics}
        cells = [Cell(name, (row["model"],))] + ([Cell(str(row["estimate"]))] if with_estimate else [])
        cells.append(Cell(str(row["n_patients"]), (row["n_patients"],)))
        cells += [
            Cell(
                format_cell(row[f"{m}_mean"], row[f"{m}_min"], row[f"{m}_max"], p[m], alpha),
                tuple(row[f"{m}_{s}"] for s in _STATS),
            )
            for m in metrics
        ]
        body.append(cells)
    return Table(columns, body)


def table2_markdown(
    rows: Sequence[Mapping[str, Any]], reference: str, alpha: float = 0.01, labels: Mapping[str, str] | None = None
) -> str:
    """Markdown Table 2 in the study's format, e.g. ``0.78(0.74-0.79)*`` (:func:`table2_table`)."""
    return table2_table(rows, reference, alpha, labels).to_markdown()


def per_patient_table(per_patient: Sequence[Mapping[str, Any]]) -> Table:
    """Model (the row), case, fold and the four metrics per held-out patient: 3 decimals shown, 6 digits in CSV."""
    return Table(
        ["model", "case", "fold", *METRICS],
        [
            [r["model"], r["case"], r["fold"], *[Cell(_f(r[m]), (float(r[m]),)) for m in METRICS]]
            for r in per_patient
        ],
    )
