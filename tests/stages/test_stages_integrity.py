"""An artifact is current only when its content verifies (vent.io.seals): a truncated or swapped case file, a
truncated or deleted model.pt are found by the plan (`vent status`) and recomputed by the next run, with the same
values as before."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import torch

from tinyrun import by_stage, plan_stages, run_stages
from vent.io import layout

THROUGH_TRAIN = ("preprocess", "split", "radiomics", "select", "train")


def _features(path):
    with h5py.File(path, "r") as handle:
        return handle["features"][...], handle.attrs["case_id"]


def _weights(run_dir, row, fold):
    return torch.load(layout.model_file(run_dir, row, fold), map_location="cpu", weights_only=False)["state_dict"]


def _truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def test_truncated_and_swapped_case_files_are_recomputed(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path)
    cases = sorted(p.stem for p in layout.stage_dir(run.run_dir, "radiomics").glob("*.h5"))
    first, second = (layout.case_file(run.run_dir, "radiomics", case) for case in cases[:2])
    expected = _features(first)[0]
    _truncate(first)
    shutil.copy(second, layout.case_file(run.run_dir, "radiomics", cases[2]))  # another case's file, no seal
    shutil.copy(layout.case_file(run.run_dir, "preprocess", cases[1]),
                layout.case_file(run.run_dir, "preprocess", cases[0]))  # bytes and seal: the case id tells
    seal = layout.case_file(run.run_dir, "preprocess", cases[1])
    shutil.copy(seal.with_name(f".{seal.name}.seal.json"),
                layout.case_file(run.run_dir, "preprocess", cases[0]).with_name(f".{cases[0]}.h5.seal.json"))

    plans = by_stage(plan_stages(run.config(), THROUGH_TRAIN)[0])
    assert plans["preprocess"].state == "stale" and f"holds case '{cases[1]}'" in plans["preprocess"].reason
    assert plans["radiomics"].state == "stale" and "truncated or replaced" in plans["radiomics"].reason

    _, messages = run_stages(run.config(), ("preprocess", "split", "radiomics"))
    assert "[preprocess] 3 case(s) already done, 1 to compute" in messages
    assert any("case(s) already done" in m and "to compute" in m for m in messages if m.startswith("[radiomics]"))
    features, case_id = _features(first)
    assert case_id == cases[0] and np.array_equal(features, expected, equal_nan=True)
    assert _features(layout.case_file(run.run_dir, "radiomics", cases[2]))[1] == cases[2]
    assert all(p.state == "current" for p in plan_stages(run.config(), THROUGH_TRAIN)[0])


def test_truncated_or_deleted_model_is_trained_again_even_when_only_forced(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path)
    before = {fold: _weights(run.run_dir, "lstm", fold) for fold in (0, 1)}
    _truncate(layout.model_file(run.run_dir, "lstm", 0))
    layout.model_file(run.run_dir, "lstm", 1).unlink()

    plans = by_stage(plan_stages(run.config(), THROUGH_TRAIN)[0])
    assert plans["train"].state == "stale" and "lstm/fold_" in plans["train"].reason

    _, messages = run_stages(run.config(), THROUGH_TRAIN, only="train", force=True)
    assert any(m.startswith("[train] lstm_raw fold 0: kept") for m in messages)  # untouched folds are kept
    assert not any(m.startswith("[train] lstm fold") and "kept" in m for m in messages)
    for fold in (0, 1):
        after = _weights(run.run_dir, "lstm", fold)
        for key in before[fold]:
            torch.testing.assert_close(after[key], before[fold][key], rtol=0, atol=0)  # same seed, same weights
    assert all(p.state == "current" for p in plan_stages(run.config(), THROUGH_TRAIN)[0])
