"""Stage ``evaluate``: every method scored the same way, from the prediction contract only.

Reads: ``train/runs.json`` and ``train/thresholds.json`` (the rows), ``split/splits.json`` (which fold holds each
patient out), ``train/predictions/<row>/<case>.h5`` (``vent.io.predictions``) and the ground truth of
``preprocess/<case>.h5`` at the predicted voxels (never a method's own copy of the labels). Writes ``evaluate/``
(``vent.io.evaluation``): per-patient metrics, Table 2 with the Wilcoxon tests against the reference method, the
VAMPIRE challenge's metrics (r_s, DSC_low, DSC_high against the RefVI of ``preprocess/<case>.h5``) of every row's
continuous estimate, the pooled ROC curves and the rows' labels, thresholds and prediction files, which the report
reads.

Every row must predict every patient, each from the fold that holds it out; otherwise this stage stops and names the
row and patient. Memory: one row's held-out voxels at a time (for the pooled ROC).

Config: ``train.reference_model`` and ``select.mode`` (labels), ``evaluate.vampire_fraction`` (or the ground
truth's fraction) for DSC_low / DSC_high.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vent.cv import Fold
from vent.errors import ArtifactError
from vent.evaluation import (
    METRICS,
    VAMPIRE_METRICS,
    ground_truth_at,
    row_label,
    score_patient,
    table2_rows,
    thin_curve,
    vampire_metrics,
    ventilation_estimate,
)
from vent.io import layout
from vent.io.artifacts import read_preprocessed_case
from vent.io.evaluation import EvaluatedRow, Evaluation, write_evaluation, write_roc
from vent.io.predictions import read_prediction
from vent.io.training import read_fold_result, read_runs, read_thresholds
from vent.models.registry import get_spec
from vent.runner import RunContext, StagePlan
from vent.stages.base import Stage, upstream_cases
from vent.stages.split import read_splits

__all__ = ["EvaluateStage"]

log = logging.getLogger(__name__)


def _reference(run_dir: Path, case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(defect, analysed lung mask, RefVI) of a case on its analysis grid."""
    pre = read_preprocessed_case(layout.case_file(run_dir, "preprocess", case), load_ct=False)
    return pre.defect_zyx, pre.lung_mask_zyx, pre.refvi_zyx


def _held_out(run_dir: Path, row: str, fold: Fold, case: str) -> Any:
    """A row's prediction of a case, checked to come from the fold that holds the case out."""
    path = layout.prediction_file(run_dir, row, case)
    prediction = read_prediction(path)
    if prediction.fold != fold.index:
        raise ArtifactError(
            f"{path} was predicted by fold {prediction.fold}, but {case} is held out by fold {fold.index}; "
            "re-run the train stage (vent run CONFIG --from train --force)"
        )
    return prediction


def _score_row(run_dir: Path, row: str, folds: list[Fold], fraction: float) -> tuple[list, list, list, list]:
    """Per-patient Table 2 and VAMPIRE metrics of one row, and its held-out (labels, probabilities) for the pooled
    ROC."""
    per_patient, ventilation, truths, scores = [], [], [], []
    for fold in folds:
        for case in fold.test:
            prediction = _held_out(run_dir, row, fold, case)
            defect, lung, refvi = _reference(run_dir, case)
            where = str(layout.prediction_file(run_dir, row, case))
            labels = ground_truth_at(defect, lung, prediction.coords_zyx, where)
            metrics = score_patient(labels, prediction.probability, prediction.threshold)
            key = {"model": row, "case": case, "fold": fold.index}
            per_patient.append({**key, **metrics})
            estimate, name = ventilation_estimate(prediction.probability, prediction.continuous,
                                                  prediction.continuous_name)
            reference = refvi[tuple(prediction.coords_zyx.T)]
            ventilation.append({**key, "estimate": name, **vampire_metrics(estimate, reference, fraction)})
            truths.append(labels)
            scores.append(prediction.probability)
    return per_patient, ventilation, truths, scores


