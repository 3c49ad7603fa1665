"""Deletion check: removing the planted sequence must hurt the AUC more than removing random ones."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vent.errors import ConfigError, DataError
from vent.explain import deletion_check, probability_forward, sequence_importance, study_temporal_saliency


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
