"""Stage ``report``: the study's tables and figures, regenerated from the artifacts of the other stages.

Reads: ``evaluate/`` (``vent.io.evaluation``: the rows, per-patient metrics, Table 2, pooled ROC curves, thresholds
and prediction files; the report computes no score), ``preprocess/cohort.csv`` and the preprocessed cases (phase
labels, the example case), the reference row's first prediction (``vent.io.predictions``), and, when the config uses
them, ``radiomics/<case>.h5`` (empty-kernel counts), ``select/*.json`` and ``explain/*``. A stage the config does not
use (``Stage.unused_reason``) leaves its section out with one sentence saying why. Paths: ``vent.io.layout``.
Writes ``report/``:

- ``table2.csv`` (model, n_patients, and for dice, auc, sensitivity, accuracy the ``_mean``, ``_min``, ``_max``,
  ``_p`` columns; p = two-sided Wilcoxon signed-rank over patients against the reference model) and ``table2.md``,
  both rendered from one table model (``vent.report.tables``), as is Table 2 in the report;
- ``per_patient_metrics.csv`` (model, case, fold, dice, auc, sensitivity, accuracy);
- figures: ``roc.png`` (Fig. 10), ``saliency.png``, ``importance.png``, ``trends.png``, ``selection.png``,
  ``example_case.png``;
- ``report.md`` and ``report.html`` (self-contained).

Config: ``report`` (and the other sections' settings, quoted in the text).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vent.errors import ArtifactError
from vent.evaluation import METRICS
from vent.io import layout
from vent.io.artifacts import read_attrs
from vent.io.atomic import write_text
from vent.io.evaluation import Evaluation, read_evaluation, read_roc
from vent.io.saliency import read_pooled_saliency
from vent.models.registry import get_spec
from vent.report import figures
from vent.report.render import Document
from vent.report.tables import Table, per_patient_table, table2_table, vampire_table
from vent.runner import RunContext, StagePlan, read_manifest
from vent.stages.base import Stage

__all__ = ["ReportStage", "phase_state_labels", "threshold_note", "unused_stages"]

log = logging.getLogger(__name__)

OPTIONAL_STAGES = ("radiomics", "select", "explain")
"""Stages whose sections the report leaves out when the config does not use them."""


def phase_state_labels(case_attrs: dict[str, dict[str, Any]]) -> list[str]:
    """Phase labels by breathing state, from each case's ``exhale_phase`` / ``inhale_phase`` (analysis order).

    Phase t is labelled "t+1" plus "max exhale" / "max inhale" where most cases have their extreme there; when the
    cases disagree the share is shown ("max inhale 4/6").
    """
    attrs = list(case_attrs.values())
    n_phases = len(attrs[0].get("phase_order") or []) or 1
    labels = [f"{t + 1}" for t in range(n_phases)]
    for key, name in (("exhale_phase", "max exhale"), ("inhale_phase", "max inhale")):
        values = [int(a[key]) for a in attrs if a.get(key) is not None]
        if not values:
            continue
        common = max(set(values), key=values.count)
        share = values.count(common)
        labels[common] += f" {name}" + ("" if share == len(values) else f" {share}/{len(values)}")
    return labels


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


def unused_stages(config: Any) -> dict[str, str]:
    """``{stage: why the config does not use it}`` for the optional stages of the report (``OPTIONAL_STAGES``)."""
    from vent.stages import get_stage

    reasons = {name: get_stage(name).unused_reason(config) for name in OPTIONAL_STAGES}
    return {name: reason for name, reason in reasons.items() if reason is not None}


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; run the stage that writes it")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


@dataclass
class _Report:
    """What the section builders share: the run, the document and outputs being built, and the evaluation."""

    ctx: RunContext
    doc: Document
    evaluation: Evaluation
    unused: dict[str, str]
    pre_attrs: dict[str, dict[str, Any]]
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        return self.ctx.config

    @property
    def run_dir(self) -> Path:
        return self.ctx.run_dir

    def path(self, name: str) -> Path:
        return layout.report_file(self.run_dir, name)

    def figure(self, name: str, caption: str, description: str) -> None:
        """Add the written figure ``name`` to the document and to the outputs."""
        self.doc.image(self.path(name), caption)
        self.outputs[name] = description

    def reference_row(self) -> Any:
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


def _write_tables(report: _Report) -> None:
    """``table2.csv``, ``table2.md`` and ``per_patient_metrics.csv``, each from its table model."""
    evaluation = report.evaluation
    table2 = table2_table(evaluation.table2, evaluation.reference, report.config.report.alpha, evaluation.labels())
    write_text(report.path("per_patient_metrics.csv"), per_patient_table(evaluation.per_patient).to_csv())
    write_text(report.path("table2.csv"), table2.to_csv())
    write_text(report.path("table2.md"), table2.to_markdown())
    vampire = vampire_table(evaluation.vampire, evaluation.reference, report.config.report.alpha, evaluation.labels())
    write_text(report.path("vampire_metrics.csv"), vampire.to_csv())
    report.outputs.update(
        {
            "vampire_metrics.csv": "the VAMPIRE challenge's metrics (r_s, DSC_low, DSC_high) of every row",
            "table2.csv": "Table 2",
            "table2.md": "Table 2 (Markdown)",
            "per_patient_metrics.csv": "per-patient metrics",
        }
    )


def _data_paragraph(report: _Report, n_patients: int, n_phases: str) -> None:
    """The cohort, the grid and the ground-truth definition; excluded cases."""
    config = report.config
    source = (
        f"synthetic {config.data.synthetic.modality.upper()}-like cohort (generated by vent)"
        if config.data.synthetic
        else str(config.data.root)
    )
    gt = config.preprocess.ground_truth
    reading = (
        "volume: the lowest-valued voxels"
        if gt.method == "volume"
        else "cumulative: the lowest voxels holding that share of total ventilation"
    )
    report.doc.paragraph(
        f"Data: {source}; {n_patients} patients, {n_phases} phases, resampled to "
        f"{'x'.join(f'{s:g}' for s in config.preprocess.spacing_mm)} mm. Ground truth: iterative +/-"
        f"{gt.outlier_sd:g} SD outlier clipping of the RefVI (until the threshold moves < {gt.tolerance:.0%}), "
        f"then the lowest {gt.fraction:.0%} by {reading}"
        f"{', after a 3x3x3 median filter' if gt.median_filter else ''}."
    )
    if config.data.exclude:
        report.doc.bullets([f"excluded {case}: {reason}" for case, reason in config.data.exclude.items()])


def _phase_section(report: _Report, phase_labels: list[str]) -> None:
    """Phase order, RefVI resampling and the ground-truth clipping warnings."""
    config = report.config
    report.doc.heading("Data: phase order, ground truth and lung-edge handling")
    report.doc.paragraph(
        f"Phase order: '{config.data.phase_order}'"
        + (" (rotated so that the smallest lung, maximum exhalation, comes first)."
           if config.data.phase_order == "from_max_exhale" else " (the files' order).")
        + f" Phases in the figures: {', '.join(phase_labels)}. RefVI resampling: "
        f"'{config.preprocess.ground_truth.refvi_interpolation}'"
        + (" (normalised over RefVI lung voxels, no interpolation rim)."
           if config.preprocess.ground_truth.refvi_interpolation == "masked" else " (plain linear, 0 outside).")
    )
    not_converged = [c for c, a in report.pre_attrs.items() if a.get("gt_clip_converged") is False]
    if not_converged:
        report.doc.paragraph(
            "Warning: the ground-truth outlier clipping stopped at preprocess.ground_truth.max_iterations="
            f"{config.preprocess.ground_truth.max_iterations} before converging for: {', '.join(not_converged)}."
        )


_EMPTY_KERNEL_POLICIES = {
    "analysis_mask": "recomputed with the phase | analysis-mask kernel, the rest carried from the nearest phase",
    "nearest_phase": "carried from the nearest phase with a defined kernel",
    "drop": "left out of the analysis",
}


_COUNTED = ("empty", "undefined", "recomputed", "carried")
"""The empty-kernel counts shown per patient: ``<key>_voxel_phases`` of the radiomics file's ``empty_kernel``."""


