"""The train stage's fold states on the tiny run: which (row, fold) is kept, resumed from its checkpoint or trained
again when the config changes (vent.stages.train: fold identities, ``fold_states``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinyrun import by_stage, plan_stages, run_stages
from vent.cv import load_folds
from vent.io import layout
from vent.io.predictions import read_prediction
from vent.stages.train import TrainStage

THROUGH_TRAIN = ("preprocess", "split", "radiomics", "select", "train")
ROWS = ("lstm", "lstm_raw")
MODELS = {"lstm": {"hidden": [8]}, "lstm_raw": {"hidden": [8]}}


def _folds(run):
    return load_folds(layout.splits_file(run.run_dir))[0]


def _result(run, row, fold):
    return json.loads(layout.fold_result_file(run.run_dir, row, fold).read_text())


def _weights(run, row, fold):
    return torch.load(layout.model_file(run.run_dir, row, fold), map_location="cpu", weights_only=False)["state_dict"]


def _predictions(run, row, fold):
    return {case: read_prediction(layout.prediction_file(run.run_dir, row, case)) for case in fold.test}


def _without_seconds(history):
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]


def _states(config):
    """{(row, fold): (state, reason)} as `vent status` shows them, for ``config``."""
    _, ctx = plan_stages(config, THROUGH_TRAIN)
    return {(s.row, s.fold): (s.state, s.reason) for s in TrainStage().fold_states(ctx)}


def _model_mtimes(run):
    return {(row, f): layout.model_file(run.run_dir, row, f).stat().st_mtime_ns for row in ROWS for f in (0, 1)}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_a_finished_run_is_current_fold_by_fold(tiny_run):
    states = _states(tiny_run.config())
    assert set(states) == {(row, fold) for row in ROWS for fold in (0, 1)}
    assert {state for state, _ in states.values()} == {"current"}
    runs = json.loads(layout.runs_file(tiny_run.run_dir).read_text())
    assert runs == [{"row": "lstm", "model": "lstm", "selection": "nested"},
                    {"row": "lstm_raw", "model": "lstm_raw", "selection": "none"}]
    for fold in _folds(tiny_run):
        result = _result(tiny_run, "lstm", fold.index)
        assert result["test"] == fold.test and result["epochs_run"] == 2
        assert result["identity"]["fold"] == {"index": fold.index, "train": fold.train, "val": fold.val,
                                              "test": fold.test}
        assert result["device"] == "cpu"


def test_adding_methods_trains_only_them(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path)
    models = {**MODELS, "transformer": {"d_model": 8, "n_heads": 2, "n_blocks": 1, "dim_feedforward": 16},
              "densest_inhale": {}}
    config = run.config({"train": {"models": models}})
    states = _states(config)
    assert {states[(row, f)][0] for row in ROWS for f in (0, 1)} == {"current"}
    assert {states[(row, f)][0] for row in ("transformer", "densest_inhale") for f in (0, 1)} == {"never run"}
    before = _model_mtimes(run)

    plans, messages = run_stages(config, THROUGH_TRAIN)
    assert by_stage(plans)["train"].action == "run"
    kept = [m for m in messages if ": kept (" in m]
    assert sorted(kept) == sorted(f"[train] {row} fold {f}: kept (identity unchanged)" for row in ROWS for f in (0, 1))
    assert _model_mtimes(run) == before  # the kept folds' models are not written again
    for row in ("transformer", "densest_inhale"):
        for fold in _folds(run):
            assert set(_predictions(run, row, fold)) == set(fold.test)
    assert {state for state, _ in _states(config).values()} == {"current"}
    rows = [r["row"] for r in json.loads(layout.runs_file(run.run_dir).read_text())]
    assert rows == ["lstm", "lstm_raw", "transformer", "densest_inhale"]


def test_the_selection_mode_comparison_adds_one_row_reading_the_other_selection(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path)
    config = run.config({"train": {"compare_selection_modes": True}})
    states = _states(config)
    assert {key: state for key, (state, _) in states.items() if key[0] == "lstm@paper"} == {
        ("lstm@paper", 0): "never run", ("lstm@paper", 1): "never run"}
    _, messages = run_stages(config, THROUGH_TRAIN)
    assert sum(": kept (" in m for m in messages) == 4
    paper = json.loads(layout.selection_file(run.run_dir, "paper").read_text())["selected"]
    for fold in _folds(run):
        nested = json.loads(layout.selection_file(run.run_dir, "nested", fold.index).read_text())["selected"]
        assert _result(run, "lstm@paper", fold.index)["features"] == paper
        assert _result(run, "lstm", fold.index)["features"] == nested
        assert _result(run, "lstm@paper", fold.index)["identity"]["selection"] == "paper"
    runs = json.loads(layout.runs_file(run.run_dir).read_text())
    assert runs[-1] == {"row": "lstm@paper", "model": "lstm", "selection": "paper"}


def test_more_epochs_resume_from_the_checkpoint_and_equal_a_fresh_training(tiny_run, tmp_path):
    resumed = tiny_run.copy(tmp_path / "resumed")
    config = resumed.config({"train": {"max_epochs": 4}})
    states = _states(config)
    for row in ROWS:
        for fold in (0, 1):
            state, reason = states[(row, fold)]
            assert state == "resume" and "max_epochs 2 -> 4" in reason, (row, fold, reason)
    _, messages = run_stages(config, THROUGH_TRAIN)
    assert sum("resumed after epoch 2" in m for m in messages) == 4

    fresh = tiny_run.copy(tmp_path / "fresh")
    for row in ROWS:
        for fold in (0, 1):
            layout.fold_dir(fresh.run_dir, row, fold).joinpath("result.json").unlink()
            layout.checkpoint_file(fresh.run_dir, row, fold).unlink()
    assert {state for state, _ in _states(fresh.config({"train": {"max_epochs": 4}})).values()} == {"never run"}
    run_stages(fresh.config({"train": {"max_epochs": 4}}), THROUGH_TRAIN)

    for row in ROWS:
        for fold in _folds(resumed):
            a, b = _result(resumed, row, fold.index), _result(fresh, row, fold.index)
            assert a["resumed_from_epoch"] == 2 and b["resumed_from_epoch"] is None
            assert a["epochs_run"] == b["epochs_run"] == 4
            assert _without_seconds(a["history"]) == _without_seconds(b["history"])
            assert (a["best_epoch"], a["best_val_loss"]) == (b["best_epoch"], b["best_val_loss"])
            assert a["threshold"] == b["threshold"]
            _assert_same_weights(_weights(resumed, row, fold.index), _weights(fresh, row, fold.index))
            ours, theirs = _predictions(resumed, row, fold), _predictions(fresh, row, fold)
            for case in fold.test:
                np.testing.assert_array_equal(ours[case].probability, theirs[case].probability)
    assert {state for state, _ in _states(config).values()} == {"current"}


def test_fewer_epochs_make_the_folds_stale_and_retrain_from_scratch(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path)
    config = run.config({"train": {"max_epochs": 1}})
    states = _states(config)
    for key, (state, reason) in states.items():
        assert state == "stale" and reason == "trained further than now allowed: max_epochs 2 -> 1", key
    _, messages = run_stages(config, THROUGH_TRAIN)
    assert not [m for m in messages if ": kept (" in m or "resumed after" in m]
    for row in ROWS:
        for fold in (0, 1):
            result = _result(run, row, fold)
            assert result["epochs_run"] == 1 and result["resumed_from_epoch"] is None
            assert len(result["history"]) == 1
            assert _without_seconds(result["history"]) == _without_seconds(_result(tiny_run, row, fold)["history"][:1])
    assert {state for state, _ in _states(config).values()} == {"current"}


@pytest.mark.parametrize(
    "execution",
    [
        {"threads": 2},
        {"device": "auto"},
        {"device": "auto", "threads": None, "workers": 2, "radiomics_engine": "numba", "explain_batch_size": 64},
    ],
    ids=["threads", "device", "all"],
)
def test_execution_settings_keep_every_stage_and_fold_current(tiny_run, execution):
    config = tiny_run.config({"execution": {**tiny_run.config().execution.model_dump(), **execution}})
    plans, _ = plan_stages(config)
    assert {(p.stage.name, p.state, p.action) for p in plans} == {(name, "current", "skip") for name in
                                                                   [p.stage.name for p in plans]}
    assert {state for state, _ in _states(config).values()} == {"current"}


def test_a_new_threshold_rewrites_the_predictions_without_training(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path)
    config = run.config({"train": {"threshold": 0.4}})
    for key, (state, reason) in _states(config).items():
        assert state == "resume" and "threshold 'val_defect_fraction' -> 0.4" in reason, key
    folds = _folds(run)
    before = {(row, f.index): (_result(run, row, f.index), _weights(run, row, f.index), _predictions(run, row, f))
              for row in ROWS for f in folds}

    plans, messages = run_stages(config, THROUGH_TRAIN)
    assert by_stage(plans)["train"].action == "run"
    assert not [m for m in messages if ": kept (" in m]
    for row in ROWS:
        for fold in folds:
            old_result, old_weights, old_predictions = before[(row, fold.index)]
            result = _result(run, row, fold.index)
            assert result["history"] == old_result["history"]  # not one more epoch, not retrained
            assert result["epochs_run"] == old_result["epochs_run"] == 2
            assert (result["best_epoch"], result["best_val_loss"]) == (old_result["best_epoch"],
                                                                        old_result["best_val_loss"])
            assert result["threshold"]["setting"] == 0.4 and result["threshold"]["value"] == 0.4
            assert result["threshold_setting"] == 0.4
            _assert_same_weights(_weights(run, row, fold.index), old_weights)
            for case, prediction in _predictions(run, row, fold).items():
                assert prediction.threshold == 0.4 != old_predictions[case].threshold
                np.testing.assert_array_equal(prediction.probability, old_predictions[case].probability)
                np.testing.assert_array_equal(prediction.defect, (prediction.probability >= 0.4).astype(np.uint8))
    thresholds = json.loads(layout.thresholds_file(run.run_dir).read_text())
    assert thresholds["setting"] == 0.4
    assert {entry["value"] for row in ROWS for entry in thresholds["rows"][row]} == {0.4}
    assert {state for state, _ in _states(config).values()} == {"current"}
    _, messages = run_stages(config, THROUGH_TRAIN)
    assert "[train] skipped: fingerprint unchanged" in messages


def test_status_after_a_cv_change_shows_the_folds_that_will_retrain(tiny_run, tmp_path):
    from vent.cv import make_patient_folds

    cases = [f"Subject_{i:02d}" for i in range(1, 5)]
    seed = next(s for s in range(1, 50) if make_patient_folds(cases, 2, 0.5, seed=s) != make_patient_folds(cases, 2,
                                                                                                           0.5, seed=0))
    run = tiny_run.copy(tmp_path)
    config = run.config({"cv": {"seed": seed}})
    shown = _states(config)
    _, messages = run_stages(config, THROUGH_TRAIN)
    kept = {(row, f) for row in ROWS for f in (0, 1) if f"[train] {row} fold {f}: kept (identity unchanged)" in
            messages}
    assert {key for key, (state, _) in shown.items() if state == "current"} == kept


def test_a_forest_fold_ignores_the_networks_settings(tmp_path) -> None:
    """rf's identity holds only train.seed of the train section: lr, batch size or epochs never retrain it, while
    they do change a network's identity or length."""
    from vent.config import config_from_dict
    from vent.cv import Fold
    from vent.runner import RunContext
    from vent.stages.train import TrainingRun, TrainStage, _fold_state

    def identity(run: TrainingRun, **train) -> tuple[dict, object]:
        base = {"models": ["lstm", "rf"], "reference_model": "lstm", **train}
        config = config_from_dict({"run_dir": "r", "data": {"root": "d"}, "train": base}, tmp_path)
        ctx = RunContext(config=config, fingerprints={"split": "s", "preprocess": "p", "radiomics": "r", "select": "x"})
        return TrainStage().fold_identity(ctx, run, Fold(0, ["a"], ["b"], ["c"])), config.train

    forest, network = TrainingRun("rf", "rf", "none"), TrainingRun("lstm", "lstm", "nested")
    saved, config = identity(forest)
    assert saved["train"] == {"seed": 0} and saved["epochs"] is False
    previous = {"identity": saved, "length": {"max_epochs": config.max_epochs, "patience": config.patience},
                "threshold_setting": config.threshold}
    for change in ({"lr": 0.01}, {"batch_size": 64}, {"max_epochs": 3}, {"patience": 50}):
        now, changed = identity(forest, **change)
        assert _fold_state(previous, now, changed) == ("current", "identity unchanged"), change
    now, changed = identity(forest, seed=1)
    assert _fold_state(previous, now, changed)[0] == "stale"
    now, changed = identity(forest, threshold=0.4)
    assert _fold_state(previous, now, changed) == ("resume", "trains again (no checkpoint to resume): threshold "
                                                   "'val_defect_fraction' -> 0.4")
    assert identity(network)[0]["train"] != identity(network, lr=0.01)[0]["train"]
