"""Report section on the correlation-cluster feature selection: the rule, per selection the cophenetic CC, cut-off,
silhouette and clusters, the chosen features by name with their clusters, Fig. 3 (the correlation heatmap ordered
by the dendrogram) and the cut-off sweep. Reads ``select/*.json`` (written by the select stage)."""

from __future__ import annotations

import json
from typing import Any

from vent.errors import ArtifactError, DataError
from vent.io import layout
from vent.report import figures
from vent.stages.report.context import ReportBuild, fmt

__all__ = ["selection_section"]

_SINGLETON_CONVENTIONS = {
    "zero": "Rousseeuw 1987 / scikit-learn: 0",
    "one": "MATLAB's silhouette: 1",
    "exclude": "singletons left out of the mean",
}


def _selection_rule(report: ReportBuild, rule: dict[str, Any], chosen: str, other: str) -> None:
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


def _selection_table(report: ReportBuild, summary: dict[str, Any], chosen: str, other: str) -> None:
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
                fmt(entry["cophenetic_cc"], 2),
                f"{fmt(entry['cutoff'], 2)} / {entry['n_clusters']} ({entry.get('n_singletons', '?')}) / "
                f"{fmt(entry['silhouette'], 2)}",
                f"{fmt(alternative.get('cutoff'), 2)} / {alternative.get('n_clusters', 'n/a')} / "
                f"{fmt(alternative.get('silhouette'), 2)}" if alternative else "n/a",
                ", ".join(guard.get("bounded_by", [])) if guard.get("changed") else "-",
                len(entry["selected"]),
            ]
        )
    report.doc.table(
        ["mode", "cophenetic CC", f"'{chosen}' (selects): cut-off / clusters (singletons) / silhouette",
         f"'{other}': cut-off / clusters / silhouette", "guard", "selected"],
        rows,
    )


def _chosen_features(report: ReportBuild, paper: dict[str, Any]) -> None:
    """The chosen representative of every cluster by name, with |Spearman| and the cluster's other members."""
    spearman = paper.get("spearman", {})
    rows = []
    for members in paper["clusters"].values():
        chosen = next((m for m in members if m in paper["selected"]), None)
        if chosen is None:
            continue
        others = [m for m in members if m != chosen]
        rows.append([chosen, fmt(abs(spearman[chosen]), 3) if chosen in spearman else "n/a", len(members),
                     ", ".join(others) or "-"])
    rows.sort(key=lambda r: r[0])
    report.doc.paragraph(
        f"Chosen features (paper mode, {len(paper['selected'])}): per cluster the member with the highest "
        f"|Spearman| with the {paper['target']} ground truth."
    )
    report.doc.table(["chosen feature", "|Spearman|", "cluster size", "other members of its cluster"], rows)


def _figure3(report: ReportBuild, paper: dict[str, Any]) -> None:
    """Fig. 3: the averaged correlation heatmap ordered by the clustering's dendrogram (scipy leaf order)."""
    from vent.report.selection_figures import correlation_dendrogram_figure, selection_dendrogram_inputs

    try:
        correlation, linkage_matrix, ids = selection_dendrogram_inputs(paper)
    except DataError as error:
        raise ArtifactError(f"{layout.selection_file(report.run_dir, 'paper')}: {error}") from error
    correlation_dendrogram_figure(correlation, linkage_matrix, ids, report.path("fig3_correlation_dendrogram.png"),
                                  paper["cutoff"], paper["selected"])
    report.figure(
        "fig3_correlation_dendrogram.png",
        f"Fig. 3: Pearson correlation between the radiomic feature maps, averaged over phases (paper mode, "
        f"{paper['n_voxels']} lung voxels of {len(paper['cases'])} patients), rows and columns in the order of the "
        f"{paper['linkage']}-linkage dendrogram on 1 - |r|; dashed: the cut-off {paper['cutoff']:g}; chosen features "
        "marked.",
        "Fig. 3",
    )


def selection_section(report: ReportBuild) -> None:
    """Correlation-cluster feature selection: method, rule, per-fold table, chosen features, Fig. 3 and the sweep."""
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
    _chosen_features(report, paper)
    _figure3(report, paper)
    figures.selection_figure(paper["sweep"], report.path("selection.png"), paper["cutoff"])
    report.figure(
        "selection.png",
        "Silhouette over the cut-off sweep (chosen cut-off dashed; grey: outside the guard band) and the number of "
        "clusters per cut-off (paper mode).",
        "selection sweep",
    )
