"""Stage ``select``: correlation-cluster feature selection, in both modes, on the split stage's folds.

Reads: ``radiomics/<case>.h5`` and ``split/splits.json``. Writes:

- ``select/paper.json``: selection on all patients, as the study published it (its labels leak into test folds);
- ``select/nested_fold<k>.json``: selection from fold k's training and validation patients only (no leakage).
  Each selection file (``SelectionResult.to_dict``) holds ``selected``, ``n_selected``, ``feature_ids`` (all F, file
  order), ``clusters``, the clustering summary below, ``sweep``, ``spearman``, ``correlation`` (F x F Pearson r
  averaged over phases, rows and columns in ``feature_ids`` order; a constant feature's row and column are 0),
  ``linkage_matrix`` (the scipy linkage matrix Z that was cut, (F_c - 1) x 4: merged clusters, distance 1 - |r|,
  size) and ``linkage_feature_ids`` (the F_c features that entered the clustering, i.e. ``feature_ids`` less
  ``constant_features`` in the same order; Z's leaf i is ``linkage_feature_ids[i]``), ``constant_features``,
  ``partly_constant_features``, ``cases``, ``n_voxels``, ``n_sampled``, ``target``, ``linkage``, ``seed``;
- ``select/summary.json``: which mode feeds the models and, for paper mode and each nested fold, the selected ids
  and the clustering: ``cophenetic_cc``, ``cutoff``, ``silhouette``, ``n_clusters``, ``n_singletons`` (the chosen
  cut), ``singleton_silhouette`` (the convention that selected), ``silhouette_by_convention`` (every convention's
  score at the chosen cut), ``by_convention`` (the cut each convention would select: cutoff, n_clusters,
  n_singletons, silhouette, selected) and ``guard`` (min_clusters, max_clusters, max_cutoff, unguarded best, changed,
  bounded_by). Top level: ``selection_rule`` (the settings that drive the choice).

Config: ``select`` and ``cv`` (its ``seed`` samples the voxels; recorded in the manifest).
"""

from __future__ import annotations

import logging
from typing import Any

from vent.io import layout
from vent.io.atomic import write_json
from vent.models.registry import needed_stages
from vent.runner import RunContext, StagePlan
from vent.stages.base import Stage, upstream_cases
from vent.stages.split import read_splits

__all__ = ["SelectStage"]

log = logging.getLogger(__name__)


class SelectStage(Stage):
    name = "select"
    sections = ("cv",)  # it samples voxels with cv.seed: the manifest records the seed it used
    needs = ("split", "radiomics")
    version = "4"  # 4: selection files carry the dendrogram (linkage_matrix, linkage_feature_ids)

    def unused_reason(self, config: Any) -> str | None:
        if "select" in needed_stages(config.train.models):
            return None
        return f"no method in train.models reads selected radiomic features ({', '.join(config.train.models)})"

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        from vent.selection import select_features

        cases = sorted(upstream_cases(ctx, "radiomics"))
        settings = ctx.config.select
        folds = read_splits(ctx.run_dir, cases)
        files = {case: ctx.case_file("radiomics", case) for case in cases}
        options = dict(
            linkage=settings.linkage,
            cutoffs=settings.cutoffs,
            singleton=settings.singleton_silhouette,
            min_clusters=settings.min_clusters,
            max_clusters=settings.max_clusters,
            max_cutoff=settings.max_cutoff,
            max_voxels_per_case=settings.max_voxels_per_case,
            target=settings.target,
            seed=ctx.config.cv.seed,
        )
        outputs: dict[str, Any] = {}
        summary: dict[str, Any] = {
            "mode": settings.mode,
            "selection_rule": {
                "singleton_silhouette": settings.singleton_silhouette,
                "min_clusters": settings.min_clusters,
                "max_clusters": settings.max_clusters,
                "max_cutoff": settings.max_cutoff,
                "linkage": settings.linkage,
            },
            "paper": None,
            "nested": {},
        }
        with ctx.progress.task("select (paper + nested folds)", total=len(folds) + 1) as bar:
            paper = select_features([files[c] for c in cases], **options)
            write_json(layout.selection_file(ctx.run_dir, "paper"), paper.to_dict())
            outputs["paper.json"] = "selection on all patients (as published; leaks test labels)"
            summary["paper"] = {"selected": paper.selected, **paper.clustering_summary()}
            bar.advance(1)
            for fold in folds:
                training = sorted(fold.train + fold.val)
                nested = select_features([files[c] for c in training], **options)
                write_json(layout.selection_file(ctx.run_dir, "nested", fold.index), nested.to_dict())
                outputs[f"nested_fold{fold.index}.json"] = f"selection from fold {fold.index}'s training patients"
                summary["nested"][str(fold.index)] = {
                    "selected": nested.selected,
                    **nested.clustering_summary(),
                    "training_cases": training,
                }
                bar.advance(1)
        write_json(layout.selection_summary_file(ctx.run_dir), summary)
        outputs["summary.json"] = "selected features per mode and fold"
        guard = paper.clustering.guard
        bounded = f", guard: {' and '.join(guard['bounded_by'])}" if guard.get("changed") else ""
        ctx.echo(
            f"[select] paper mode: {len(paper.selected)} of {len(paper.feature_ids)} features "
            f"(CC {paper.cophenetic_cc:.2f}, silhouette {paper.silhouette:.2f} with singletons '{paper.singleton}', "
            f"cut-off {paper.cutoff:.3f}{bounded})"
        )
        return outputs
