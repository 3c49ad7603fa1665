"""Singleton conventions of the silhouette, the study's operating point and the selection guard."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import silhouette_samples as sklearn_samples
from sklearn.metrics import silhouette_score

from vent.config import SelectConfig
from vent.errors import ConfigError, DataError
from vent.selection.clustering import (
    DEFAULT_MAX_CLUSTERS,
    DEFAULT_MAX_CUTOFF,
    DEFAULT_MIN_CLUSTERS,
    DEFAULT_SINGLETON,
    cluster_features,
    correlation_distance,
    silhouette,
    silhouette_samples,
)

N_FEATURES = 56


def _random_distance(rng: np.random.Generator, n: int) -> np.ndarray:
    upper = np.triu(rng.uniform(0.0, 1.0, size=(n, n)), 1)
    return upper + upper.T


def _random_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Labels with several singletons and at least one cluster of two (2 <= clusters <= n - 1)."""
    while True:
        labels = rng.integers(0, rng.integers(2, n), size=n)
        if 2 <= len(np.unique(labels)) <= n - 1:
            return labels * 7 + 3  # arbitrary, non-contiguous label values


@pytest.mark.parametrize("seed", range(8))
def test_zero_convention_equals_sklearn_and_the_others_follow_the_closed_form(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 60))
    distance = _random_distance(rng, n)
    labels = _random_labels(rng, n)
    s, singleton = silhouette_samples(distance, labels)
    np.testing.assert_allclose(s, sklearn_samples(distance, labels, metric="precomputed"), rtol=0, atol=1e-12)
    zero = silhouette(distance, labels, "zero")
    assert abs(zero - silhouette_score(distance, labels, metric="precomputed")) < 1e-12
    n_single = int(singleton.sum())
    assert n_single == sum(1 for k in np.unique(labels) if (labels == k).sum() == 1)
    assert abs(silhouette(distance, labels, "one") - (zero + n_single / n)) < 1e-12
    assert abs(silhouette(distance, labels, "exclude") - zero * n / (n - n_single)) < 1e-12


def test_duplicates_in_different_clusters_score_zero_like_sklearn():
    distance = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0.0]])
    labels = np.array([1, 2, 2, 1])  # a(i) = b(i) for every feature
    s, _ = silhouette_samples(distance, labels)
    np.testing.assert_allclose(s, sklearn_samples(distance, labels, metric="precomputed"), atol=1e-12)


def study_like_correlation(seed: int = 0) -> np.ndarray:
    """56 features: 18 tight pairs (|r| = 0.985) on a ring, plus 20 features unrelated to anything.

    Adjacent pairs are 0.0459 apart (1 - |r|), pairs k steps round the ring 0.0459 k^1.35 apart: a continuum with no
    structure coarser than the pairs. The 20 others are 0.7 - 1.0 from everything. Signs are random (d = 1 - |r|).
    At cut-off 0.01 every feature is alone (undefined); at 0.02 there are 18 pairs + 20 singletons = 38 clusters, and
    a pair member scores 1 - 0.015 / 0.0459 = 0.673, so s_one = (20 + 36 x 0.673) / 56 = 0.79 and
    s_zero = 36 x 0.673 / 56 = 0.433 (< 36 / 56 = 0.643, the bound for any 38-of-56 cut).
    """
    rng = np.random.default_rng(seed)
    n_pairs = 18
    distance = rng.uniform(0.7, 1.0, size=(N_FEATURES, N_FEATURES))
    ring = np.arange(n_pairs)
    steps = np.abs(ring[:, None] - ring[None, :])
    steps = np.minimum(steps, n_pairs - steps).astype(float)
    pair_of = np.repeat(ring, 2)
    paired = (0.0459 * steps**1.35)[pair_of][:, pair_of]
    paired[pair_of[:, None] == pair_of[None, :]] = 0.015
    distance[: 2 * n_pairs, : 2 * n_pairs] = paired
    distance = np.triu(distance, 1)
    distance = distance + distance.T
    signs = np.triu(rng.choice([-1.0, 1.0], size=(N_FEATURES, N_FEATURES)), 1)
    signs = signs + signs.T + np.eye(N_FEATURES)
    return signs * (1.0 - distance)


def test_study_operating_point_is_reached_at_the_default_settings():
    corr = study_like_correlation()
    result = cluster_features(corr)  # defaults: singletons "one", guard band 0.25 F .. 0.75 F
    assert result.singleton == "one"
    assert result.cutoff == 0.02
    assert result.n_clusters == 38 and result.n_singletons == 20
    assert result.silhouette == pytest.approx(0.79, abs=0.01)
    assert not result.guard["changed"]

    # The same cut under scikit-learn's convention can never reach the study's number.
    labels = result.labels
    distance = correlation_distance(corr)
    zero = silhouette(distance, labels, "zero")
    assert zero <= 36 / 56 + 1e-12
    assert zero == pytest.approx(silhouette_score(distance, labels, metric="precomputed"), abs=1e-12)
    assert result.by_convention["zero"]["silhouette"] <= 0.643
    one = result.by_convention["one"]
    assert one == {
        "cutoff": 0.02, "n_clusters": 38, "n_singletons": 20, "silhouette": result.silhouette, "selected": True,
        "unguarded": {"cutoff": 0.02, "n_clusters": 38, "silhouette": result.silhouette},
    }
    chosen = next(p for p in result.sweep_points if p.cutoff == 0.02)
    assert chosen.silhouette["zero"] == pytest.approx(zero, abs=1e-12)
    assert chosen.silhouette["one"] == pytest.approx(zero + 20 / 56, abs=1e-12)


