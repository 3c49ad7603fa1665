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
        assert sorted(store) == sorted([f"fold_{f.index}" for f in folds] + [
            "pooled_map", "pooled_map_where_selected", "pooled_map_defect", "pooled_map_healthy"])
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
    for name in ("defect", "healthy"):  # NaN exactly where pooled_map is (no fold selected the sequence)
        assert pooled.class_maps[name].shape == pooled.pooled_map.shape
        np.testing.assert_array_equal(np.isnan(pooled.class_maps[name]), np.isnan(pooled.pooled_map))
    with open(layout.explain_file(tiny_run.run_dir, "importance.csv")) as handle:
        ranked = list(csv.DictReader(handle))
    assert [int(r["rank"]) for r in ranked] == list(range(1, len(ranked) + 1))
    assert {r["n_folds_total"] for r in ranked} == {"2"}
    summary = json.loads(layout.explain_file(tiny_run.run_dir, "summary.json").read_text())
    assert summary["device"] == {"requested": "cpu", "used": "cpu"}
    for fold in summary["folds"]:
        curve = fold["deletion_curve"]
        assert curve["ks"] == list(range(fold["n_features"]))
        assert curve["top_auc"][0] == curve["auc"] == fold["deletion"]["auc"]
        assert sorted(curve["top_order_ids"]) == sorted(fold["importance"])
        assert len(curve["random_auc_p5"]) == len(curve["ks"])


def test_class_maps_pool_the_folds_class_maps(tiny_run):
    from vent.explain import FoldMap, pool_fold_maps

    path = layout.explain_file(tiny_run.run_dir, "saliency.h5")
    with h5py.File(path, "r") as store:
        groups = [store[name] for name in store if name.startswith("fold_")]
        for g in groups:
            assert g.attrs["n_voxels_defect"] + g.attrs["n_voxels_healthy"] == g.attrs["n_voxels"]
        for name in ("defect", "healthy"):
            n_class = [int(g.attrs[f"n_voxels_{name}"]) for g in groups]
            assert all(n > 0 for n in n_class)  # the tiny cohort has both classes in every fold
            maps = [FoldMap(_string_list(g.attrs["feature_ids"]), g[f"mean_map_{name}"][...], n)
                    for g, n in zip(groups, n_class)]
            expected = pool_fold_maps(maps, FEATURES).pooled_map
            np.testing.assert_allclose(read_pooled_saliency(path).class_maps[name], expected, rtol=1e-12)


def test_trends_per_patient_and_bands_over_patients(tiny_run):
    folds, _ = load_folds(layout.splits_file(tiny_run.run_dir))
    with open(layout.explain_file(tiny_run.run_dir, "trends.csv")) as handle:
        trends = list(csv.DictReader(handle))
    with open(layout.explain_file(tiny_run.run_dir, "trend_bands.csv")) as handle:
        bands = list(csv.DictReader(handle))
    assert list(trends[0]) == ["feature_id", "phase", "class", "case", "mean", "sd", "n"]
    assert list(bands[0]) == ["feature_id", "phase", "class", "n_patients", "mean", "ci_low", "ci_high",
                              "sd_patients", "sd_voxels", "n_voxels"]
    test_cases = {case for fold in folds for case in fold.test}
    assert {r["case"] for r in trends} == test_cases
    assert all(0 < int(r["n"]) <= 6 for r in trends)  # voxels_per_class_per_case
    for band in bands:
        key = (band["feature_id"], band["phase"], band["class"])
        rows = [r for r in trends if (r["feature_id"], r["phase"], r["class"]) == key]
        means = np.array([float(r["mean"]) for r in rows])
        assert int(band["n_patients"]) == len(rows) and int(band["n_voxels"]) == sum(int(r["n"]) for r in rows)
        assert float(band["mean"]) == pytest.approx(means.mean(), rel=1e-5, abs=1e-9)
        if len(rows) > 1:
            assert float(band["ci_low"]) <= float(band["mean"]) <= float(band["ci_high"])
            # the CSV holds 6 significant digits: the SD of close means carries the rounding of the means
            tolerance = 1e-5 * np.abs(means).max() + 1e-9
            assert float(band["sd_patients"]) == pytest.approx(means.std(ddof=1), abs=tolerance)
        else:
            assert np.isnan(float(band["ci_low"])) and np.isnan(float(band["ci_high"]))
    assert {r["phase"] for r in bands} == {str(t) for t in range(N_PHASES)}


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
