"""The evaluate stage on hand-written inputs: known ground truths (preprocess/<case>.h5), folds (split/splits.json)
and predictions (the prediction contract), scored with the same metrics every method gets."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from phantoms import write_phantom_subject
from vent.config import config_from_dict
from vent.cv import Fold, save_folds
from vent.errors import ArtifactError
from vent.io import layout
from vent.io.artifacts import PreprocessedCase, write_preprocessed_case
from vent.io.atomic import write_json
from vent.io.evaluation import read_evaluation
from vent.io.images import Grid
from vent.io.predictions import Prediction, read_prediction, write_prediction
from vent.runner import RunContext, execute_plan, plan_run
from vent.stages.evaluate import EvaluateStage

CASES = [f"Subject_{i:02d}" for i in range(1, 7)]
FOLDS = [
    Fold(0, ["Subject_03", "Subject_04", "Subject_05"], ["Subject_06"], ["Subject_01", "Subject_02"]),
    Fold(1, ["Subject_01", "Subject_05", "Subject_06"], ["Subject_02"], ["Subject_03", "Subject_04"]),
    Fold(2, ["Subject_01", "Subject_02", "Subject_03"], ["Subject_04"], ["Subject_05", "Subject_06"]),
]
RUNS = [
    {"row": "lstm", "model": "lstm", "selection": "nested"},
    {"row": "bilstm", "model": "bilstm", "selection": "nested"},
    {"row": "lstm@paper", "model": "lstm", "selection": "paper"},
    {"row": "densest_inhale", "model": "densest_inhale", "selection": "none"},
]
THRESHOLDS = {"lstm": 0.5, "bilstm": 0.45, "lstm@paper": 0.55, "densest_inhale": 0.7}
SHAPE = (5, 6, 7)
GRID = Grid((7, 6, 5), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
METRICS = ("dice", "auc", "sensitivity", "accuracy")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Six hand-made subjects: the evaluate stage takes the cohort's case ids from the data folder."""
    root = tmp_path_factory.mktemp("evaluate_cohort") / "study"
    for i, case in enumerate(CASES, start=1):
        write_phantom_subject(root / case, seed=i)
    return root


def _truth(index):
    """(lung mask, defect) of case ``index``: a lung box with a seeded defect inside."""
    rng = np.random.default_rng(100 + index)
    lung = np.zeros(SHAPE, np.uint8)
    lung[1:4, 1:5, 1:6] = 1
    defect = ((rng.random(SHAPE) < 0.35) & (lung > 0)).astype(np.uint8)
    return lung, defect


def _prediction(row, case, fold, lung, defect, seed):
    """A noisy prediction of ``defect`` at every lung voxel, in a shuffled voxel order."""
    rng = np.random.default_rng(seed)
    coords = rng.permutation(np.argwhere(lung > 0)).astype(np.int32)
    labels = defect[tuple(coords.T)]
    probability = np.clip(0.35 * labels + 0.65 * rng.random(len(coords)), 0, 1).astype(np.float32)
    if row != "densest_inhale":
        return Prediction(case, row, fold, probability, THRESHOLDS[row], coords, GRID)
    # a row with its own continuous ventilation map (as CT ventilation has), scored instead of 1 - probability
    continuous = (1.0 - labels + rng.normal(0, 0.8, len(coords))).astype(np.float32)
    return Prediction(case, row, fold, probability, THRESHOLDS[row], coords, GRID, continuous, "test_map")


def _refvi(lung, defect, index):
    """A RefVI that is low in the defect, with noise (seeded by the case)."""
    rng = np.random.default_rng(200 + index)
    return ((1.0 - 0.6 * defect + rng.normal(0, 0.3, SHAPE)) * (lung > 0)).astype(np.float32)