def _empty_kernel_section(report: _Report, cases: list[str]) -> None:
    """The empty-kernel policy and, per patient, the voxel-phases it touched (from the radiomics files)."""
    if report.not_used("radiomics", "Lung-edge handling of the radiomic kernels"):
        return
    radiomics = report.config.radiomics
    report.doc.paragraph(
        f"Kernels bounded by the {'phase' if radiomics.kernel_mask == 'phase' else 'analysis'} lung mask. A lung "
        f"voxel whose kernel holds no lung voxel at a phase (or leaves a feature undefined) is handled by "
        f"radiomics.empty_kernel = '{radiomics.empty_kernel}' ({_EMPTY_KERNEL_POLICIES[radiomics.empty_kernel]}). "
        "Voxel-phases touched, per patient:"
    )
    rows = []
    for case in cases:
        counts = json.loads(read_attrs(layout.case_file(report.run_dir, "radiomics", case)).get("empty_kernel") or "{}")
        pre = report.pre_attrs[case]
        rows.append(
            [
                case,
                " ".join(str(v) for v in pre.get("phase_order", [])),
                int(pre["n_lung_voxels"]),
                *[sum(counts.get(f"{key}_voxel_phases", [])) for key in _COUNTED],
                counts.get("dropped_voxels", 0),
                int(pre.get("n_lung_without_refvi", 0)),
            ]
        )
    report.doc.table(
        ["case", "file phases (analysis order)", "lung voxels", "empty kernels", "undefined features",
         "recomputed", "carried", "voxels dropped", "voxels without RefVI"],
        rows,
    )


