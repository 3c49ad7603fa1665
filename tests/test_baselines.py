"""The no-learning densest-at-inhale rule."""

import numpy as np
import pytest

from vent.baselines import densest_at_inhale
from vent.metrics import auc_roc


def test_calls_the_densest_fraction_at_inhale():
    rng = np.random.default_rng(0)
    hu = rng.normal(-800, 50, size=(1000, 5))
    score, threshold = densest_at_inhale(hu, inhale_phase=2, fraction=0.3)
    called = score >= threshold
    assert called.mean() == pytest.approx(0.3, abs=0.002)
    assert hu[called, 2].min() >= hu[~called, 2].max()
    # the AUC of the score is the AUC of the inhale HU itself (rank transform)
    labels = (hu[:, 2] + rng.normal(0, 50, 1000) > -780).astype(int)
    assert auc_roc(labels, score) == pytest.approx(auc_roc(labels, (hu[:, 2] + 1000) / 1000), abs=1e-12)


def test_other_phases_do_not_matter():
    hu = np.zeros((4, 3))
    hu[:, 1] = [1, 2, 3, 4]
    hu[:, 0] = [9, 8, 7, 6]
    score, threshold = densest_at_inhale(hu, inhale_phase=1, fraction=0.25)
    assert (score >= threshold).tolist() == [False, False, False, True]