class Inputs:
    """Everything the evaluate stage reads, written with the project's writers into ``tmp_path/run``."""

    def __init__(self, tmp_path, cohort):
        self.run_dir = tmp_path / "run"
        self.config = config_from_dict(
            {
                "run_dir": str(self.run_dir),
                "data": {"root": str(cohort)},
                "cv": {"n_folds": 3},
                "train": {"models": ["lstm", "bilstm", "densest_inhale"], "reference_model": "lstm"},
            },
            tmp_path,
        )
        layout.stage_dir(self.run_dir, "preprocess").mkdir(parents=True)
        self.truth = {}
        for i, case in enumerate(CASES):
            lung, defect = _truth(i)
            self.truth[case] = (lung, defect)
            ct = np.full((3, *SHAPE), -800, np.float32)
            pre = PreprocessedCase(case, ct, np.repeat(lung[None], 3, 0), lung, _refvi(lung, defect, i), defect,
                                   GRID, {"inhale_phase": 1, "exhale_phase": 0})
            write_preprocessed_case(layout.case_file(self.run_dir, "preprocess", case), pre, "hand-written")
        save_folds(layout.splits_file(self.run_dir), FOLDS, {"seed": 0, "cases": CASES})
        write_json(layout.runs_file(self.run_dir), RUNS)
        write_json(
            layout.thresholds_file(self.run_dir),
            {"setting": "val_defect_fraction",
             "rows": {r["row"]: [{"fold": f.index, "value": THRESHOLDS[r["row"]]} for f in FOLDS] for r in RUNS
                      if r["row"] != "densest_inhale"}},
        )
        self.predictions = {}
        for r, run in enumerate(RUNS):
            for fold in FOLDS:
                for case in fold.test:
                    lung, defect = self.truth[case]
                    seed = 1000 * r + CASES.index(case)
                    self.write(_prediction(run["row"], case, fold.index, lung, defect, seed))

    def write(self, prediction):
        path = layout.prediction_file(self.run_dir, prediction.row, prediction.case_id)
        write_prediction(path, prediction, volumes=False)
        self.predictions[(prediction.row, prediction.case_id)] = prediction
        return path

    def evaluate(self):
        ctx = RunContext(config=self.config, echo=lambda message: None)
        ctx.fingerprints["train"] = "hand-written predictions"  # the upstream fingerprint, as planned by the runner
        plans = plan_run(ctx, [EvaluateStage()])
        assert [(p.stage.name, p.action) for p in plans] == [("evaluate", "run")]
        execute_plan(ctx, plans)
        return read_evaluation(self.run_dir)


@pytest.fixture
def inputs(tmp_path, cohort):
    return Inputs(tmp_path, cohort)


def _expected(inputs, row, case):
    prediction = read_prediction(layout.prediction_file(inputs.run_dir, row, case))
    lung, defect = inputs.truth[case]
    labels = defect[tuple(prediction.coords_zyx.T)].astype(bool)
    called = prediction.probability >= prediction.threshold
    both = np.count_nonzero(called & labels)
    return {
        "dice": 2 * both / (np.count_nonzero(called) + np.count_nonzero(labels)),
        "auc": roc_auc_score(labels, prediction.probability),
        "sensitivity": both / np.count_nonzero(labels),
        "accuracy": np.mean(called == labels),
    }


def test_per_patient_metrics_match_a_manual_computation(inputs):
    evaluation = inputs.evaluate()
    assert len(evaluation.per_patient) == len(RUNS) * len(CASES)
    fold_of = {case: fold.index for fold in FOLDS for case in fold.test}
    for entry in evaluation.per_patient:
        expected = _expected(inputs, entry["model"], entry["case"])
        assert entry["fold"] == fold_of[entry["case"]]
        for metric in METRICS:
            assert entry[metric] == pytest.approx(expected[metric], rel=1e-12, abs=1e-15), (entry, metric)
    assert {(e["model"], e["case"]) for e in evaluation.per_patient} == {(r["row"], c) for r in RUNS for c in CASES}
    # the shuffled voxel order of each prediction is undone through its coordinates (a plain check on one case)
    auc = next(e["auc"] for e in evaluation.per_patient if (e["model"], e["case"]) == ("lstm", "Subject_01"))
    assert 0.6 < auc <= 1.0