def _table2_section(report: _Report) -> None:
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
        [labels[r["model"]], *[_f(r[f"{m}_p"], 4) for m in METRICS]]
        for r in evaluation.table2
        if r["model"] != evaluation.reference
    ]
    if p_rows:
        doc.paragraph("Wilcoxon p-values against the proposed model:")
        doc.table(Table(["Model", *METRICS], p_rows))


def _vampire_section(report: _Report) -> None:
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


def _roc_section(report: _Report) -> None:
    """Fig. 10 from the evaluate stage's pooled curves, in the rows' order."""
    roc = read_roc(report.run_dir)
    curves = {r.row: roc[r.row] for r in report.evaluation.rows if r.row in roc}
    if not curves:
        return
    styles = {r.row: figures.method_style(r.model, r.row, r.label) for r in report.evaluation.rows}
    figures.roc_figure(curves, report.path("roc.png"), report.evaluation.reference, styles)
    report.figure("roc.png", "Fig. 10: ROC curves of held-out voxels pooled over patients, per model.", "ROC")


_SINGLETON_CONVENTIONS = {
    "zero": "Rousseeuw 1987 / scikit-learn: 0",
    "one": "MATLAB's silhouette: 1",
    "exclude": "singletons left out of the mean",
}


def _selection_rule(report: _Report, rule: dict[str, Any], chosen: str, other: str) -> None:
    if not rule:
        return
    max_cutoff = rule.get("max_cutoff")
    report.doc.paragraph(
        f"Silhouette of a singleton cluster: '{chosen}' selects ({_SINGLETON_CONVENTIONS[chosen]}); the '{other}' "
        f"convention is shown beside it. Eligible cuts give between select.min_clusters = {rule.get('min_clusters')} "
        f"and select.max_clusters = {rule.get('max_clusters')} clusters (fractions of the non-constant features)"
        f"{'' if max_cutoff is None else ', cut-off <= '}{'' if max_cutoff is None else max_cutoff}; 'guard' names "
        "the bound that changed the best-silhouette cut. The study reports cut-off 0.02, 38 clusters, silhouette 0.79."
    )


