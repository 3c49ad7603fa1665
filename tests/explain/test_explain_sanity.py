"""Deletion check and curve: removing the planted sequence must hurt the AUC more than removing random ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vent.errors import ConfigError, DataError
from vent.explain import (
    deletion_check,
    deletion_curve,
    deletion_ks,
    probability_forward,
    sequence_importance,
    study_temporal_saliency,
)


def test_deletion_ranks_planted_sequence_as_most_harmful(planted):
    forward = probability_forward(planted.model)
    importance = sequence_importance(study_temporal_saliency(forward, planted.x_test[:64]))
    result = deletion_check(forward, planted.x_test, planted.y_test, importance, k=1, n_random=10, seed=0)
    assert result["top_k"] == [planted.sequence]
    reference_auc = roc_auc_score(planted.y_test, forward(planted.x_test).detach().numpy())
    assert result["auc"] == pytest.approx(reference_auc, abs=1e-12)
    assert result["auc"] > 0.95
    # Without the only informative sequence the model is at chance; random other sequences barely matter.
    assert result["top_k_auc"] < 0.65
    assert result["top_k_drop"] > max(result["random_drops"])
    assert len(result["random_aucs"]) == 10
    # A wrong ranking (planted sequence last) gives a small drop.
    wrong = deletion_check(forward, planted.x_test, planted.y_test, -importance, k=1)
    assert wrong["top_k_drop"] < 0.05


def test_deletion_check_rejects_bad_arguments(planted):
    forward = probability_forward(planted.model)
    x, y = planted.x_test, planted.y_test
    importance = np.ones(x.shape[2])
    with pytest.raises(ConfigError, match="k must"):
        deletion_check(forward, x, y, importance, k=x.shape[2])
    with pytest.raises(DataError, match="both classes"):
        deletion_check(forward, x, np.zeros(len(y)), importance, k=1)
    with pytest.raises(DataError, match="importance"):
        deletion_check(forward, x, y, importance[:2], k=1)


def test_deletion_curve_top_k_lies_below_random(planted):
    forward = probability_forward(planted.model)
    importance = sequence_importance(study_temporal_saliency(forward, planted.x_test[:64]))
    ks = list(range(planted.x_test.shape[2]))
    curve = deletion_curve(forward, planted.x_test, planted.y_test, importance, ks, n_random=10, seed=0)
    base = roc_auc_score(planted.y_test, forward(planted.x_test).detach().numpy())
    assert curve["ks"] == ks and curve["top_order"][0] == planted.sequence
    assert curve["top_auc"][0] == curve["auc"] == pytest.approx(base, abs=1e-12)  # k = 0: nothing removed
    assert curve["random_auc_mean"][0] == curve["auc"] and curve["random_auc_sd"][0] == 0.0
    assert curve["top_auc"][1] < curve["random_auc_mean"][1]
    assert curve["top_auc"][1] <= curve["random_auc_p5"][1]
    # the random subsets of k = 1 are those of the check with k = 1 (nothing is drawn for k = 0)
    check = deletion_check(forward, planted.x_test, planted.y_test, importance, k=1, n_random=10, seed=0)
    assert curve["random_aucs"][1] == check["random_aucs"] and curve["top_auc"][1] == check["top_k_auc"]
    for name in ("top_auc", "random_auc_mean", "random_auc_sd", "random_auc_p5", "random_auc_p95"):
        assert len(curve[name]) == len(ks)
    assert [len(aucs) for aucs in curve["random_aucs"]] == [10] * len(ks)
    for k, aucs in zip(ks, curve["random_aucs"]):
        assert curve["random_auc_mean"][k] == pytest.approx(np.mean(aucs))
        assert curve["random_auc_p5"][k] <= curve["random_auc_mean"][k] <= curve["random_auc_p95"][k]
    json.dumps(curve)  # JSON-serialisable as it is


def test_deletion_curve_points_agree_with_the_check(planted):
    forward = probability_forward(planted.model)
    x, y = planted.x_test, planted.y_test
    importance = np.arange(x.shape[2], dtype=float)
    check = deletion_check(forward, x, y, importance, k=2, n_random=4, seed=3)
    curve = deletion_curve(forward, x, y, importance, [2, 6], n_random=4, seed=3)
    assert check["top_k_auc"] == curve["top_auc"][0] and check["random_aucs"] == curve["random_aucs"][0]
    assert check["top_k"] == curve["top_order"][:2] == [5, 4]
    # removing every sequence leaves a constant input: chance AUC for the ranking and every random subset
    assert curve["top_auc"][1] == pytest.approx(0.5) and curve["random_auc_sd"][1] == pytest.approx(0.0)
    # the same zeroing by hand
    removed = x.clone()
    removed[:, :, [5, 4]] = 0.0
    assert curve["top_auc"][0] == pytest.approx(roc_auc_score(y, forward(removed).detach().numpy()), abs=1e-12)


def test_deletion_curve_rejects_bad_ks(planted):
    forward = probability_forward(planted.model)
    x, y = planted.x_test, planted.y_test
    importance = np.ones(x.shape[2])
    for ks in ([], [-1], [x.shape[2] + 1]):
        with pytest.raises(ConfigError, match="ks must"):
            deletion_curve(forward, x, y, importance, ks)
    with pytest.raises(DataError, match="importance"):
        deletion_curve(forward, x, y, importance[:2], [0])


def test_deletion_ks_are_capped_and_keep_both_ends():
    assert deletion_ks(1, 12) == [0]
    assert deletion_ks(5, 12) == [0, 1, 2, 3, 4]
    many = deletion_ks(40, 12)
    assert len(many) == 12 and many[0] == 0 and many[-1] == 39 and many == sorted(set(many))
    with pytest.raises(ConfigError):
        deletion_ks(0, 12)
