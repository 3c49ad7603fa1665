"""The key-sequence rule: each rule on hand-made vectors, edge cases, its config, and the planted-signal check."""

from __future__ import annotations

import inspect
import typing

import numpy as np
import pytest
import torch

from vent.config import KeySequenceConfig, ReportConfig
from vent.errors import ConfigError, DataError
from vent.explain import explain_sample, relative_map
from vent.explain.key_sequences import DEFAULT_RULE, KEY_SEQUENCE_RULES, KeySequences, pick_key_sequences


def test_largest_gap_cuts_at_the_largest_ratio_gap() -> None:
    # sorted: 4.0 (2), 3.0 (0), 0.5 (3), 0.4 (1), 0.1 (4); log gaps 0.29, 1.79, 0.22, 1.39: cut after 2 kept
    key = pick_key_sequences(np.array([3.0, 0.4, 4.0, 0.5, 0.1]), max_share=1.0)
    assert key == KeySequences("largest_gap", pytest.approx(np.sqrt(3.0 * 0.5)), (2, 0), key.description)
    assert "largest ratio gap" in key.description and "1.22" in key.description and "3 to 0.5" in key.description


def test_largest_gap_is_a_ratio_gap_not_a_difference() -> None:
    # differences: 10 -> 6 is the largest (4), but 2 -> 0.2 is the largest ratio (10x)
    key = pick_key_sequences(np.array([10.0, 6.0, 2.0, 0.2]), max_share=1.0)
    assert key.picked == (0, 1, 2)


def test_largest_gap_keeps_between_min_count_and_max_share() -> None:
    importance = np.array([8.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])  # largest gap after the first
    assert pick_key_sequences(importance).picked == (0,)
    kept = pick_key_sequences(importance, min_count=3)
    assert 3 <= len(kept.picked) <= 4 and kept.picked == tuple(range(len(kept.picked)))  # max = floor(0.5 * 8) = 4
    # the largest gap of all (0.4 -> 0.01, after 4) lies beyond max_share: the best cut keeping 1..2 of 5 wins
    assert pick_key_sequences(np.array([1.0, 0.5, 0.45, 0.4, 0.01]), max_share=0.5).picked == (0,)


def test_largest_gap_never_picks_non_positive_or_nan() -> None:
    importance = np.array([0.0, 2.0, np.nan, 1.5, -1.0, 0.0])
    key = pick_key_sequences(importance, max_share=1.0)
    assert set(key.picked) <= {1, 3}
    # two positives and min_count 2: no cut between positives is possible, both kept, threshold half the smaller
    both = pick_key_sequences(importance, min_count=2, max_share=1.0)
    assert both.picked == (1, 3) and both.threshold == pytest.approx(0.75)
    assert "all 2 of 5 ranked" in both.description  # NaN is not ranked; zeros and negatives are


def test_above_uniform_picks_more_than_a_uniform_share_capped() -> None:
    importance = np.array([1.2, 0.5, 3.0, 1.0, 2.0, 0.3])
    key = pick_key_sequences(importance, rule="above_uniform", max_share=1.0)
    assert key.picked == (2, 4, 0) and key.threshold == 1.0  # 1.0 itself is not above
    capped = pick_key_sequences(importance, rule="above_uniform", max_share=0.34)  # floor(0.34 * 6) = 2
    assert capped.picked == (2, 4) and "capped at the 2 largest" in capped.description


def test_top_k_picks_the_k_largest_and_draws_the_line_between() -> None:
    importance = np.array([0.2, 5.0, 0.8, 3.0, 0.1])
    key = pick_key_sequences(importance, rule="top_k", top_k=3)
    assert key.picked == (1, 3, 2)
    assert key.threshold == pytest.approx(np.sqrt(0.8 * 0.2)) and 0.2 < key.threshold < 0.8
    assert pick_key_sequences(importance, rule="top_k", top_k=10).picked == (1, 3, 2, 0, 4)  # capped at N


