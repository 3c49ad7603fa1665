"""The explain stage on the tiny run: per-fold temporal saliency of the reference model in explain/saliency.h5, and
"not used" when the reference method has nothing to explain."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest

from tinyrun import FEATURES, by_stage, plan_stages, run_stages
from vent.cv import load_folds
from vent.errors import ConfigError
from vent.io import layout
from vent.io.saliency import SALIENCY_FORMAT, read_pooled_saliency
from vent.stages.explain import ExplainStage

N_PHASES = 5


def _string_list(values):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def test_saliency_holds_every_folds_maps_and_the_pooled_map(tiny_run):
    folds, _ = load_folds(layout.splits_file(tiny_run.run_dir))
    with h5py.File(layout.explain_file(tiny_run.run_dir, "saliency.h5"), "r") as store:
        assert store.attrs["format_version"] == SALIENCY_FORMAT
        assert _string_list(store.attrs["feature_ids"]) == FEATURES
        assert store.attrs["method"] == "study"
        assert sorted(store) == sorted([f"fold_{f.index}" for f in folds] + ["pooled_map",
                                                                             "pooled_map_where_selected"])
        assert store["pooled_map"].shape == (N_PHASES, len(FEATURES))
        for fold in folds:
            group = store[f"fold_{fold.index}"]
            selected = json.loads(layout.selection_file(tiny_run.run_dir, "nested", fold.index).read_text())
            assert _string_list(group.attrs["feature_ids"]) == selected["selected"]
            assert group["mean_map"].shape == (N_PHASES, len(selected["selected"]))
            # at most voxels_per_class_per_case (6) defect and healthy voxels of each test patient
            assert 0 < group.attrs["n_voxels"] <= 2 * 6 * len(fold.test)
            for name in ("mean_map_defect", "mean_map_healthy"):
                assert group[name].shape == group["mean_map"].shape
                assert float(np.sum(group[name][...])) == pytest.approx(1.0, abs=1e-6)  # each voxel's map sums to 1
        never_selected = [j for j, f in enumerate(FEATURES) if not any(
            f in _string_list(store[f"fold_{fold.index}"].attrs["feature_ids"]) for fold in folds)]
        where = store["pooled_map_where_selected"][...]
        assert np.isnan(where[:, never_selected]).all() and not np.isnan(np.delete(where, never_selected, 1)).any()
    pooled = read_pooled_saliency(layout.explain_file(tiny_run.run_dir, "saliency.h5"))
    assert pooled.feature_ids == FEATURES and pooled.method == "study"
    np.testing.assert_array_equal(pooled.pooled_map_where_selected, where)
    with open(layout.explain_file(tiny_run.run_dir, "importance.csv")) as handle:
        ranked = list(csv.DictReader(handle))
    assert [int(r["rank"]) for r in ranked] == list(range(1, len(ranked) + 1))
    assert {r["n_folds_total"] for r in ranked} == {"2"}
    summary = json.loads(layout.explain_file(tiny_run.run_dir, "summary.json").read_text())
    assert summary["device"] == {"requested": "cpu", "used": "cpu"}


def test_explain_is_not_used_when_the_reference_is_the_no_learning_rule(tiny_run):
    config = tiny_run.config({"train": {"models": {"lstm": {"hidden": [8]}, "densest_inhale": {}},
                                        "reference_model": "densest_inhale"}})
    reason = ExplainStage().unused_reason(config)
    assert reason is not None and "densest_inhale" in reason
    plans, _ = plan_stages(config)
    plans = by_stage(plans)
    assert (plans["explain"].action, plans["explain"].state, plans["explain"].reason) == ("off", "not used", reason)
    assert plans["radiomics"].action != "off" and plans["select"].action != "off"  # the LSTM still reads them
    with pytest.raises(ConfigError, match="does not use the explain stage"):
        plan_stages(config, only="explain")
    assert ExplainStage().unused_reason(tiny_run.config()) is None


def test_another_reference_model_is_explained_without_retraining(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path)
    config = run.config({"train": {"reference_model": "lstm_raw"}})
    plans, messages = run_stages(config)
    actions = {p.stage.name: p.action for p in plans}
    assert actions["train"] == actions["evaluate"] == actions["explain"] == "run"
    assert sum(": kept (" in m for m in messages) == 4  # the reference model is no part of a fold's identity
    with h5py.File(layout.explain_file(run.run_dir, "saliency.h5"), "r") as store:
        assert store.attrs["format_version"] == SALIENCY_FORMAT
        for name in ("fold_0", "fold_1"):
            assert _string_list(store[name].attrs["feature_ids"]) == ["intensity"]
            assert store[name]["mean_map"].shape == (N_PHASES, 1)
        assert np.isnan(store["pooled_map"][...]).all()  # the raw model has no radiomic sequences to pool