def _evaluated_row(
    run_dir: Path, run: dict[str, Any], config: Any, thresholds: dict[str, Any], folds: list[Fold]
) -> EvaluatedRow:
    """A row's facts for the report: its label, family, thresholds and where its predictions are."""
    spec = get_spec(run["model"])
    return EvaluatedRow(
        row=run["row"],
        model=run["model"],
        selection=run["selection"],
        label=row_label(spec.label, run["selection"], config.select.mode),
        family=spec.family,
        learns=spec.learns,
        reference=run["row"] == config.train.reference_model,
        thresholds=thresholds.get(run["row"], []),
        predictions={
            case: str(layout.prediction_file(Path("."), run["row"], case)) for fold in folds for case in fold.test
        },
        warnings=_trainer_warnings(run_dir, run["row"], folds),
    )


def _trainer_warnings(run_dir: Path, row: str, folds: list[Fold]) -> list[str]:
    """The warnings a row's trainer recorded per fold (``result.json``), for the report."""
    warnings = []
    for fold in folds:
        record = read_fold_result(run_dir, row, fold.index) or {}
        warnings += [f"fold {fold.index}: {message}" for message in record.get("warnings", [])]
    return warnings


def vampire_fraction(config: Any) -> float:
    """The low/high-function fraction of DSC_low and DSC_high: ``evaluate.vampire_fraction`` or the ground truth's."""
    return config.evaluate.vampire_fraction or config.preprocess.ground_truth.fraction


def _vampire_rows(per_patient: list[dict[str, Any]], reference: str, rows: list[str]) -> list[dict[str, Any]]:
    """The VAMPIRE table: per row its estimate's name and mean (min-max), Wilcoxon p of r_s, DSC_low, DSC_high."""
    names = {entry["model"]: entry["estimate"] for entry in per_patient}
    table = table2_rows(per_patient, reference, rows, VAMPIRE_METRICS)
    return [{"model": r["model"], "estimate": names.get(r["model"], ""), **r} for r in table]


class EvaluateStage(Stage):
    name = "evaluate"
    needs = ("train",)
    version = "3"

    def input_identity(self, ctx: RunContext) -> dict[str, Any]:
        # the labels depend on the main selection mode; the reference decides the Wilcoxon pairs
        return {
            "select.mode": ctx.config.select.mode,
            "reference_model": ctx.config.train.reference_model,
            "vampire_fraction": vampire_fraction(ctx.config),
        }

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        from vent.metrics import pooled_roc

        run_dir, config = ctx.run_dir, ctx.config
        folds = read_splits(run_dir, sorted(upstream_cases(ctx, "preprocess")))
        runs = read_runs(run_dir)
        thresholds = read_thresholds(run_dir)
        per_patient: list[dict[str, Any]] = []
        ventilation: list[dict[str, Any]] = []
        curves = {}
        with ctx.progress.task("evaluate (rows)", total=len(runs)) as bar:
            for run in runs:
                rows, vampire, truths, scores = _score_row(run_dir, run["row"], folds, vampire_fraction(config))
                per_patient += rows
                ventilation += vampire
                fpr, tpr, auc = pooled_roc(truths, scores)
                curves[run["row"]] = (*thin_curve(fpr, tpr), auc, len(fpr))
                bar.advance(1)
        evaluation = Evaluation(
            reference=config.train.reference_model,
            selection_mode=config.select.mode,
            threshold_setting=thresholds.get("setting"),
            n_folds=len(folds),
            rows=[_evaluated_row(run_dir, run, config, thresholds.get("rows", {}), folds) for run in runs],
            per_patient=per_patient,
            table2=table2_rows(per_patient, config.train.reference_model, [run["row"] for run in runs]),
            vampire_fraction=vampire_fraction(config),
            vampire_per_patient=ventilation,
            vampire=_vampire_rows(ventilation, config.train.reference_model, [run["row"] for run in runs]),
        )
        outputs = write_evaluation(run_dir, evaluation)
        write_roc(run_dir, curves)
        outputs["roc.h5"] = "pooled ROC curve per row"
        for row in evaluation.table2:
            ctx.echo(
                f"[evaluate] {row['model']}: "
                + ", ".join(f"{m} {row[f'{m}_mean']:.3f}" for m in METRICS[:2])
                + f" over {row['n_patients']} patients"
            )
        return outputs