def _selection_table(report: _Report, summary: dict[str, Any], chosen: str, other: str) -> None:
    """Per selection (paper mode, each nested fold): cophenetic CC, the chosen and the other convention's cut."""
    entries = [("paper (all patients; leaks test labels)", summary["paper"])] + [
        (f"nested, fold {fold} (training patients only)", nested)
        for fold, nested in sorted(summary["nested"].items(), key=lambda kv: int(kv[0]))
    ]
    rows = []
    for name, entry in entries:
        alternative = entry.get("by_convention", {}).get(other, {})
        guard = entry.get("guard", {})
        rows.append(
            [
                name,
                _f(entry["cophenetic_cc"], 2),
                f"{_f(entry['cutoff'], 2)} / {entry['n_clusters']} ({entry.get('n_singletons', '?')}) / "
                f"{_f(entry['silhouette'], 2)}",
                f"{_f(alternative.get('cutoff'), 2)} / {alternative.get('n_clusters', 'n/a')} / "
                f"{_f(alternative.get('silhouette'), 2)}" if alternative else "n/a",
                ", ".join(guard.get("bounded_by", [])) if guard.get("changed") else "-",
                len(entry["selected"]),
            ]
        )
    report.doc.table(
        ["mode", "cophenetic CC", f"'{chosen}' (selects): cut-off / clusters (singletons) / silhouette",
         f"'{other}': cut-off / clusters / silhouette", "guard", "selected"],
        rows,
    )


def _selection_section(report: _Report) -> None:
    """Correlation-cluster feature selection: method, rule, per-fold table and the sweep figure."""
    report.doc.heading("Feature selection (correlation clustering)")
    if report.not_used("select", "Feature selection"):
        return
    summary = json.loads(layout.selection_summary_file(report.run_dir).read_text())
    paper = json.loads(layout.selection_file(report.run_dir, "paper").read_text())
    report.doc.paragraph(
        f"Pearson correlation between feature maps per phase, averaged over phases; {paper['linkage']} linkage on "
        f"1 - |r|; cut-off by the best silhouette; per cluster the feature with the highest |Spearman| with the "
        f"{paper['target']} ground truth. Models use the '{summary['mode']}' selection."
    )
    rule = summary.get("selection_rule", {})
    chosen = rule.get("singleton_silhouette", "zero")
    other = "zero" if chosen != "zero" else "one"
    _selection_rule(report, rule, chosen, other)
    _selection_table(report, summary, chosen, other)
    report.doc.paragraph("Selected (paper mode): " + ", ".join(paper["selected"]))
    figures.selection_figure(
        paper["sweep"], np.array(paper["correlation"], dtype=float), report.path("selection.png"), paper["cutoff"]
    )
    report.figure(
        "selection.png",
        "Silhouette over the cut-off sweep (chosen cut-off dashed) and the "
        "phase-averaged correlation matrix (paper mode).",
        "selection",
    )


def _explain_intro(report: _Report, summary: dict[str, Any]) -> None:
    """The saliency method, its IG settings and convergence, the importance definition and any warnings."""
    config = report.config.explain
    ig = summary.get("ig", {})
    report.doc.paragraph(
        f"{'The study' if config.method == 'study' else 'Original TSR'} temporal saliency on Integrated Gradients "
        f"(captum, {ig.get('integration', 'gausslegendre')} rule, zero baseline on standardised inputs) of "
        f"held-out voxels ({config.voxels_per_class_per_case} defect + {config.voxels_per_class_per_case} "
        f"healthy per test patient). Steps start at {ig.get('n_steps_start', config.n_steps)} and double per "
        f"voxel, up to {ig.get('max_steps', config.n_steps)}, until the completeness error "
        f"|sum IG - (f(x) - f(0))| is at most {ig.get('completeness_tolerance', float('nan')):.0e}: the most "
        f"steps used were {ig.get('n_steps_max_used', 'n/a')}, the largest error left "
        f"{ig.get('max_completeness_error', float('nan')):.2e}"
        f"{'' if ig.get('converged', True) else ' (NOT converged: see the warnings below)'}. Importance: "
        f"{summary.get('importance_definition', 'mean normalised saliency')}"
    )
    if summary.get("warnings"):
        report.doc.paragraph("Explanation warnings:")
        report.doc.bullets(list(summary["warnings"]))