def test_table2_summaries_and_wilcoxon_p_values(inputs):
    evaluation = inputs.evaluate()
    assert [row["model"] for row in evaluation.table2] == [r["row"] for r in RUNS]
    values = {(e["model"], e["case"]): e for e in evaluation.per_patient}
    for row in evaluation.table2:
        assert row["n_patients"] == len(CASES)
        for metric in METRICS:
            series = np.array([values[(row["model"], case)][metric] for case in CASES])
            reference = np.array([values[("lstm", case)][metric] for case in CASES])
            assert row[f"{metric}_mean"] == pytest.approx(series.mean(), rel=1e-12)
            assert (row[f"{metric}_min"], row[f"{metric}_max"]) == (series.min(), series.max())
            if row["model"] == "lstm":
                assert math.isnan(row[f"{metric}_p"])
            else:
                expected = stats.wilcoxon(reference, series, zero_method="wilcox", alternative="two-sided").pvalue
                assert row[f"{metric}_p"] == pytest.approx(expected, rel=1e-12), (row["model"], metric)
    assert any(row["auc_p"] < 0.999 for row in evaluation.table2 if row["model"] != "lstm")


def test_rows_labels_and_pooled_roc(inputs):
    evaluation = inputs.evaluate()
    rows = {r.row: r for r in evaluation.rows}
    assert list(rows) == [r["row"] for r in RUNS]
    assert evaluation.reference == "lstm" and evaluation.n_folds == 3 and evaluation.selection_mode == "nested"
    assert [r.row for r in evaluation.rows if r.reference] == ["lstm"]
    assert rows["lstm@paper"].label.startswith(rows["lstm"].label) and "paper" in rows["lstm@paper"].label
    assert not rows["densest_inhale"].learns and rows["densest_inhale"].family == "rule"
    assert rows["densest_inhale"].thresholds == []
    assert [t["value"] for t in rows["bilstm"].thresholds] == [0.45] * 3
    assert rows["lstm"].predictions["Subject_03"] == "train/predictions/lstm/Subject_03.h5"
    with h5py.File(layout.evaluate_file(inputs.run_dir, "roc.h5"), "r") as handle:
        for run in RUNS:
            labels, scores = [], []
            for case in CASES:
                prediction = inputs.predictions[(run["row"], case)]
                labels.append(inputs.truth[case][1][tuple(prediction.coords_zyx.T)])
                scores.append(prediction.probability)
            expected = roc_auc_score(np.concatenate(labels), np.concatenate(scores))
            assert handle[run["row"]].attrs["auc"] == pytest.approx(expected, rel=1e-12)
    manifest = json.loads(layout.manifest_file(inputs.run_dir, "evaluate").read_text())
    assert set(manifest["outputs"]) == {
        "rows.json", "per_patient_metrics.csv", "table2.csv", "roc.h5", "vampire_per_patient.csv",
        "vampire_metrics.csv",
    }


def _regions(values, fraction):
    """Lowest / highest ``fraction`` of the voxels by volume, counted by sorting (not by quantiles)."""
    order = np.argsort(values, kind="stable")
    k = int(round(fraction * len(values)))
    low, high = np.zeros(len(values), bool), np.zeros(len(values), bool)
    low[order[:k]], high[order[-k:]] = True, True
    return low, high


