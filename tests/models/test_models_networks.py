"""Tests of the model registry and architectures (vent.models, vent.models.networks)."""

from __future__ import annotations

import math

import pytest
import torch

from vent.errors import ConfigError, DataError
from vent.models import MODEL_NAMES, ProbabilityModel, build_model, model_input_kind
from vent.models.networks import sinusoidal_positional_encoding
from vent.models.registry import REGISTRY, get_spec

NETWORKS = tuple(spec.name for spec in REGISTRY if spec.builder is not None and spec.family == "sequence")
"""The sequence networks (B, T, F) -> (B,); the volume networks are tested in test_models_volume_networks.py."""
"""The registry entries that have a network to build (a rule such as densest_inhale has none)."""

N_STEPS = 10
N_FEATURES = 7


def _n_inputs(name: str) -> int:
    return 1 if model_input_kind(name) == "raw" else N_FEATURES


def test_registry_names_and_input_kinds() -> None:
    assert MODEL_NAMES == (
        "lstm", "bilstm", "transformer", "lstm_raw", "rf", "lstm_regress", "unet", "unetpp", "resunet", "ctvi_jac",
        "ctvi_hu", "densest_inhale",
    )
    kinds = {n: model_input_kind(n) for n in MODEL_NAMES}
    assert [n for n, k in kinds.items() if k == "radiomics"] == ["lstm", "bilstm", "transformer", "lstm_regress"]
    assert [n for n, k in kinds.items() if k == "raw"] == ["lstm_raw"]
    assert NETWORKS == ("lstm", "bilstm", "transformer", "lstm_raw", "lstm_regress")
    assert [n for n in MODEL_NAMES if not get_spec(n).learns] == ["ctvi_jac", "ctvi_hu", "densest_inhale"]


def test_a_method_without_a_network_cannot_be_built() -> None:
    with pytest.raises(ConfigError, match="'densest_inhale' has no network"):
        build_model("densest_inhale", N_FEATURES, N_STEPS)


def test_unknown_model_name_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'bilstm'"):
        build_model("bilstn", N_FEATURES, N_STEPS)
    with pytest.raises(ConfigError, match="unknown model"):
        model_input_kind("cnn")


def test_unknown_parameter_and_raw_input_width_are_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown parameter"):
        build_model("lstm", N_FEATURES, N_STEPS, hiden=(4,))
    with pytest.raises(ConfigError, match="n_inputs must be 1 to 4"):
        build_model("lstm_raw", 5, N_STEPS)
    build_model("lstm_raw", 3, N_STEPS)  # the raw intensity plus two lung-edge channels
    with pytest.raises(ConfigError, match="divisible"):
        build_model("transformer", N_FEATURES, N_STEPS, d_model=30, n_heads=4)


@pytest.mark.parametrize("name", NETWORKS)
def test_every_model_maps_batch_to_logits(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, _n_inputs(name), N_STEPS)
    x = torch.randn(5, N_STEPS, _n_inputs(name))
    logits = model(x)
    assert logits.shape == (5,)
    assert logits.dtype == torch.float32
    defaults = get_spec(name).params().model_dump()  # the spec records every parameter, defaults included
    assert model.spec == {"name": name, "n_inputs": _n_inputs(name), "n_steps": N_STEPS, "params": defaults}
    rebuilt = build_model(model.spec["name"], model.spec["n_inputs"], model.spec["n_steps"], **model.spec["params"])
    assert rebuilt.spec == model.spec
    model.eval()
    probabilities = ProbabilityModel(model)(x)
    torch.testing.assert_close(probabilities, torch.sigmoid(model(x)))
    assert torch.all((probabilities > 0) & (probabilities < 1))


def test_wrong_feature_count_raises_data_error() -> None:
    model = build_model("lstm", N_FEATURES, N_STEPS)
    with pytest.raises(DataError, match="shape"):
        model(torch.randn(2, N_STEPS, N_FEATURES + 1))


@pytest.mark.parametrize("name", ["lstm", "lstm_raw"])
def test_lstm_stack_has_the_study_layer_sizes(name: str) -> None:
    model = build_model(name, _n_inputs(name), N_STEPS)
    layers = list(model.lstm_layers)
    assert [layer.hidden_size for layer in layers] == [128, 64, 32, 16, 8]
    assert [layer.input_size for layer in layers] == [_n_inputs(name), 128, 64, 32, 16]
    assert all(layer.num_layers == 1 and not layer.bidirectional for layer in layers)
    assert (model.head.in_features, model.head.out_features) == (8, 1)


def test_bilstm_concatenates_both_directions() -> None:
    torch.manual_seed(1)
    model = build_model("bilstm", N_FEATURES, N_STEPS).eval()
    layers = list(model.lstm_layers)
    assert [layer.hidden_size for layer in layers] == [128, 64, 32, 16, 8]
    assert all(layer.bidirectional for layer in layers)
    assert [layer.input_size for layer in layers] == [N_FEATURES, 256, 128, 64, 32]
    assert model.head.in_features == 16
    # Recompute the last layer by hand: the encoding must be [forward output at the last phase,
    # backward output at the first phase] of the last layer's output sequence.
    x = torch.randn(3, N_STEPS, N_FEATURES)
    with torch.no_grad():
        sequence = x
        for layer in layers:
            sequence, _ = layer(sequence)
        expected = torch.cat([sequence[:, -1, :8], sequence[:, 0, 8:]], dim=1)
        torch.testing.assert_close(model.encode(x), expected)
        # The backward half sees the first phase last, so it must react to a change at phase 0 ...
        changed = x.clone()
        changed[:, 0] += 1.0
        assert not torch.allclose(model.encode(changed)[:, 8:], expected[:, 8:])


def test_transformer_structure() -> None:
    model = build_model("transformer", N_FEATURES, N_STEPS)
    assert len(model.blocks) == 4
    assert all(block.self_attn.num_heads == 4 for block in model.blocks)
    assert model.head.in_features == 64
    custom = build_model("transformer", N_FEATURES, N_STEPS, d_model=32, n_heads=2, n_blocks=3)
    assert len(custom.blocks) == 3 and custom.blocks[0].self_attn.num_heads == 2
    assert custom.head.in_features == 32
    with pytest.raises(DataError, match="phases"):
        model(torch.randn(2, N_STEPS + 1, N_FEATURES))


def test_transformer_blocks_have_residual_connections() -> None:
    """With attention and feed-forward weights zeroed, a residual block returns LayerNorm(LayerNorm(x)), not 0."""
    model = build_model("transformer", N_FEATURES, N_STEPS, dropout=0.0).eval()
    block = model.blocks[0]
    with torch.no_grad():
        for module in (block.self_attn, block.linear1, block.linear2):
            for parameter in module.parameters():
                parameter.zero_()
        tokens = torch.randn(2, N_STEPS, 64)
        expected = block.norm2(block.norm1(tokens))
        torch.testing.assert_close(block(tokens), expected)
        assert expected.abs().mean() > 0.5


def test_positional_encoding_matches_the_formula() -> None:
    n_steps, d_model = 10, 6
    encoding = sinusoidal_positional_encoding(n_steps, d_model)
    for t in range(n_steps):
        for i in range(d_model):
            angle = t / 10000 ** (2 * (i // 2) / d_model)
            expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert encoding[t, i].item() == pytest.approx(expected, abs=1e-6)
    model = build_model("transformer", N_FEATURES, N_STEPS)
    assert not model.positional_encoding.requires_grad
    assert "positional_encoding" not in dict(model.named_parameters())
