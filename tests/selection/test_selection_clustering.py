"""Clustering against scipy (cophenet) and scikit-learn (silhouette) and a planted block structure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform
from sklearn.metrics import adjusted_rand_score, silhouette_score

from vent.errors import ConfigError, DataError
from vent.selection import cluster_features, correlation_distance


def _block_correlation(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of 13 features built from 4 latent factors (3 features each) plus one independent feature."""
    rng = np.random.default_rng(seed)
    n = 20000
    factors = rng.normal(size=(n, 4))
    columns, truth = [], []
    for k in range(4):
        for _ in range(3):
            sign = rng.choice([-1.0, 1.0])  # anti-correlated features belong together too (distance 1 - |r|)
            columns.append(sign * factors[:, k] + 0.05 * rng.normal(size=n))
            truth.append(k)
    columns.append(rng.normal(size=n))
    truth.append(4)
    return np.corrcoef(np.stack(columns, axis=1), rowvar=False), np.array(truth)


def test_recovers_planted_blocks():
    corr, truth = _block_correlation()
    result = cluster_features(corr)
    assert result.n_clusters == 5
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert result.cophenetic_cc > 0.75
    assert result.silhouette > 0.9


@pytest.mark.parametrize("linkage", ["average", "complete", "single", "weighted"])
def test_cophenetic_and_silhouette_equal_scipy_and_sklearn(linkage):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(400, 9)) @ rng.normal(size=(9, 9))
    corr = np.corrcoef(data, rowvar=False)
    # scikit-learn's convention (singletons score 0) and no guard: the plain best-silhouette cut.
    result = cluster_features(
        corr, linkage=linkage, cutoffs=np.linspace(0.05, 0.95, 19), singleton="zero", min_clusters=2, max_clusters=None
    )

    distance = 1.0 - np.abs(corr)
    np.fill_diagonal(distance, 0.0)
    condensed = squareform(distance, checks=False)
    reference_z = hierarchy.linkage(condensed, method=linkage)
    np.testing.assert_allclose(result.cophenetic_cc, hierarchy.cophenet(reference_z, condensed)[0], atol=1e-12)
    for cutoff, n_clusters, silhouette in result.sweep:
        labels = hierarchy.fcluster(reference_z, t=cutoff, criterion="distance")
        assert n_clusters == labels.max()
        if silhouette is None:
            assert n_clusters in (1, 9)
        else:
            np.testing.assert_allclose(silhouette, silhouette_score(distance, labels, metric="precomputed"),
                                       atol=1e-12)
    valid = [s for _, _, s in result.sweep if s is not None]
    assert result.silhouette == max(valid)
    assert adjusted_rand_score(hierarchy.fcluster(reference_z, t=result.cutoff, criterion="distance"),
                               result.labels) == 1.0


def test_distance_is_one_minus_absolute_correlation():
    corr = np.array([[1.0, -0.9, 0.2], [-0.9, 1.0, 0.0], [0.2, 0.0, 1.0]])
    np.testing.assert_allclose(correlation_distance(corr), [[0, 0.1, 0.8], [0.1, 0, 1.0], [0.8, 1.0, 0]])


def test_bad_inputs_raise_user_errors():
    corr, _ = _block_correlation()
    with pytest.raises(ConfigError, match="ward"):
        cluster_features(corr, linkage="ward")
    with pytest.raises(ConfigError, match="cut-off"):
        cluster_features(corr, cutoffs=[0.999])  # one cluster only
    with pytest.raises(DataError, match="square"):
        cluster_features(corr[:3])
    with pytest.raises(DataError, match="NaN"):
        cluster_features(np.full((4, 4), np.nan))
