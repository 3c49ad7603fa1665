"""Stage ``split``: the seeded patient folds, written once and read by ``select`` and every method.

Reads: the preprocessed cases (``preprocess/<case>.h5``; only their ids). Writes ``split/splits.json``
(``vent.cv`` format: per fold the training, validation and test patients, plus the seed and settings), so that every
method of Table 2 is scored on the same held-out patients and nothing needs radiomics to be split.

Config: ``cv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vent.cv import Fold, load_folds, make_patient_folds, save_folds, validate_folds
from vent.io import layout
from vent.runner import RunContext, StagePlan
from vent.stages.base import Stage, upstream_cases

__all__ = ["SplitStage", "read_splits"]


def read_splits(run_dir: Path, case_ids: list[str]) -> list[Fold]:
    """The folds written by the split stage, checked against the cohort (never silently re-split)."""
    folds, _meta = load_folds(layout.splits_file(run_dir))
    validate_folds(folds, case_ids)
    return folds


class SplitStage(Stage):
    name = "split"
    sections = ("cv",)
    needs = ("preprocess",)
    version = "1"

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        cases = sorted(upstream_cases(ctx, "preprocess"))
        cv = ctx.config.cv
        folds = make_patient_folds(cases, n_folds=cv.n_folds, val_fraction=cv.val_fraction, seed=cv.seed)
        meta = {"seed": cv.seed, "n_folds": cv.n_folds, "val_fraction": cv.val_fraction, "cases": cases}
        save_folds(layout.splits_file(ctx.run_dir), folds, meta)
        sizes = ", ".join(f"{len(f.train)}/{len(f.val)}/{len(f.test)}" for f in folds)
        ctx.echo(f"[split] {len(cases)} patients into {len(folds)} folds (train/val/test: {sizes})")
        return {"splits.json": "cross-validation folds by patient"}