def _saliency_figures(report: _Report, phase_labels: list[str]) -> list[str] | None:
    """The averaged saliency map and the importance bars; returns the features by importance (None: no map)."""
    saliency = read_pooled_saliency(layout.explain_file(report.run_dir, "saliency.h5"))
    ids, pooled = saliency.feature_ids, saliency.pooled_map
    present = ~np.all(np.isnan(pooled), axis=0)
    if not present.any():
        return None
    shown = [i for i in range(len(ids)) if present[i]]
    figures.saliency_figure(
        pooled[:, shown],
        [ids[i] for i in shown],
        report.path("saliency.png"),
        "Averaged temporal saliency map (phases x radiomic sequences)",
        phase_labels=phase_labels,
    )
    report.figure("saliency.png", "Averaged temporal saliency map over held-out voxels of all folds.", "saliency")
    importance = _read_csv(layout.explain_file(report.run_dir, "importance.csv"))
    names = [r["feature_id"] for r in importance]
    values = np.array([float(r["importance"]) for r in importance])
    figures.importance_figure(names, values, report.path("importance.png"), report.config.explain.top_k)
    report.figure(
        "importance.png",
        "Importance per radiomic sequence: its share of the saliency relative to a uniform share (1 = "
        "uniform), pooled over folds with 0 where a fold did not select it.",
        "importance",
    )
    return names


def _trends_figure(report: _Report, names: list[str], phase_labels: list[str]) -> None:
    """Mean +/- SD over the phases of the top-k sequences, defect vs healthy."""
    trends_rows = _read_csv(layout.explain_file(report.run_dir, "trends.csv"))
    trends: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for feature_id in names[: report.config.explain.top_k]:
        for name in ("healthy", "defect"):
            sel = sorted(
                (int(r["phase"]), float(r["mean"]), float(r["sd"]))
                for r in trends_rows
                if r["feature_id"] == feature_id and r["class"] == name
            )
            if sel:
                trends.setdefault(feature_id, {})[name] = (np.array([s[1] for s in sel]), np.array([s[2] for s in sel]))
    if not trends:
        return
    figures.trends_figure(trends, report.path("trends.png"), phase_labels=phase_labels)
    report.figure(
        "trends.png",
        "Key radiomic sequences over the breathing cycle (phases in analysis order, labelled by "
        "breathing state): mean +/- SD in defect vs healthy held-out voxels.",
        "trends",
    )


def _explain_checks(report: _Report, folds: list[dict[str, Any]]) -> None:
    """The model-randomisation and deletion sanity checks of the saliency."""
    randomised = [f["randomisation"] for f in folds if "randomisation" in f]
    if randomised:
        rho = randomised[0]["spearman_trained_vs_random_map"]
        report.doc.paragraph(
            f"Model randomisation check: on the same {randomised[0]['n_voxels']} held-out voxels, the averaged "
            f"map of a freshly initialised model has Spearman {rho:.2f} with the trained model's map; a value "
            f"near 1 would mean the map reflects the input rather than what the model learned."
        )
    deletion = [f for f in folds if "deletion" in f]
    if deletion:
        report.doc.paragraph(
            "Deletion check (zeroing the top sequences vs random ones, AUC drop on the explained voxels): "
            + "; ".join(
                f"fold {f['fold']}: top {_f(f['deletion']['top_k_drop'])} vs random "
                f"{_f(f['deletion']['random_drop_mean'])}"
                for f in deletion
            )
            + "."
        )


def _explain_section(report: _Report, phase_labels: list[str]) -> None:
    """Temporal saliency of the reference model: method, map, importance, trends and sanity checks."""
    report.doc.heading("Temporal saliency of the proposed model")
    if report.not_used("explain", "Temporal saliency"):
        return
    summary = json.loads(layout.explain_file(report.run_dir, "summary.json").read_text())
    _explain_intro(report, summary)
    names = _saliency_figures(report, phase_labels)
    if names is not None:
        _trends_figure(report, names, phase_labels)
    _explain_checks(report, summary["folds"])


