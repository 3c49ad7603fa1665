"""Report sections on the scores: Table 2, the VAMPIRE metrics, Fig. 10 (ROC) and the per-patient metrics, each
read from the evaluate stage (the report computes no score)."""

from __future__ import annotations

from vent.evaluation import METRICS
from vent.io.atomic import write_text
from vent.io.evaluation import Evaluation, read_roc
from vent.report import figures
from vent.report.tables import Table, per_patient_table, table2_table, vampire_table
from vent.stages.report.context import ReportBuild, fmt

__all__ = ["threshold_note", "write_tables", "table2_section", "vampire_section", "roc_section",
           "per_patient_section"]


def threshold_note(evaluation: Evaluation) -> str:
    """One sentence for the Table 2 note: the threshold rule and the per-fold thresholds of each row that has them."""
    per_row = "; ".join(
        f"{r.row} " + "/".join(f"{f['value']:.2f}" for f in r.thresholds) for r in evaluation.rows if r.thresholds
    )
    if not per_row:
        return "No row chooses a binary threshold on validation patients: each method sets its own."
    setting = evaluation.threshold_setting
    how = f"fixed at {setting:g}" if not isinstance(setting, str) else f"'{setting}' on each fold's validation patients"
    return f"Binary threshold {how} (per fold: {per_row})."


def write_tables(report: ReportBuild) -> None:
    """``table2.csv``, ``table2.md``, ``vampire_metrics.csv`` and ``per_patient_metrics.csv``, each from its model."""
    evaluation, alpha = report.evaluation, report.config.report.alpha
    table2 = table2_table(evaluation.table2, evaluation.reference, alpha, evaluation.labels())
    vampire = vampire_table(evaluation.vampire, evaluation.reference, alpha, evaluation.labels())
    for name, text, what in (
        ("per_patient_metrics.csv", per_patient_table(evaluation.per_patient).to_csv(), "per-patient metrics"),
        ("table2.csv", table2.to_csv(), "Table 2"),
        ("table2.md", table2.to_markdown(), "Table 2 (Markdown)"),
        ("vampire_metrics.csv", vampire.to_csv(), "the VAMPIRE challenge's metrics (r_s, DSC_low, DSC_high)"),
    ):
        write_text(report.path(name), text)
        report.outputs[name] = what


def table2_section(report: ReportBuild) -> None:
    """Table 2, its note (folds, test, selection mode, thresholds) and the Wilcoxon p-values."""
    evaluation, alpha = report.evaluation, report.config.report.alpha
    doc = report.doc
    doc.heading("Table 2: defect prediction, per-patient mean (min-max)")
    selection = "" if "select" in report.unused else f"Features selected in '{evaluation.selection_mode}' mode. "
    doc.paragraph(
        f"Held-out patients of {evaluation.n_folds}-fold cross-validation split by patient (the same folds for "
        f"every model). * = two-sided Wilcoxon signed-rank test over patients against the proposed model, "
        f"p < {alpha:g}. {selection}" + threshold_note(evaluation)
    )
    doc.table(table2_table(evaluation.table2, evaluation.reference, alpha, evaluation.labels()))
    warnings = [f"{row.label}, {message}" for row in evaluation.rows for message in row.warnings]
    if warnings:
        doc.paragraph("Warnings recorded while training these rows:")
        doc.bullets(warnings)
    n_patients = min((r["n_patients"] for r in evaluation.table2), default=0)
    if len(evaluation.table2) > 1 and n_patients and 2.0 / 2**n_patients >= alpha:
        doc.paragraph(
            f"Note: with {n_patients} patients the smallest possible two-sided Wilcoxon p-value is "
            f"{2.0 / 2**n_patients:.3g}, so no difference can be marked at p < {alpha:g}; the p-values are still "
            "reported."
        )
    labels = evaluation.labels()
    p_rows = [
        [labels[r["model"]], *[fmt(r[f"{m}_p"], 4) for m in METRICS]]
        for r in evaluation.table2
        if r["model"] != evaluation.reference
    ]
    if p_rows:
        doc.paragraph("Wilcoxon p-values against the proposed model:")
        doc.table(Table(["Model", *METRICS], p_rows))


def vampire_section(report: ReportBuild) -> None:
    """The VAMPIRE challenge's metrics of every row's continuous estimate, beside Table 2."""
    evaluation, alpha = report.evaluation, report.config.report.alpha
    fraction = evaluation.vampire_fraction
    report.doc.heading("VAMPIRE metrics: agreement with the RefVI, per-patient mean (min-max)")
    report.doc.paragraph(
        "The CT-ventilation challenge's metrics (Kipritidis et al., Med Phys 2019) on the same held-out patients: "
        "voxel-wise Spearman r_s between a row's continuous ventilation estimate and the RefVI inside the analysed "
        f"lung, and the Dice of the low- and high-function regions (the lowest and highest {fraction:.0%} of lung "
        "voxels by volume of each map). The estimate is the method's own ventilation map where it has one "
        "(CT ventilation from registration, the LSTM regressing the RefVI), else 1 - its defect probability. "
        f"* = two-sided Wilcoxon signed-rank test over patients against the proposed model, p < {alpha:g}."
    )
    report.doc.table(vampire_table(evaluation.vampire, evaluation.reference, alpha, evaluation.labels()))


def roc_section(report: ReportBuild) -> None:
    """Fig. 10 from the evaluate stage's pooled curves, in the rows' order, each row in its method's colour."""
    roc = read_roc(report.run_dir)
    curves = {r.row: roc[r.row] for r in report.evaluation.rows if r.row in roc}
    if not curves:
        return
    report.doc.heading("Fig. 10: ROC curves")
    figures.roc_figure(curves, report.path("roc.png"), report.evaluation.reference, report.styles)
    report.figure(
        "roc.png",
        "Fig. 10: ROC curves of held-out voxels pooled over patients, per method (the proposed model drawn "
        "thicker; a dashed line is a variant of the method of the same colour; dotted: chance).",
        "ROC",
    )


def per_patient_section(report: ReportBuild) -> None:
    """Every patient's Dice, AUC, sensitivity and accuracy per method: a dot plot (method colours) and the table."""
    from vent.report.metric_figures import per_patient_metrics_figure

    report.doc.heading("Per-patient metrics")
    rows = [(r.row, report.styles[r.row]) for r in report.evaluation.rows]
    per_patient_metrics_figure(report.evaluation.per_patient, rows, report.path("per_patient_metrics.png"),
                               report.evaluation.reference)
    report.figure(
        "per_patient_metrics.png",
        "Per-patient metrics of the held-out patients: one dot per patient in the method's colour, the black tick "
        "is the mean over patients (the Table 2 value).",
        "per-patient metrics (figure)",
    )
    table = per_patient_table(report.evaluation.per_patient)
    report.doc.table(table, summary=f"The {len(table.rows)} per-patient values (also per_patient_metrics.csv)")
