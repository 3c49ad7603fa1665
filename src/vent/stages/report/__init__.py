"""Stage ``report``: the study's tables and figures, rebuilt from the artifacts of the other stages alone
(``vent report CONFIG`` runs just this stage, in seconds; the report computes no score).

Reads: ``evaluate/`` (``vent.io.evaluation``: rows, per-patient metrics, Table 2, VAMPIRE metrics, pooled ROC
curves, thresholds, prediction files), ``preprocess/`` (cohort, phase labels, CT, RefVI, ground truth, lung masks),
``split/splits.json`` (the fold that holds each patient out), each row's predictions (``vent.io.predictions``), and
when the config uses them ``radiomics/<case>.h5`` (empty-kernel counts), ``select/*.json`` and ``explain/*``. A stage
the config does not use (``Stage.unused_reason``) leaves its section out with one sentence saying why. Every stage's
manifest gives the provenance. Paths: ``vent.io.layout``.

Writes ``report/``:

- ``report.html`` (one self-contained file: figures embedded, opens offline) and ``report.md`` (figures linked);
- tables: ``table2.csv``, ``table2.md``, ``vampire_metrics.csv``, ``per_patient_metrics.csv``, ``volumes.csv``;
- figures, each as PNG and SVG: ``roc.png`` (Fig. 10), ``per_patient_metrics.png``, ``fig3_correlation_dendrogram.png``
  (Fig. 3), ``selection.png`` (cut-off sweep), ``fig11_saliency_by_class.png``, ``fig12_importance_histogram.png``,
  ``importance.png``, ``fig13_key_sequences.png``, ``deletion_curve.png``, ``patient_<case>.png`` (Figs. 4-9);
- ``volumes/<case>/<case>_<name>.nii.gz``: CT at the breathing extremes, lung mask, RefVI, ground truth and every
  method's probability / defect / ventilation map on the analysis grid (3D Slicer, ITK-SNAP).

Config: ``report`` (and the other sections' settings, quoted in the text).
"""

from __future__ import annotations

import logging
from typing import Any

from vent.io import layout
from vent.io.artifacts import read_attrs, read_csv_rows
from vent.io.atomic import write_text
from vent.io.evaluation import read_evaluation
from vent.models.registry import get_spec
from vent.report.render import Document
from vent.runner import RunContext, StagePlan
from vent.stages.base import Stage
from vent.stages.report.cohort import data_section, empty_kernel_section, phase_state_labels
from vent.stages.report.context import ReportBuild, fmt
from vent.stages.report.patients import patients_section, volumes_section
from vent.stages.report.provenance import provenance_section
from vent.stages.report.saliency import explain_section
from vent.stages.report.scores import (
    per_patient_section,
    roc_section,
    table2_section,
    threshold_note,
    vampire_section,
    write_tables,
)
from vent.stages.report.selection import selection_section

__all__ = ["ReportStage", "phase_state_labels", "threshold_note", "unused_stages", "SECTIONS"]

log = logging.getLogger(__name__)

OPTIONAL_STAGES = ("radiomics", "select", "explain")
"""Stages whose sections the report leaves out when the config does not use them."""

SECTIONS = (
    data_section, empty_kernel_section, table2_section, vampire_section, roc_section, per_patient_section,
    selection_section, explain_section, patients_section, volumes_section, provenance_section,
)
"""The report's sections in reading order; each adds to the document and writes its own figures and files."""


def unused_stages(config: Any) -> dict[str, str]:
    """``{stage: why the config does not use it}`` for the optional stages of the report (``OPTIONAL_STAGES``)."""
    from vent.stages import get_stage

    reasons = {name: get_stage(name).unused_reason(config) for name in OPTIONAL_STAGES}
    return {name: reason for name, reason in reasons.items() if reason is not None}


def _write_documents(report: ReportBuild) -> None:
    formats = report.config.report.formats
    if "md" in formats:
        write_text(report.path("report.md"), report.doc.to_markdown(layout.stage_dir(report.run_dir, "report")))
        report.outputs["report.md"] = "report (Markdown)"
    if "html" in formats:
        write_text(report.path("report.html"), report.doc.to_html())
        report.outputs["report.html"] = "report (HTML, self-contained)"


class ReportStage(Stage):
    name = "report"
    needs = ("preprocess", "radiomics", "split", "select", "evaluate", "explain")
    version = "3"

    def needs_for(self, config: Any) -> tuple[str, ...]:
        """preprocess, split and evaluate, plus radiomics, select and explain when the config uses them."""
        unused = unused_stages(config)
        return tuple(stage for stage in self.needs if stage not in unused)

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        cohort = read_csv_rows(layout.cohort_file(ctx.run_dir), "preprocess")
        cases = [row["case"] for row in cohort]
        pre_attrs = {case: read_attrs(layout.case_file(ctx.run_dir, "preprocess", case)) for case in cases}
        report = ReportBuild(
            ctx=ctx,
            doc=Document("vent report: ventilation defects from 4DCT radiomic sequences"),
            evaluation=read_evaluation(ctx.run_dir),
            unused=unused_stages(ctx.config),
            cohort=cohort,
            pre_attrs=pre_attrs,
            phase_labels=phase_state_labels(pre_attrs),
        )
        write_tables(report)
        for section in SECTIONS:
            section(report)
        _write_documents(report)
        row = report.reference_row()
        reference = next(r for r in report.evaluation.table2 if r["model"] == row.row)
        ctx.echo(
            f"[report] {get_spec(row.model).label}: Dice {fmt(reference['dice_mean'])}, "
            f"AUC {fmt(reference['auc_mean'])} over {reference['n_patients']} patients; "
            f"{sum(1 for name in report.outputs if name.endswith('.png'))} figures"
        )
        return report.outputs