@pytest.mark.parametrize("rule", sorted(KEY_SEQUENCE_RULES))
def test_every_rule_handles_ties_zeros_and_a_single_sequence(rule: str) -> None:
    equal = pick_key_sequences(np.full(6, 1.0), rule=rule)
    assert all(0 <= i < 6 for i in equal.picked) and list(equal.picked) == sorted(equal.picked)  # ties: index order
    if rule == "largest_gap":
        assert equal.picked == (0,) and "tie" in equal.description
    zeros = pick_key_sequences(np.zeros(4), rule=rule)
    assert zeros.picked == () and np.isnan(zeros.threshold) and "No key sequences" in zeros.description
    single = pick_key_sequences(np.array([1.0]), rule=rule)
    assert single.picked == (() if rule == "above_uniform" else (0,))
    assert isinstance(single.description, str) and single.description.endswith(".")


def test_the_picked_indices_are_in_descending_importance() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        importance = rng.lognormal(size=12)
        for rule in KEY_SEQUENCE_RULES:
            picked = pick_key_sequences(importance, rule=rule, max_share=1.0).picked
            assert list(importance[list(picked)]) == sorted(importance[list(picked)], reverse=True)
            not_picked = np.delete(importance, list(picked))
            assert not picked or not_picked.size == 0 or importance[list(picked)].min() >= not_picked.max()


def test_an_unknown_rule_or_bad_parameter_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"report\.key_sequences\.rule = 'gap'.*'largest_gap', 'above_uniform'"):
        pick_key_sequences(np.ones(3), rule="gap")
    with pytest.raises(ConfigError, match=r"report\.key_sequences\.max_share"):
        pick_key_sequences(np.ones(3), max_share=0.0)
    with pytest.raises(ConfigError, match=r"report\.key_sequences\.top_k"):
        pick_key_sequences(np.ones(3), rule="top_k", top_k=0)
    with pytest.raises(DataError, match=r"shape \(N,\)"):
        pick_key_sequences(np.ones((2, 3)))


def test_config_defaults_and_choices_are_the_functions() -> None:
    config = ReportConfig().key_sequences
    defaults = {name: p.default for name, p in inspect.signature(pick_key_sequences).parameters.items()
                if p.kind is p.KEYWORD_ONLY}
    assert config.model_dump() == defaults and config.rule == DEFAULT_RULE
    assert set(typing.get_args(KeySequenceConfig.model_fields["rule"].annotation)) == set(KEY_SEQUENCE_RULES)
    chosen = KeySequenceConfig(rule="top_k", top_k=2)
    assert pick_key_sequences(np.array([1.0, 3.0, 2.0]), **chosen.model_dump()).picked == (1, 2)


# --- planted signal: two sequences of eight carry the label, with different strengths -------------------------------

N_PHASES, N_SEQUENCES = 5, 8
PLANTED = {1: (1.0, (1, 3)), 4: (0.6, (2, 4))}
"""Sequence -> (weight, phases) of its share of the label's signal."""


def _planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, N_PHASES, N_SEQUENCES, generator=torch.Generator().manual_seed(seed))
    signal = sum(weight * x[:, list(phases), sequence].sum(dim=1) for sequence, (weight, phases) in PLANTED.items())
    return x, (signal > 0).float()


def test_the_key_sequence_rule_picks_the_planted_sequences_on_planted_signal_data(make_tiny_lstm, train_tiny) -> None:
    """A tiny LSTM trained on the planted task (~2 s on one CPU thread), explained by the pipeline's functions."""
    x_train, y_train = _planted(2000, seed=1)
    x_test, _ = _planted(100, seed=2)
    model = train_tiny(make_tiny_lstm(0, n_sequences=N_SEQUENCES), x_train, y_train)
    result = explain_sample(model, x_test, method="study", n_steps=50)
    importance = relative_map(result.mean_map).mean(axis=0)  # as the explain stage computes a fold's importance
    key = pick_key_sequences(importance)
    assert set(key.picked) == set(PLANTED), (importance.round(3), key)
    assert key.picked == (1, 4)  # the stronger one first
