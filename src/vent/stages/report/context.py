"""What the report's section builders share: the run, the document being built, the evaluation and the cohort."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from vent.errors import ArtifactError
from vent.io import layout
from vent.io.evaluation import EvaluatedRow, Evaluation
from vent.report import figures
from vent.report.render import Document
from vent.runner import RunContext

__all__ = ["ReportBuild", "fmt"]


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for the text: ``digits`` decimals, "n/a" for None or NaN."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


@dataclass
class ReportBuild:
    """The report being built: run context, document, evaluation, cohort, and the outputs written so far."""

    ctx: RunContext
    doc: Document
    evaluation: Evaluation
    unused: dict[str, str]
    cohort: list[dict[str, str]]
    pre_attrs: dict[str, dict[str, Any]]
    phase_labels: list[str]
    outputs: dict[str, Any] = field(default_factory=dict)
    volume_rows: list[list[str]] = field(default_factory=list)
    """The NIfTI volumes written for viewers (case, method, content, file), listed by the volumes section."""

    @property
    def config(self) -> Any:
        return self.ctx.config

    @property
    def run_dir(self) -> Path:
        return self.ctx.run_dir

    @property
    def cases(self) -> list[str]:
        return [row["case"] for row in self.cohort]

    def path(self, name: str) -> Path:
        return layout.report_file(self.run_dir, name)

    def figure(self, name: str, caption: str, description: str) -> None:
        """Add the written figure ``name`` (PNG, with its SVG) to the document and to the outputs."""
        self.doc.image(self.path(name), caption)
        self.outputs[name] = description
        if self.path(name).with_suffix(".svg").exists():
            self.outputs[self.path(name).with_suffix(".svg").name] = f"{description} (SVG)"

    @cached_property
    def styles(self) -> dict[str, figures.LineStyle]:
        """Every row's colour and line style, the same in every figure (``figures.method_style``)."""
        return {r.row: figures.method_style(r.model, r.row, r.label) for r in self.evaluation.rows}

    @cached_property
    def held_out_fold(self) -> dict[str, int]:
        """``{case: the fold whose test patients it is}`` from the split stage."""
        from vent.stages.split import read_splits

        return {case: fold.index for fold in read_splits(self.run_dir, self.cases) for case in fold.test}

    def reference_row(self) -> EvaluatedRow:
        """The reference method's :class:`vent.io.evaluation.EvaluatedRow`."""
        for row in self.evaluation.rows:
            if row.row == self.evaluation.reference:
                return row
        raise ArtifactError(
            f"evaluate/ has no row for the reference {self.evaluation.reference!r}; re-run the evaluate stage "
            "(vent run CONFIG --from evaluate)"
        )

    def not_used(self, stage: str, what: str) -> bool:
        """When ``stage`` is unused, say so in one sentence (``what`` is left out) and return True."""
        if stage not in self.unused:
            return False
        self.doc.paragraph(f"{what} is not part of this run: the {stage} stage is not used; {self.unused[stage]}.")
        return True