def _example_case(report: _Report) -> None:
    """A coronal slice of the reference row's first held-out patient: CT, ground truth, predicted probability."""
    from vent.io.artifacts import read_preprocessed_case
    from vent.io.predictions import prediction_volume, read_prediction

    row = report.reference_row()
    if not row.predictions:
        return
    case = min(row.predictions, key=lambda c: Path(row.predictions[c]).name)  # the first prediction file by name
    prediction = read_prediction(report.run_dir / row.predictions[case])
    pre = read_preprocessed_case(layout.case_file(report.run_dir, "preprocess", case))
    volume = prediction_volume(prediction.probability, prediction.coords_zyx, pre.grid)
    figures.case_slices_figure(
        pre.ct_tzyx[0],
        pre.defect_zyx,
        volume,
        pre.lung_mask_zyx,
        report.path("example_case.png"),
        f"{case}: held-out prediction of {get_spec(row.model).label}",
    )
    report.figure(
        "example_case.png", f"{case}, coronal slice: CT, ground truth and predicted probability.", "example case"
    )


def _closing_sections(report: _Report) -> None:
    """The per-patient metrics and the provenance (versions from the evaluate stage's manifest)."""
    report.doc.heading("Per-patient metrics")
    report.doc.table(per_patient_table(report.evaluation.per_patient))
    report.doc.heading("Provenance")
    manifest = read_manifest(layout.stage_dir(report.run_dir, "evaluate")) or {}
    versions = manifest.get("provenance", {}).get("versions", {})
    report.doc.paragraph(
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f". Config: {report.config.source}. Every number above is read from this run's artifacts in "
        f"{report.run_dir}."
    )


def _write_documents(report: _Report) -> None:
    formats = report.config.report.formats
    if "md" in formats:
        write_text(report.path("report.md"), report.doc.to_markdown(layout.stage_dir(report.run_dir, "report")))
        report.outputs["report.md"] = "report (Markdown)"
    if "html" in formats:
        write_text(report.path("report.html"), report.doc.to_html())
        report.outputs["report.html"] = "report (HTML)"


class ReportStage(Stage):
    name = "report"
    needs = ("preprocess", "radiomics", "select", "evaluate", "explain")
    version = "2"

    def needs_for(self, config: Any) -> tuple[str, ...]:
        """preprocess and evaluate, plus radiomics, select and explain when the config uses them."""
        unused = unused_stages(config)
        return tuple(stage for stage in self.needs if stage not in unused)

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        cohort = _read_csv(layout.cohort_file(ctx.run_dir))
        cases = [row["case"] for row in cohort]
        report = _Report(
            ctx=ctx,
            doc=Document("vent report: ventilation defects from 4DCT radiomic sequences"),
            evaluation=read_evaluation(ctx.run_dir),
            unused=unused_stages(ctx.config),
            pre_attrs={case: read_attrs(layout.case_file(ctx.run_dir, "preprocess", case)) for case in cases},
        )
        phase_labels = phase_state_labels(report.pre_attrs)
        _write_tables(report)
        _data_paragraph(report, len(cohort), cohort[0]["n_phases"])
        _phase_section(report, phase_labels)
        _empty_kernel_section(report, cases)
        _table2_section(report)
        _vampire_section(report)
        _roc_section(report)
        _selection_section(report)
        _explain_section(report, phase_labels)
        _example_case(report)
        _closing_sections(report)
        _write_documents(report)
        row = report.reference_row()
        reference = next(r for r in report.evaluation.table2 if r["model"] == row.row)
        ctx.echo(
            f"[report] {get_spec(row.model).label}: Dice {_f(reference['dice_mean'])}, "
            f"AUC {_f(reference['auc_mean'])} over {reference['n_patients']} patients"
        )
        return report.outputs
