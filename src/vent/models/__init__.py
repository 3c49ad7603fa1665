"""Sequence models of the study and their registry.

One registry maps a model name to its builder and its input kind:

============  ==============================================  ===========
name          model                                           input kind
============  ==============================================  ===========
lstm          proposed 5-layer LSTM (128-64-32-16-8)           radiomics
bilstm        same stack, bidirectional, states concatenated  radiomics
transformer   Transformer encoder (4 blocks, 4 heads)          radiomics
lstm_raw      LSTM stack on raw 4DCT intensities (T x 1)      raw
============  ==============================================  ===========

Every model maps ``x`` of shape ``(B, T, n_inputs)`` float32 to ``(B,)`` logits; see :mod:`vent.models.networks`.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from torch import nn

from vent.errors import ConfigError
from vent.io.artifacts import EDGE_CHANNELS
from vent.models.networks import (
    DEFAULT_HIDDEN,
    LSTMClassifier,
    ProbabilityModel,
    TransformerClassifier,
    count_parameters,
)

MODEL_NAMES = ("lstm", "bilstm", "transformer", "lstm_raw")

InputKind = Literal["radiomics", "raw"]

_INPUT_KIND: dict[str, InputKind] = {
    "lstm": "radiomics",
    "bilstm": "radiomics",
    "transformer": "radiomics",
    "lstm_raw": "raw",
}


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        close = difflib.get_close_matches(str(name), MODEL_NAMES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}.{hint}")


def model_input_kind(name: str) -> InputKind:
    """Return which input a model reads: ``"radiomics"`` (T x F features) or ``"raw"`` (T x 1 CT values in HU).

    Args:
        name: One of :data:`MODEL_NAMES`.

    Raises:
        ConfigError: ``name`` is not a known model.
    """
    _check_name(name)
    return _INPUT_KIND[name]


def _build_lstm(n_inputs: int, n_steps: int, bidirectional: bool, **params: Any) -> nn.Module:
    del n_steps  # recurrent models accept any number of phases
    hidden = params.pop("hidden", DEFAULT_HIDDEN)
    if isinstance(hidden, int):
        hidden = (hidden,)
    hidden = tuple(hidden)
    if not hidden or any(int(h) < 1 for h in hidden):
        raise ConfigError(f"model parameter 'hidden' must be a non-empty list of positive cell counts; got {hidden}")
    dropout = float(params.pop("dropout", 0.0))
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model parameter 'dropout' must be in [0, 1); got {dropout}")
    return LSTMClassifier(n_inputs, hidden=hidden, bidirectional=bidirectional, dropout=dropout)


def _build_transformer(n_inputs: int, n_steps: int, **params: Any) -> nn.Module:
    d_model = int(params.pop("d_model", 64))
    n_heads = int(params.pop("n_heads", 4))
    n_blocks = int(params.pop("n_blocks", 4))
    dim_feedforward = int(params.pop("dim_feedforward", 2 * d_model))
    dropout = float(params.pop("dropout", 0.1))
    if min(d_model, n_heads, n_blocks, dim_feedforward) < 1:
        raise ConfigError(
            "model parameters d_model, n_heads, n_blocks and dim_feedforward must be positive; got "
            f"{d_model}, {n_heads}, {n_blocks}, {dim_feedforward}"
        )
    if d_model % n_heads:
        raise ConfigError(f"model parameter 'd_model' ({d_model}) must be divisible by 'n_heads' ({n_heads})")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model parameter 'dropout' must be in [0, 1); got {dropout}")
    return TransformerClassifier(
        n_inputs,
        n_steps,
        d_model=d_model,
        n_heads=n_heads,
        n_blocks=n_blocks,
        dim_feedforward=dim_feedforward,
        dropout=dropout,
    )


_ALLOWED_PARAMS = {
    "lstm": {"hidden", "dropout"},
    "bilstm": {"hidden", "dropout"},
    "lstm_raw": {"hidden", "dropout"},
    "transformer": {"d_model", "n_heads", "n_blocks", "dim_feedforward", "dropout"},
}


def build_model(name: str, n_inputs: int, n_steps: int, **params: Any) -> nn.Module:
    """Build a freshly initialised model from the registry.

    Seed torch (``torch.manual_seed``) before calling for reproducible initial weights.

    Args:
        name: One of :data:`MODEL_NAMES`.
        n_inputs: Features per phase F (1 for ``lstm_raw``).
        n_steps: Number of breathing phases T.
        **params: Architecture parameters. LSTM models: ``hidden`` (cells per layer, default (128, 64, 32, 16, 8)),
            ``dropout`` (between layers, default 0). Transformer: ``d_model`` (64), ``n_heads`` (4), ``n_blocks``
            (4), ``dim_feedforward`` (2 * d_model), ``dropout`` (0.1).

    Returns:
        A module mapping (B, T, n_inputs) float32 to (B,) logits. Its ``spec`` attribute holds the arguments it was
        built with (``{"name", "n_inputs", "n_steps", "params"}``), enough to rebuild it with
        ``build_model(spec["name"], spec["n_inputs"], spec["n_steps"], **spec["params"])``.

    Raises:
        ConfigError: Unknown name or parameter, or an invalid value.
    """
    _check_name(name)
    if int(n_inputs) < 1 or int(n_steps) < 1:
        raise ConfigError(f"build_model({name!r}): n_inputs and n_steps must be >= 1; got {n_inputs}, {n_steps}")
    n_edge = len(EDGE_CHANNELS)
    if model_input_kind(name) == "raw" and not 1 <= int(n_inputs) <= 1 + n_edge:
        raise ConfigError(
            f"model {name!r} reads raw CT intensities (one value per phase, plus up to {n_edge} lung-edge "
            f"channels from train.edge_inputs), so n_inputs must be 1 to {1 + n_edge}; got {n_inputs}"
        )
    unknown = sorted(set(params) - _ALLOWED_PARAMS[name])
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {unknown} for model {name!r}; allowed: {sorted(_ALLOWED_PARAMS[name])}"
        )
    spec = {"name": name, "n_inputs": int(n_inputs), "n_steps": int(n_steps), "params": dict(params)}
    remaining = dict(params)
    if name == "transformer":
        model = _build_transformer(int(n_inputs), int(n_steps), **remaining)
    else:
        model = _build_lstm(int(n_inputs), int(n_steps), bidirectional=(name == "bilstm"), **remaining)
    model.spec = spec
    return model


__all__ = [
    "MODEL_NAMES",
    "InputKind",
    "LSTMClassifier",
    "ProbabilityModel",
    "TransformerClassifier",
    "build_model",
    "count_parameters",
    "model_input_kind",
]
