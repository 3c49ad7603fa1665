"""Stage ``report``: the study's tables and figures, regenerated from the artifacts of the other stages.

Reads: ``preprocess/cohort.csv`` and one case file, ``select/*.json``, ``train/per_patient_metrics.csv`` and
``train/predictions``, ``explain/*``. Writes ``report/``:

- ``table2.csv`` (model, n_patients, and for dice, auc, sensitivity, accuracy the ``_mean``, ``_min``, ``_max``,
  ``_p`` columns; p = two-sided Wilcoxon signed-rank over patients against the reference model) and ``table2.md``;
- ``per_patient_metrics.csv`` (model, case, fold, dice, auc, sensitivity, accuracy);
- figures: ``roc.png`` (Fig. 10), ``saliency.png``, ``importance.png``, ``trends.png``, ``selection.png``,
  ``example_case.png``;
- ``report.md`` and ``report.html`` (self-contained).

Config: ``report``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vent.errors import ArtifactError
from vent.io.artifacts import read_attrs, string_list
from vent.io.atomic import write_text
from vent.report import figures
from vent.report.render import Document
from vent.report.tables import METRICS, table2_markdown, table2_rows
from vent.runner import RunContext, StagePlan, read_manifest
from vent.stages.base import Stage
from vent.stages.train import threshold_note

__all__ = ["ReportStage"]

log = logging.getLogger(__name__)

MODEL_LABELS = {
    "lstm": "LSTM on radiomic sequences",
    "bilstm": "BiLSTM on radiomic sequences",
    "transformer": "Transformer on radiomic sequences",
    "lstm_raw": "LSTM on raw 4DCT",
}


def _row_label(run: dict[str, Any], mode: str) -> str:
    """A Table 2 row name: the model, and the selection mode when it is not the run's main one."""
    from vent.baselines import BASELINE_LABELS

    label = {**MODEL_LABELS, **BASELINE_LABELS}.get(run["model"], run["model"])
    if run["selection"] not in ("none", mode):
        label += f" [{run['selection']}-mode selection" + (
            ", leaks test labels]" if run["selection"] == "paper" else "]"
        )
    return label


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


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; run the stage that writes it")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: (f"{v:.6g}" if isinstance(v, float) and not math.isnan(v) else ("" if isinstance(v, float) else v))
                for k, v in row.items()
            }
        )
    return buffer.getvalue()


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


