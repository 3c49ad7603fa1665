"""The select stage on the tiny run: paper mode on every patient, nested mode per fold of split/splits.json from
that fold's training and validation patients only."""

from __future__ import annotations

import json

import numpy as np

from tinyrun import FEATURES, by_stage, plan_stages, run_stages
from vent.cv import Fold, load_folds, save_folds
from vent.io import layout
from vent.stages.select import SelectStage
from vent.stages.train import TrainStage

CASES = [f"Subject_{i:02d}" for i in range(1, 5)]


def _summary(run):
    return json.loads(layout.selection_summary_file(run.run_dir).read_text())


def _read(run, mode, fold=None):
    return json.loads(layout.selection_file(run.run_dir, mode, fold).read_text())


def _cases(selection):
    return {name.removesuffix(".h5") for name in selection["cases"]}


def test_nested_selection_reads_only_each_folds_training_patients(tiny_run):
    folds, _ = load_folds(layout.splits_file(tiny_run.run_dir))
    summary = _summary(tiny_run)
    assert summary["mode"] == "nested" and set(summary["nested"]) == {str(f.index) for f in folds}
    for fold in folds:
        nested = _read(tiny_run, "nested", fold.index)
        training = sorted(fold.train + fold.val)
        assert summary["nested"][str(fold.index)]["training_cases"] == training
        assert _cases(nested) == set(training)
        assert not _cases(nested) & set(fold.test)
        assert summary["nested"][str(fold.index)]["selected"] == nested["selected"]
        assert set(nested["selected"]) <= set(FEATURES) and nested["selected"]
    paper = _read(tiny_run, "paper")
    assert _cases(paper) == set(CASES) and summary["paper"]["selected"] == paper["selected"]
    assert paper["feature_ids"] == FEATURES


def test_select_reads_the_folds_of_the_split_stage(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path)
    folds, meta = load_folds(layout.splits_file(run.run_dir))
    other = [Fold(0, ["Subject_02"], ["Subject_04"], ["Subject_01", "Subject_03"]),
             Fold(1, ["Subject_03"], ["Subject_01"], ["Subject_02", "Subject_04"])]
    assert other != folds
    save_folds(layout.splits_file(run.run_dir), other, meta)
    plans, _ = run_stages(run.config(), only="select", force=True)
    assert [p.stage.name for p in plans if p.action == "run"] == ["select"]
    summary = _summary(run)
    for fold in other:
        assert summary["nested"][str(fold.index)]["training_cases"] == sorted(fold.train + fold.val)
        assert _cases(_read(run, "nested", fold.index)) == set(fold.train + fold.val)


def test_select_needs_split_and_radiomics_and_retrains_only_what_reads_it(tiny_run):
    assert SelectStage().needs_for(tiny_run.config()) == ("split", "radiomics")
    config = tiny_run.config({"select": {"linkage": "complete"}})
    plans, ctx = plan_stages(config)
    plans = by_stage(plans)
    assert plans["select"].state == "stale" and "select.linkage ('average' -> 'complete')" in plans["select"].reason
    assert plans["split"].action == plans["radiomics"].action == "skip"
    assert plans["train"].action == "run"
    states = {(s.row, s.fold): s.state for s in TrainStage().fold_states(ctx)}
    # the LSTM reads the selection, the raw-intensity LSTM does not
    assert states == {("lstm", 0): "stale", ("lstm", 1): "stale", ("lstm_raw", 0): "current",
                      ("lstm_raw", 1): "current"}


def test_select_is_not_used_without_a_method_that_reads_selected_features(tiny_run):
    config = tiny_run.config({"train": {"models": {"lstm_raw": {"hidden": [8]}}, "reference_model": "lstm_raw"}})
    assert SelectStage().unused_reason(config) is not None
    plans, _ = plan_stages(config)
    plans = by_stage(plans)
    assert (plans["select"].action, plans["select"].state) == ("off", "not used")
    assert plans["radiomics"].state == "current"  # the raw sequences live in the radiomics files
    assert "select" not in plans["train"].definition["upstream"]


def test_every_selection_file_carries_the_dendrogram_its_clusters_were_cut_from(tiny_run):
    from scipy.cluster import hierarchy

    folds, _ = load_folds(layout.splits_file(tiny_run.run_dir))
    for selection in [_read(tiny_run, "paper"), *(_read(tiny_run, "nested", f.index) for f in folds)]:
        ids = selection["linkage_feature_ids"]
        assert ids == [f for f in selection["feature_ids"] if f not in selection["constant_features"]]
        linkage_matrix = np.array(selection["linkage_matrix"])
        assert linkage_matrix.shape == (len(ids) - 1, 4)
        labels = hierarchy.fcluster(linkage_matrix, selection["cutoff"], criterion="distance")
        clusters: dict[str, list[str]] = {}
        for feature_id, label in zip(ids, labels.tolist()):
            clusters.setdefault(str(label), []).append(feature_id)
        assert clusters == selection["clusters"]
