"""Stage ``select``: patient folds and correlation-cluster feature selection, in both modes.

Reads: ``radiomics/<case>.h5``. Writes:

- ``select/splits.json``: the cross-validation folds (by patient, seeded, written once per fingerprint and reused by
  every model so model comparisons are paired);
- ``select/paper.json``: selection on all patients, as the study published it (its labels leak into test folds);
- ``select/nested_fold<k>.json``: selection from fold k's training and validation patients only (no leakage);
- ``select/summary.json``: which mode feeds the models and, for paper mode and each nested fold, the selected ids
  and the clustering: ``cophenetic_cc``, ``cutoff``, ``silhouette``, ``n_clusters``, ``n_singletons`` (the chosen
  cut), ``singleton_silhouette`` (the convention that selected), ``silhouette_by_convention`` (every convention's
  score at the chosen cut), ``by_convention`` (the cut each convention would select: cutoff, n_clusters,
  n_singletons, silhouette, selected) and ``guard`` (min_clusters, max_clusters, max_cutoff, unguarded best, changed,
  bounded_by). Top level: ``selection_rule`` (the settings that drive the choice).

Config: ``select`` and ``cv``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vent.cv import Fold, load_folds, make_patient_folds, save_folds, validate_folds
from vent.errors import ArtifactError, ConfigError
from vent.io.atomic import write_json
from vent.runner import RunContext, StagePlan
from vent.stages.base import Stage, upstream_cases

__all__ = ["SelectStage", "fold_selection", "load_splits"]

log = logging.getLogger(__name__)


def load_splits(run_dir: Path, case_ids: list[str]) -> list[Fold]:
    """The folds written by the select stage, checked against the cohort (never silently re-split)."""
    folds, _meta = load_folds(run_dir / "select" / "splits.json")
    validate_folds(folds, case_ids)
    return folds


def fold_selection(run_dir: Path, mode: str, fold: int) -> list[str]:
    """The feature ids selected for ``fold`` in ``mode`` ("nested" or "paper")."""
    path = run_dir / "select" / ("paper.json" if mode == "paper" else f"nested_fold{fold}.json")
    try:
        return list(json.loads(path.read_text())["selected"])
    except FileNotFoundError:
        raise ArtifactError(f"selection {path} is missing; run the select stage") from None


class SelectStage(Stage):
    name = "select"
    sections = ("cv",)
    needs = ("radiomics",)
    version = "2"

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        from vent.selection import select_features

        cases = sorted(upstream_cases(ctx, "radiomics"))
        cv, settings = ctx.config.cv, ctx.config.select
        if cv.n_folds > len(cases):
            raise ConfigError(
                f"cv.n_folds = {cv.n_folds} but the cohort has only {len(cases)} patients; "
                f"lower cv.n_folds to at most {len(cases)}"
            )
        folds = make_patient_folds(cases, n_folds=cv.n_folds, val_fraction=cv.val_fraction, seed=cv.seed)
        validate_folds(folds, cases)
        out = ctx.stage_dir(self.name)
        save_folds(
            out / "splits.json",
            folds,
            {"seed": cv.seed, "n_folds": cv.n_folds, "val_fraction": cv.val_fraction, "cases": cases},
        )
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
            seed=cv.seed,
        )
        outputs: dict[str, Any] = {"splits.json": "cross-validation folds by patient"}
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
            write_json(out / "paper.json", paper.to_dict())
            outputs["paper.json"] = "selection on all patients (as published; leaks test labels)"
            summary["paper"] = {"selected": paper.selected, **paper.clustering_summary()}
            bar.advance(1)
            for fold in folds:
                training = sorted(fold.train + fold.val)
                nested = select_features([files[c] for c in training], **options)
                write_json(out / f"nested_fold{fold.index}.json", nested.to_dict())
                outputs[f"nested_fold{fold.index}.json"] = f"selection from fold {fold.index}'s training patients"
                summary["nested"][str(fold.index)] = {
                    "selected": nested.selected,
                    **nested.clustering_summary(),
                    "training_cases": training,
                }
                bar.advance(1)
        write_json(out / "summary.json", summary)
        outputs["summary.json"] = "selected features per mode and fold"
        guard = paper.clustering.guard
        bounded = f", guard: {' and '.join(guard['bounded_by'])}" if guard.get("changed") else ""
        ctx.echo(
            f"[select] paper mode: {len(paper.selected)} of {len(paper.feature_ids)} features "
            f"(CC {paper.cophenetic_cc:.2f}, silhouette {paper.silhouette:.2f} with singletons '{paper.singleton}', "
            f"cut-off {paper.cutoff:.3f}{bounded})"
        )
        return outputs
