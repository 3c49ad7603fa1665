"""The split stage: seeded patient folds written once to split/splits.json, read by select and every method."""

from __future__ import annotations

import json
import shutil

from tinyrun import by_stage, plan_stages, run_stages
from vent.cv import load_folds, make_patient_folds
from vent.io import layout
from vent.stages.split import SplitStage, read_splits

CASES = [f"Subject_{i:02d}" for i in range(1, 5)]
RULE_ONLY = {"train": {"models": ["densest_inhale"], "reference_model": "densest_inhale"}}


def _folds(run_dir):
    return json.loads(layout.splits_file(run_dir).read_text())


def test_folds_are_the_seeded_patient_split(tiny_run):
    folds, meta = load_folds(layout.splits_file(tiny_run.run_dir))
    expected = make_patient_folds(CASES, n_folds=2, val_fraction=0.5, seed=0)
    assert folds == expected
    assert meta == {"seed": 0, "n_folds": 2, "val_fraction": 0.5, "cases": CASES}
    assert read_splits(tiny_run.run_dir, CASES) == expected
    manifest = json.loads(layout.manifest_file(tiny_run.run_dir, "split").read_text())
    assert list(manifest["outputs"]) == ["splits.json"]
    assert manifest["definition"]["config"]["cv"] == {"n_folds": 2, "val_fraction": 0.5, "seed": 0}


def test_every_patient_is_tested_once_and_never_trained_on_in_its_fold(tiny_run):
    folds, _ = load_folds(layout.splits_file(tiny_run.run_dir))
    tested = [case for fold in folds for case in fold.test]
    assert sorted(tested) == CASES  # every patient once
    for fold in folds:
        assert fold.train and fold.val and fold.test
        assert not set(fold.train) & set(fold.val)
        assert not (set(fold.train) | set(fold.val)) & set(fold.test)
        assert sorted(fold.all_cases()) == CASES


def test_the_folds_are_written_once(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path)
    path = layout.splits_file(run.run_dir)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    plans, messages = run_stages(run.config(), ("preprocess", "split"))
    assert by_stage(plans)["split"].action == "skip"
    assert "[split] skipped: fingerprint unchanged" in messages
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    # settings the split does not read (radiomics, train) leave it current
    plans, _ = plan_stages(run.config({"radiomics": {"kernel_mm": 14.0}, "train": {"lr": 0.01}}))
    plans = by_stage(plans)
    assert plans["split"].state == "current" and plans["split"].action == "skip"
    assert plans["radiomics"].state == "stale" and plans["train"].action == "run"


def test_changing_cv_reruns_split_and_every_stage_that_reads_the_folds(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path)
    seed = next(s for s in range(1, 50) if make_patient_folds(CASES, 2, 0.5, seed=s) != make_patient_folds(CASES, 2,
                                                                                                           0.5, seed=0))
    config = run.config({"cv": {"seed": seed}})
    plans, _ = plan_stages(config)
    plans = by_stage(plans)
    assert plans["split"].state == "stale" and plans["split"].reason == f"config changed: cv.seed (0 -> {seed})"
    assert plans["preprocess"].action == "skip" and plans["radiomics"].action == "skip"
    for stage in ("select", "train", "evaluate", "explain"):
        assert plans[stage].action == "run", stage
    # select samples its voxels with cv.seed, so it names that first (its definition records the seed it used)
    assert plans["select"].reason == f"config changed: cv.seed (0 -> {seed})"
    assert plans["train"].reason == "upstream changed: split, select"

    run_stages(config, ("preprocess", "split"))
    folds, meta = load_folds(layout.splits_file(run.run_dir))
    assert folds == make_patient_folds(CASES, n_folds=2, val_fraction=0.5, seed=seed) and meta["seed"] == seed
    assert _folds(run.run_dir) != _folds(tiny_run.run_dir)
    plans, _ = plan_stages(run.config({"cv": {"seed": seed, "val_fraction": 0.4}}))
    assert "cv.val_fraction (0.5 -> 0.4)" in by_stage(plans)["split"].reason


def test_split_needs_only_preprocess(tiny_run, tmp_path):
    assert SplitStage().needs_for(tiny_run.config()) == ("preprocess",)
    plans, _ = plan_stages(tiny_run.config(RULE_ONLY))
    plans = by_stage(plans)
    for stage in ("radiomics", "select", "explain"):
        assert (plans[stage].action, plans[stage].state) == ("off", "not used"), stage
    assert "densest_inhale" in plans["radiomics"].reason and "densest_inhale" in plans["explain"].reason
    assert plans["preprocess"].state == plans["split"].state == "current"
    assert plans["train"].stage.needs_for(tiny_run.config(RULE_ONLY)) == ("preprocess", "split")
    assert set(plans["train"].definition["upstream"]) == {"preprocess", "split"}

    # without any radiomics or selection on disk, the rule is trained on the same folds and scored
    run = tiny_run.copy(tmp_path)
    shutil.rmtree(run.run_dir / "radiomics")
    shutil.rmtree(run.run_dir / "select")
    plans, messages = run_stages(run.config(RULE_ONLY))
    actions = {plan.stage.name: plan.action for plan in plans}
    assert actions == {"preprocess": "skip", "split": "skip", "radiomics": "off", "select": "off", "train": "run",
                       "evaluate": "run", "explain": "off"}
    assert not (run.run_dir / "radiomics").exists() and not (run.run_dir / "select").exists()
    assert _folds(run.run_dir) == _folds(tiny_run.run_dir)
    table2 = (run.run_dir / "evaluate" / "table2.csv").read_text().splitlines()
    assert len(table2) == 2 and table2[1].startswith("densest_inhale,4,")
    folds, _ = load_folds(layout.splits_file(run.run_dir))
    for fold in folds:
        result = json.loads(layout.fold_result_file(run.run_dir, "densest_inhale", fold.index).read_text())
        assert result["test"] == fold.test
        for case in fold.test:
            assert layout.prediction_file(run.run_dir, "densest_inhale", case).is_file()