class ReportStage(Stage):
    name = "report"
    needs = ("preprocess", "select", "train", "explain")
    version = "1"

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        from vent.metrics import pooled_roc

        config = ctx.config
        out = ctx.stage_dir(self.name)
        run_dir = ctx.run_dir
        reference = config.train.reference_model
        runs = json.loads((run_dir / "train" / "runs.json").read_text())
        models = [run["row"] for run in runs]
        labels = {run["row"]: _row_label(run, config.select.mode) for run in runs}

        per_patient = [
            {**row, "fold": int(row["fold"]), **{m: float(row[m]) for m in METRICS}}
            for row in _read_csv(run_dir / "train" / "per_patient_metrics.csv")
        ]
        write_text(out / "per_patient_metrics.csv", _csv_text(per_patient, ["model", "case", "fold", *METRICS]))
        rows = table2_rows(per_patient, reference, models)
        columns = ["model", "n_patients"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "min", "max", "p")]
        write_text(out / "table2.csv", _csv_text(rows, columns))
        table_md = table2_markdown(rows, reference, config.report.alpha, labels)
        write_text(out / "table2.md", table_md)

        doc = Document("vent report: ventilation defects from 4DCT radiomic sequences")
        cohort = _read_csv(run_dir / "preprocess" / "cohort.csv")
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
        doc.paragraph(
            f"Data: {source}; {len(cohort)} patients, {cohort[0]['n_phases']} phases, resampled to "
            f"{'x'.join(f'{s:g}' for s in config.preprocess.spacing_mm)} mm. Ground truth: iterative +/-"
            f"{gt.outlier_sd:g} SD outlier clipping of the RefVI (until the threshold moves < {gt.tolerance:.0%}), "
            f"then the lowest {gt.fraction:.0%} by {reading}"
            f"{', after a 3x3x3 median filter' if gt.median_filter else ''}."
        )
        if config.data.exclude:
            doc.bullets([f"excluded {case}: {reason}" for case, reason in config.data.exclude.items()])
        radiomics_attrs = {
            row["case"]: read_attrs(ctx.case_file("radiomics", row["case"])) for row in cohort
        }
        phase_labels = phase_state_labels(radiomics_attrs)
        self._data_section(ctx, doc, cohort, radiomics_attrs, phase_labels)

        doc.heading("Table 2: defect prediction, per-patient mean (min-max)")
        doc.paragraph(
            f"Held-out patients of {config.cv.n_folds}-fold cross-validation split by patient (the same folds for "
            f"every model). * = two-sided Wilcoxon signed-rank test over patients against the proposed model, "
            f"p < {config.report.alpha:g}. Features selected in '{config.select.mode}' mode. "
            + threshold_note(run_dir)
        )
        header = ["Model", "n", "Dice", "AUC-ROC", "Sensitivity", "Accuracy"]
        table_lines = [line for line in table_md.strip().splitlines()[2:]]
        doc.table(header, [[c.strip() for c in line.strip("|").split("|")] for line in table_lines])
        n_patients = min((r["n_patients"] for r in rows), default=0)
        if n_patients and 2.0 / 2**n_patients >= config.report.alpha:
            doc.paragraph(
                f"Note: with {n_patients} patients the smallest possible two-sided Wilcoxon p-value is "
                f"{2.0 / 2**n_patients:.3g}, so no difference can be marked at p < {config.report.alpha:g}; the "
                f"p-values are still reported."
            )
        p_rows = [[labels[r["model"]]] + [_f(r[f"{m}_p"], 4) for m in METRICS] for r in rows if r["model"] != reference]
        if p_rows:
            doc.paragraph("Wilcoxon p-values against the proposed model:")
            doc.table(["Model", *[m for m in METRICS]], p_rows)

        curves = {}
        for model in models:
            truths, scores = [], []
            for path in sorted((run_dir / "train" / "predictions" / model).glob("*.h5")):
                with h5py.File(path, "r") as handle:
                    truths.append(handle["labels"][...])
                    scores.append(handle["probability"][...])
            if truths:
                curves[model] = pooled_roc(truths, scores)
        outputs: dict[str, Any] = {
            "table2.csv": "Table 2",
            "table2.md": "Table 2 (Markdown)",
            "per_patient_metrics.csv": "per-patient metrics",
        }
        if curves:
            figures.roc_figure(curves, out / "roc.png", reference)
            doc.image(out / "roc.png", "Fig. 10: ROC curves of held-out voxels pooled over patients, per model.")
            outputs["roc.png"] = "ROC"

        self._selection_section(ctx, doc, out, outputs)
        self._explain_section(ctx, doc, out, outputs, phase_labels)
        self._example_case(ctx, doc, out, outputs, reference)

        doc.heading("Per-patient metrics")
        doc.table(
            ["model", "case", "fold", *METRICS],
            [[r["model"], r["case"], r["fold"], *[_f(r[m]) for m in METRICS]] for r in per_patient],
        )
        doc.heading("Provenance")
        manifest = read_manifest(run_dir / "train") or {}
        versions = manifest.get("provenance", {}).get("versions", {})
        doc.paragraph(
            "Versions: "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
            + f". Config: {config.source}. Every number above is read from this run's artifacts in {run_dir}."
        )
        if "md" in config.report.formats:
            write_text(out / "report.md", doc.to_markdown(out))
            outputs["report.md"] = "report (Markdown)"
        if "html" in config.report.formats:
            write_text(out / "report.html", doc.to_html())
            outputs["report.html"] = "report (HTML)"
        reference_row = next(r for r in rows if r["model"] == reference)
        ctx.echo(
            f"[report] {MODEL_LABELS.get(reference, reference)}: Dice {_f(reference_row['dice_mean'])}, "
            f"AUC {_f(reference_row['auc_mean'])} over {reference_row['n_patients']} patients"
        )
        return outputs

    def _data_section(
        self,
        ctx: RunContext,
        doc: Document,
        cohort: list[dict[str, str]],
        radiomics_attrs: dict[str, dict],
        phase_labels: list[str],
    ) -> None:
        """Phase order, ground-truth checks and the empty-kernel policy's counts, per patient."""
        config = ctx.config
        pre_attrs = {row["case"]: read_attrs(ctx.case_file("preprocess", row["case"])) for row in cohort}
        doc.heading("Data: phase order, ground truth and lung-edge handling")
        doc.paragraph(
            f"Phase order: '{config.data.phase_order}'"
            + (" (rotated so that the smallest lung, maximum exhalation, comes first)."
               if config.data.phase_order == "from_max_exhale" else " (the files' order).")
            + f" Phases in the figures: {', '.join(phase_labels)}. RefVI resampling: "
            f"'{config.preprocess.ground_truth.refvi_interpolation}'"
            + (" (normalised over RefVI lung voxels, no interpolation rim)."
               if config.preprocess.ground_truth.refvi_interpolation == "masked" else " (plain linear, 0 outside).")
        )
        not_converged = [c for c, a in pre_attrs.items() if a.get("gt_clip_converged") is False]
        if not_converged:
            doc.paragraph(
                "Warning: the ground-truth outlier clipping stopped at preprocess.ground_truth.max_iterations="
                f"{config.preprocess.ground_truth.max_iterations} before converging for: {', '.join(not_converged)}."
            )
        radiomics = config.radiomics
        policy = radiomics.empty_kernel
        doc.paragraph(
            f"Kernels bounded by the {'phase' if radiomics.kernel_mask == 'phase' else 'analysis'} lung mask. A lung "
            f"voxel whose kernel holds no lung voxel at a phase (or leaves a feature undefined) is handled by "
            f"radiomics.empty_kernel = '{policy}' ("
            + {
                "analysis_mask": "recomputed with the phase | analysis-mask kernel, the rest carried from the "
                "nearest phase",
                "nearest_phase": "carried from the nearest phase with a defined kernel",
                "drop": "left out of the analysis",
            }[policy]
            + "). Voxel-phases touched, per patient:"
        )
        rows = []
        for row in cohort:
            case = row["case"]
            counts = json.loads(radiomics_attrs[case].get("empty_kernel", "{}") or "{}")
            order = pre_attrs[case].get("phase_order", [])
            rows.append(
                [
                    case,
                    " ".join(str(v) for v in order),
                    int(pre_attrs[case]["n_lung_voxels"]),
                    sum(counts.get("empty_voxel_phases", [])),
                    sum(counts.get("undefined_voxel_phases", [])),
                    sum(counts.get("recomputed_voxel_phases", [])),
                    sum(counts.get("carried_voxel_phases", [])),
                    counts.get("dropped_voxels", 0),
                    int(pre_attrs[case].get("n_lung_without_refvi", 0)),
                ]
            )
        doc.table(
            ["case", "file phases (analysis order)", "lung voxels", "empty kernels", "undefined features",
             "recomputed", "carried", "voxels dropped", "voxels without RefVI"],
            rows,
        )

    def _selection_section(self, ctx: RunContext, doc: Document, out: Path, outputs: dict[str, Any]) -> None:
        select_dir = ctx.run_dir / "select"
        summary = json.loads((select_dir / "summary.json").read_text())
        paper = json.loads((select_dir / "paper.json").read_text())
        doc.heading("Feature selection (correlation clustering)")
        doc.paragraph(
            f"Pearson correlation between feature maps per phase, averaged over phases; {paper['linkage']} linkage on "
            f"1 - |r|; cut-off by the best silhouette; per cluster the feature with the highest |Spearman| with the "
            f"{paper['target']} ground truth. Models use the '{summary['mode']}' selection."
        )
        rule = summary.get("selection_rule", {})
        chosen = rule.get("singleton_silhouette", "zero")
        other = "zero" if chosen != "zero" else "one"
        entries = [("paper (all patients; leaks test labels)", summary["paper"])] + [
            (f"nested, fold {fold} (training patients only)", nested)
            for fold, nested in sorted(summary["nested"].items(), key=lambda kv: int(kv[0]))
        ]
        if rule:
            doc.paragraph(
                f"Silhouette of a singleton cluster: '{chosen}' selects ("
                + {"zero": "Rousseeuw 1987 / scikit-learn: 0", "one": "MATLAB's silhouette: 1",
                   "exclude": "singletons left out of the mean"}[chosen]
                + f"); the '{other}' convention is shown beside it. Eligible cuts give between select.min_clusters "
                f"= {rule.get('min_clusters')} and select.max_clusters = {rule.get('max_clusters')} clusters "
                f"(fractions of the non-constant features){'' if rule.get('max_cutoff') is None else ', cut-off <= '}"
                f"{'' if rule.get('max_cutoff') is None else rule.get('max_cutoff')}; 'guard' names the bound that "
                "changed the best-silhouette cut. The study reports cut-off 0.02, 38 clusters, silhouette 0.79."
            )
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
        doc.table(
            ["mode", "cophenetic CC", f"'{chosen}' (selects): cut-off / clusters (singletons) / silhouette",
             f"'{other}': cut-off / clusters / silhouette", "guard", "selected"],
            rows,
        )
        doc.paragraph("Selected (paper mode): " + ", ".join(paper["selected"]))
        figures.selection_figure(
            paper["sweep"], np.array(paper["correlation"], dtype=float), out / "selection.png", paper["cutoff"]
        )
        doc.image(
            out / "selection.png",
            "Silhouette over the cut-off sweep (chosen cut-off dashed) and the "
            "phase-averaged correlation matrix (paper mode).",
        )
        outputs["selection.png"] = "selection"

    def _explain_section(
        self, ctx: RunContext, doc: Document, out: Path, outputs: dict[str, Any], phase_labels: list[str]
    ) -> None:
        explain_dir = ctx.run_dir / "explain"
        config = ctx.config.explain
        with h5py.File(explain_dir / "saliency.h5", "r") as handle:
            ids = string_list(handle.attrs["feature_ids"])
            pooled = handle["pooled_map"][...]
        present = ~np.all(np.isnan(pooled), axis=0)
        summary = json.loads((explain_dir / "summary.json").read_text())
        doc.heading("Temporal saliency of the proposed model")
        ig = summary.get("ig", {})
        doc.paragraph(
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
            doc.paragraph("Explanation warnings:")
            doc.bullets(list(summary["warnings"]))
        if present.any():
            shown = [i for i in range(len(ids)) if present[i]]
            figures.saliency_figure(
                pooled[:, shown],
                [ids[i] for i in shown],
                out / "saliency.png",
                "Averaged temporal saliency map (phases x radiomic sequences)",
                phase_labels=phase_labels,
            )
            doc.image(out / "saliency.png", "Averaged temporal saliency map over held-out voxels of all folds.")
            importance = _read_csv(explain_dir / "importance.csv")
            values = np.array([float(r["importance"]) for r in importance])
            names = [r["feature_id"] for r in importance]
            figures.importance_figure(names, values, out / "importance.png", config.top_k)
            doc.image(
                out / "importance.png",
                "Importance per radiomic sequence: its share of the saliency relative to a uniform share (1 = "
                "uniform), pooled over folds with 0 where a fold did not select it.",
            )
            outputs.update({"saliency.png": "saliency", "importance.png": "importance"})
            trends_rows = _read_csv(explain_dir / "trends.csv")
            trends: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
            for feature_id in names[: config.top_k]:
                for name in ("healthy", "defect"):
                    sel = sorted(
                        (int(r["phase"]), float(r["mean"]), float(r["sd"]))
                        for r in trends_rows
                        if r["feature_id"] == feature_id and r["class"] == name
                    )
                    if sel:
                        trends.setdefault(feature_id, {})[name] = (
                            np.array([s[1] for s in sel]),
                            np.array([s[2] for s in sel]),
                        )
            if trends:
                figures.trends_figure(trends, out / "trends.png", phase_labels=phase_labels)
                doc.image(
                    out / "trends.png",
                    "Key radiomic sequences over the breathing cycle (phases in analysis order, labelled by "
                    "breathing state): mean +/- SD in defect vs healthy held-out voxels.",
                )
                outputs["trends.png"] = "trends"
        randomised = [f["randomisation"] for f in summary["folds"] if "randomisation" in f]
        if randomised:
            rho = randomised[0]["spearman_trained_vs_random_map"]
            doc.paragraph(
                f"Model randomisation check: on the same {randomised[0]['n_voxels']} held-out voxels, the averaged "
                f"map of a freshly initialised model has Spearman {rho:.2f} with the trained model's map; a value "
                f"near 1 would mean the map reflects the input rather than what the model learned."
            )
        deletion = [f["deletion"] for f in summary["folds"] if "deletion" in f]
        if deletion:
            doc.paragraph(
                "Deletion check (zeroing the top sequences vs random ones, AUC drop on the explained voxels): "
                + "; ".join(
                    f"fold {f['fold']}: top {_f(f['deletion']['top_k_drop'])} vs random "
                    f"{_f(f['deletion']['random_drop_mean'])}"
                    for f in summary["folds"]
                    if "deletion" in f
                )
                + "."
            )

    def _example_case(self, ctx: RunContext, doc: Document, out: Path, outputs: dict[str, Any], model: str) -> None:
        from vent.io.artifacts import read_preprocessed_case

        predictions = sorted((ctx.run_dir / "train" / "predictions" / model).glob("*.h5"))
        if not predictions:
            return
        case = predictions[0].stem
        pre = read_preprocessed_case(ctx.case_file("preprocess", case))
        with h5py.File(predictions[0], "r") as handle:
            coords, probability = handle["coords"][...], handle["probability"][...]
        volume = np.full(pre.lung_mask_zyx.shape, np.nan, dtype=np.float32)
        volume[tuple(coords.T)] = probability
        figures.case_slices_figure(
            pre.ct_tzyx[0],
            pre.defect_zyx,
            volume,
            pre.lung_mask_zyx,
            out / "example_case.png",
            f"{case}: held-out prediction of {MODEL_LABELS.get(model, model)}",
        )
        doc.image(out / "example_case.png", f"{case}, coronal slice: CT, ground truth and predicted probability.")
        outputs["example_case.png"] = "example case"