def test_config_defaults_match_the_clustering_defaults():
    settings = SelectConfig()
    assert settings.singleton_silhouette == DEFAULT_SINGLETON == "one"
    assert settings.min_clusters == DEFAULT_MIN_CLUSTERS
    assert settings.max_clusters == DEFAULT_MAX_CLUSTERS
    assert settings.max_cutoff == DEFAULT_MAX_CUTOFF


def two_block_correlation(seed: int = 0) -> np.ndarray:
    """Two groups of 28 loosely related features (1 - |r| in 0.3 - 0.6), 0.9 - 1.0 apart: best zero-silhouette = 2."""
    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1], N_FEATURES // 2)
    same = group[:, None] == group[None, :]
    distance = np.where(same, rng.uniform(0.3, 0.6, (N_FEATURES,) * 2), rng.uniform(0.9, 1.0, (N_FEATURES,) * 2))
    distance = np.triu(distance, 1)
    return 1.0 - (distance + distance.T)


def test_guard_stops_the_collapse_to_two_clusters(caplog):
    corr = two_block_correlation()
    unguarded = cluster_features(corr, singleton="zero", min_clusters=2, max_clusters=None)
    assert unguarded.n_clusters == 2  # the collapse: 2 of 56 features would be kept
    with caplog.at_level(logging.WARNING, logger="vent.selection.clustering"):
        guarded = cluster_features(corr, singleton="zero")
    floor = int(np.ceil(DEFAULT_MIN_CLUSTERS * N_FEATURES))
    assert guarded.guard["min_clusters"] == floor == 14
    assert floor <= guarded.n_clusters <= 42
    assert guarded.guard["changed"] and guarded.guard["bounded_by"] == ["min_clusters"]
    assert guarded.guard["unguarded"] == {
        "cutoff": unguarded.cutoff, "n_clusters": 2, "silhouette": unguarded.silhouette
    }
    assert "selection guard changed the cut-off" in caplog.text and "2 clusters" in caplog.text
    # The chosen cut is the best one inside the band.
    eligible = [p.silhouette["zero"] for p in guarded.sweep_points if p.eligible and p.silhouette["zero"] is not None]
    assert guarded.silhouette == max(eligible)
    assert guarded.by_convention["zero"]["unguarded"]["n_clusters"] == 2
    # At the default convention the selection is inside the band as well.
    default = cluster_features(corr)
    assert floor <= default.n_clusters <= 42


def test_ceiling_and_max_cutoff_rules():
    corr = two_block_correlation()
    unguarded = cluster_features(corr, singleton="one", min_clusters=2, max_clusters=None)
    assert unguarded.n_clusters > 42  # "one" rewards singletons: near-F cuts win
    capped = cluster_features(corr, singleton="one")
    assert capped.n_clusters <= 42 and capped.guard["bounded_by"] == ["max_clusters"]

    distance_bound = cluster_features(corr, singleton="zero", min_clusters=2, max_clusters=None, max_cutoff=0.4)
    assert distance_bound.cutoff <= 0.4 and distance_bound.guard["bounded_by"] == ["max_cutoff"]
    assert all(not p.eligible for p in distance_bound.sweep_points if p.cutoff > 0.4)

    counted = cluster_features(corr, singleton="zero", min_clusters=20, max_clusters=30)
    assert 20 <= counted.n_clusters <= 30 and counted.guard["min_clusters"] == 20


def test_bad_conventions_and_guards_raise_user_errors():
    corr = two_block_correlation()
    with pytest.raises(ConfigError, match="singleton_silhouette"):
        cluster_features(corr, singleton="half")
    with pytest.raises(ConfigError, match="min_clusters"):
        cluster_features(corr, min_clusters=2.5)
    with pytest.raises(ConfigError, match="min_clusters"):
        cluster_features(corr, min_clusters=0)
    with pytest.raises(ConfigError, match="below"):
        cluster_features(corr, min_clusters=0.6, max_clusters=0.5)
    with pytest.raises(ConfigError, match="between"):
        cluster_features(corr, cutoffs=[0.7, 0.8, 0.9])  # only 2 clusters there, below the floor of 14
    with pytest.raises(ConfigError, match="max_cutoff"):
        cluster_features(corr, max_cutoff=0.0)
    with pytest.raises(DataError, match="clusters"):
        silhouette(np.zeros((3, 3)), np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="singleton_silhouette"):  # pydantic's ValidationError
        SelectConfig(singleton_silhouette="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="whole"):
        SelectConfig(min_clusters=2.5)
