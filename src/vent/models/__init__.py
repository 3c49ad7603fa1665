"""Networks of the study, built from the method registry (:mod:`vent.models.registry`).

Every network maps ``x`` of shape ``(B, T, n_inputs)`` float32 to ``(B,)`` logits; see :mod:`vent.models.networks`.
:func:`build_model` builds any registry entry that has a network and stamps it with the ``spec`` needed to rebuild
it from a saved ``model.pt``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vent.errors import ConfigError
from vent.io.artifacts import EDGE_CHANNELS
from vent.models.networks import LSTMClassifier, ProbabilityModel, TransformerClassifier, count_parameters
from vent.models.registry import MODEL_NAMES, InputKind, get_spec

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


def model_input_kind(name: str) -> InputKind:
    """What a model reads (:data:`vent.models.registry.InputKind`); an unknown name is a ConfigError."""
    return get_spec(name).input_kind


def build_model(name: str, n_inputs: int, n_steps: int, **params: Any) -> nn.Module:
    """Build a freshly initialised network of a registry entry (seed torch first for reproducible weights).

    Args:
        name: A registry name whose entry has a builder.
        n_inputs: Inputs per phase (selected features plus lung-edge channels; 1 plus edges for raw intensities).
        n_steps: Number of breathing phases T.
        **params: The entry's typed parameters (``vent.models.registry``), defaults for those not given.

    Returns:
        A module mapping (B, T, n_inputs) float32 to (B,) logits; its ``spec`` attribute
        (``{"name", "n_inputs", "n_steps", "params"}``) rebuilds it with
        ``build_model(spec["name"], spec["n_inputs"], spec["n_steps"], **spec["params"])``.

    Raises:
        ConfigError: Unknown name or parameter, an invalid value, or a method without a network.
    """
    spec = get_spec(name)
    if int(n_inputs) < 1 or int(n_steps) < 1:
        raise ConfigError(f"build_model({name!r}): n_inputs and n_steps must be >= 1; got {n_inputs}, {n_steps}")
    n_edge = len(EDGE_CHANNELS)
    if spec.input_kind == "raw" and not 1 <= int(n_inputs) <= 1 + n_edge:
        raise ConfigError(
            f"model {name!r} reads raw CT intensities (one value per phase, plus up to {n_edge} lung-edge "
            f"channels from train.edge_inputs), so n_inputs must be 1 to {1 + n_edge}; got {n_inputs}"
        )
    typed = spec.parse_params(params)
    model = spec.build(int(n_inputs), int(n_steps), typed)
    model.spec = {"name": name, "n_inputs": int(n_inputs), "n_steps": int(n_steps), "params": typed.model_dump()}
    return model