def test_vampire_metrics_per_patient_and_summary(inputs):
    """r_s is scipy's Spearman of the row's estimate against the RefVI at its voxels; DSC_low / DSC_high are the
    Dice of the lowest / highest 30% by volume (the ground truth's fraction); a row's own continuous map is scored
    in place of 1 - p(defect); the summary is mean (min-max) with the Wilcoxon test against the reference."""
    evaluation = inputs.evaluate()
    assert evaluation.vampire_fraction == 0.3
    entries = {(e["model"], e["case"]): e for e in evaluation.vampire_per_patient}
    assert set(entries) == {(r["row"], c) for r in RUNS for c in CASES}
    for (row, case), entry in entries.items():
        prediction = inputs.predictions[(row, case)]
        refvi = _refvi(*inputs.truth[case], CASES.index(case))[tuple(prediction.coords_zyx.T)]
        if row == "densest_inhale":
            estimate, name = prediction.continuous, "test_map"
        else:
            estimate, name = 1.0 - prediction.probability.astype(np.float64), "1 - p(defect)"
        assert entry["estimate"] == name
        assert entry["r_s"] == pytest.approx(stats.spearmanr(estimate, refvi).statistic, rel=1e-9)
        # 18 of 60 voxels: the quantile regions hold exactly the sorted 30% when values are distinct
        (low_e, high_e), (low_r, high_r) = _regions(estimate, 0.3), _regions(refvi, 0.3)
        assert entry["dsc_low"] == pytest.approx(2 * (low_e & low_r).sum() / (low_e.sum() + low_r.sum()), rel=1e-12)
        assert entry["dsc_high"] == pytest.approx(2 * (high_e & high_r).sum() / (high_e.sum() + high_r.sum()))
    summary = {r["model"]: r for r in evaluation.vampire}
    assert list(summary) == [r["row"] for r in RUNS]
    for row, values in summary.items():
        series = np.array([entries[(row, c)]["r_s"] for c in CASES])
        assert values["r_s_mean"] == pytest.approx(series.mean()) and values["r_s_min"] == series.min()
        if row == "lstm":
            assert math.isnan(values["r_s_p"])
        else:
            reference = np.array([entries[("lstm", c)]["r_s"] for c in CASES])
            assert values["r_s_p"] == pytest.approx(stats.wilcoxon(reference, series).pvalue, rel=1e-12)
    # the planted continuous map tracks the RefVI better than 1 - a noisy probability
    assert summary["densest_inhale"]["r_s_mean"] > 0.2


def test_a_prediction_from_the_wrong_fold_is_refused(inputs):
    good = inputs.predictions[("bilstm", "Subject_04")]
    wrong = Prediction(good.case_id, good.row, 0, good.probability, good.threshold, good.coords_zyx, good.grid)
    path = inputs.write(wrong)
    with pytest.raises(ArtifactError) as error:
        inputs.evaluate()
    assert str(path) in str(error.value)
    assert "predicted by fold 0, but Subject_04 is held out by fold 1" in str(error.value)
    assert not layout.manifest_file(inputs.run_dir, "evaluate").exists()


def test_a_missing_prediction_is_refused(inputs):
    path = layout.prediction_file(inputs.run_dir, "densest_inhale", "Subject_05")
    path.unlink()
    with pytest.raises(ArtifactError, match="missing") as error:
        inputs.evaluate()
    assert str(path) in str(error.value)
    assert not layout.manifest_file(inputs.run_dir, "evaluate").exists()


def test_a_predicted_voxel_outside_the_lung_mask_is_refused(inputs):
    good = inputs.predictions[("lstm", "Subject_02")]
    coords = good.coords_zyx.copy()
    coords[0] = (0, 0, 0)  # outside the lung box
    path = inputs.write(Prediction(good.case_id, good.row, good.fold, good.probability, good.threshold, coords,
                                   good.grid))
    with pytest.raises(ArtifactError) as error:
        inputs.evaluate()
    assert str(path) in str(error.value)
    assert "1 predicted voxel(s) lie outside the analysed lung mask" in str(error.value)


def test_trainer_warnings_reach_the_rows(tmp_path) -> None:
    """A warning a trainer recorded in a fold's result.json is carried to the report's row (never silent)."""
    from vent.cv import Fold
    from vent.io.training import write_fold_result
    from vent.stages.evaluate import _trainer_warnings

    folds = [Fold(0, ["a"], ["b"], ["c"]), Fold(1, ["c"], ["b"], ["a"])]
    write_fold_result(tmp_path, "rf", 0, {"warnings": ["random search skipped"]})
    write_fold_result(tmp_path, "rf", 1, {"warnings": []})
    assert _trainer_warnings(tmp_path, "rf", folds) == ["fold 0: random search skipped"]
    assert _trainer_warnings(tmp_path, "lstm", folds) == []
