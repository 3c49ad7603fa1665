"""Report section on the temporal saliency of the proposed model: the method and its IG settings, Fig. 11 (the
averaged map per class), Fig. 12 (the importance histogram with the key-sequence rule drawn), the importance ranking,
Fig. 13 (the key sequences over the breathing cycle with 95% confidence bands over patients) and the explanation
checks (completeness, model randomisation, deletion curve). Reads ``explain/*`` (written by the explain stage)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from vent.io import layout
from vent.io.artifacts import read_csv_rows
from vent.io.saliency import read_pooled_saliency
from vent.report import figures
from vent.stages.report.context import ReportBuild, fmt

__all__ = ["explain_section", "COHORT_NAMES"]

COHORT_NAMES = {"pet": "Galligas PET cohort", "spect": "DTPA-SPECT cohort"}
"""How the figures name a synthetic cohort by its modality (``data.synthetic.modality``)."""


def _cohort_name(report: ReportBuild) -> str:
    """``report.cohort_name``; else the synthetic cohort's modality; else the data folder's name."""
    data = report.config.data
    if report.config.report.cohort_name:
        return report.config.report.cohort_name
    if data.synthetic:
        return f"synthetic {COHORT_NAMES.get(data.synthetic.modality, data.synthetic.modality + ' cohort')}"
    return f"{data.root.name} cohort"


def _explain_intro(report: ReportBuild, summary: dict[str, Any]) -> None:
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


def _key_sequences(report: ReportBuild, names: list[str], values: np.ndarray) -> Any:
    """The key sequences by ``report.key_sequences`` (``vent.explain.key_sequences``), and Fig. 12 showing the rule."""
    from vent.explain.key_sequences import pick_key_sequences
    from vent.report.explain_figures import importance_histogram_figure

    rule = report.config.report.key_sequences
    key = pick_key_sequences(values, rule=rule.rule, top_k=rule.top_k, min_count=rule.min_count,
                             max_share=rule.max_share)
    importance_histogram_figure(values, names, key, report.path("fig12_importance_histogram.png"))
    report.figure(
        "fig12_importance_histogram.png",
        f"Fig. 12: histogram of the importance scores of the {len(names)} radiomic sequences (importance 1 = a "
        f"uniform share of the saliency), with the rule that picks the key sequences drawn (report.key_sequences."
        f"rule = '{key.rule}'). {key.description} Picked: {', '.join(names[i] for i in key.picked) or 'none'}.",
        "Fig. 12",
    )
    figures.importance_figure(names, values, report.path("importance.png"), max(1, len(key.picked)))
    report.figure(
        "importance.png",
        "Importance per radiomic sequence, ranked (the key sequences in red): its share of the saliency relative to "
        "a uniform share (1 = uniform), pooled over folds with 0 where a fold did not select it.",
        "importance ranking",
    )
    return key


def _class_maps(report: ReportBuild) -> None:
    """Fig. 11: the averaged map of all, defect and healthy held-out voxels (sequences ordered by importance)."""
    from vent.report.explain_figures import class_saliency_figure

    saliency = read_pooled_saliency(layout.explain_file(report.run_dir, "saliency.h5"))
    present = ~np.all(np.isnan(saliency.pooled_map), axis=0)
    if not present.any():
        return
    shown = [i for i in range(len(saliency.feature_ids)) if present[i]]
    maps = {"all": saliency.pooled_map[:, shown]}
    maps.update({name: values[:, shown] for name, values in saliency.class_maps.items()})
    ids = [saliency.feature_ids[i] for i in shown]
    class_saliency_figure(maps, ids, report.path("fig11_saliency_by_class.png"), _cohort_name(report),
                          phase_labels=report.phase_labels)
    report.figure(
        "fig11_saliency_by_class.png",
        f"Fig. 11: averaged temporal saliency maps (phases labelled by breathing state x radiomic sequences, ordered "
        f"by importance) of the proposed model over held-out voxels of every fold, {_cohort_name(report)}: all "
        "explained voxels, ground-truth defect voxels and healthy voxels. Each voxel's map is normalised to sum 1 "
        "before averaging, then rescaled so that 1 = a uniform share of a fold's cells; grey = no fold selected it.",
        "Fig. 11",
    )


def _trend_bands(report: ReportBuild, key_names: list[str]) -> None:
    """Fig. 13: the key sequences over the breathing cycle, defect vs healthy, 95% confidence bands over patients."""
    from vent.report.explain_figures import trend_bands_figure

    rows = read_csv_rows(layout.explain_file(report.run_dir, "trend_bands.csv"), "explain")
    bands: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    n_patients = 0
    for feature_id in key_names:
        for name in ("defect", "healthy"):
            sel = sorted((int(r["phase"]), r) for r in rows if r["feature_id"] == feature_id and r["class"] == name)
            if not sel:
                continue
            n_patients = max(n_patients, max(int(r["n_patients"]) for _, r in sel))
            bands.setdefault(feature_id, {})[name] = tuple(
                np.array([float(r[column]) for _, r in sel]) for column in ("mean", "ci_low", "ci_high")
            )
    if not bands:
        return
    trend_bands_figure(bands, report.path("fig13_key_sequences.png"), report.phase_labels, n_patients)
    report.figure(
        "fig13_key_sequences.png",
        "Fig. 13: the key radiomic sequences over the breathing cycle (phases in analysis order, labelled by "
        f"breathing state), raw feature values of held-out defect vs healthy voxels: line = mean over the {n_patients} "
        "patients of each patient's mean, band = 95% Student-t confidence interval over patients (voxels of one "
        "patient are correlated, so patients, not voxels, are the units).",
        "Fig. 13",
    )


def _checks(report: ReportBuild, folds: list[dict[str, Any]]) -> None:
    """The explanation checks: completeness per fold, model randomisation and the deletion curve."""
    from vent.report.explain_figures import deletion_curve_figure

    doc = report.doc
    doc.heading("Explanation checks", level=3)
    doc.paragraph("Completeness of Integrated Gradients per fold: |sum IG - (f(x) - f(0))| over the explained voxels "
                  "(probability units).")
    doc.table(["fold", "voxels", "most steps", "mean error", "95th pct. error", "largest error", "above tolerance"], [
        [f["fold"], f["n_voxels"], max(map(int, f["convergence"]["steps_used"])), f"{f['delta']['mean_abs']:.2e}",
         f"{f['delta']['p95_abs']:.2e}", f"{f['delta']['max_abs']:.2e}", f["delta"].get("n_above_tolerance", "n/a")]
        for f in folds
    ])
    randomised = [f["randomisation"] for f in folds if "randomisation" in f]
    if randomised:
        rho = randomised[0]["spearman_trained_vs_random_map"]
        doc.paragraph(
            f"Model randomisation (Adebayo et al. 2018): on the same {randomised[0]['n_voxels']} held-out voxels, the "
            f"averaged map of a freshly initialised model has Spearman {rho:.2f} with the trained model's map; a value "
            "near 1 would mean the map reflects the input rather than what the model learned."
        )
    deletion = [f for f in folds if "deletion" in f]
    if deletion:
        doc.paragraph(
            "Deletion (zeroing the top sequences vs random ones, AUC drop on the explained voxels): "
            + "; ".join(f"fold {f['fold']}: top {f['deletion']['k']} {fmt(f['deletion']['top_k_drop'])} vs random "
                        f"{fmt(f['deletion']['random_drop_mean'])}" for f in deletion) + "."
        )
    curves = [dict(f["deletion_curve"], fold=f["fold"]) for f in folds if "deletion_curve" in f]
    if curves:
        deletion_curve_figure(curves, report.path("deletion_curve.png"))
        report.figure(
            "deletion_curve.png",
            "Deletion curve per fold: AUC of the explained held-out voxels after zeroing the k most important "
            "sequences (solid), against zeroing k random ones (mean and 5-95 percentile band). A believable "
            "ranking falls below the random band.",
            "deletion curve",
        )


def explain_section(report: ReportBuild) -> None:
    """Temporal saliency of the reference model: method, Figs. 11-13, importance and the explanation checks."""
    report.doc.heading("Temporal saliency of the proposed model")
    if report.not_used("explain", "Temporal saliency"):
        return
    summary = json.loads(layout.explain_file(report.run_dir, "summary.json").read_text())
    _explain_intro(report, summary)
    importance = read_csv_rows(layout.explain_file(report.run_dir, "importance.csv"), "explain")
    if importance:
        names = [r["feature_id"] for r in importance]
        values = np.array([float(r["importance"]) for r in importance])
        _class_maps(report)
        key = _key_sequences(report, names, values)
        _trend_bands(report, [names[i] for i in key.picked])
    _checks(report, summary["folds"])
