"""The method registry: every method of Table 2 is one :class:`ModelSpec` in :data:`REGISTRY`, and nowhere else.

The config (``train.models`` and its per-model parameters), the report's row labels, the config checks, the stages a
run needs and whether the explain stage can run all derive from this list. Adding a method is one new module (its
builder and/or trainer) plus one entry here; ``tests/models/test_models_registry.py`` checks that no other module
lists method names.

Families and what each needs (``ModelSpec.needs``):

=============  ===============================================================  ===================================
family         what it is                                                       stages it reads
=============  ===============================================================  ===================================
sequence       a network on per-voxel sequences over the phases                 split, radiomics (+ select when it
                                                                                reads radiomic features)
volume         a network on whole 4DCT volumes (phases as channels)             split, preprocess
tabular        a classical learner on per-voxel values                         split, preprocess
registration   CT ventilation from deformable registration (trains nothing)     preprocess
rule           a no-learning rule on the CT (trains nothing)                     preprocess
=============  ===============================================================  ===================================

Builders and trainers are ``"module:function"`` strings, imported only when used, so reading a config never imports
torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vent.errors import ConfigError

__all__ = [
    "Family",
    "InputKind",
    "ModelSpec",
    "REGISTRY",
    "MODEL_NAMES",
    "DEFAULT_MODELS",
    "DEFAULT_REFERENCE",
    "get_spec",
    "needed_stages",
    "parse_models",
    "LSTMParams",
    "TransformerParams",
    "ForestParams",
    "NoParams",
]

Family = Literal["sequence", "volume", "tabular", "registration", "rule"]
InputKind = Literal["radiomics", "raw", "ct"]
"""What a method reads: ``radiomics`` (T x F selected radiomic sequences per voxel), ``raw`` (the voxel's T CT values,
stored beside the features in ``radiomics/<case>.h5``) or ``ct`` (the preprocessed 4DCT and masks)."""


class _Params(BaseModel):
    """Base of the typed per-model parameters: unknown keys are errors naming the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(_Params):
    """A method without parameters."""


class LSTMParams(_Params):
    """Stacked LSTM (study section 4.6): cells per layer, dropout between layers."""

    hidden: list[int] = Field([128, 64, 32, 16, 8], min_length=1, description="LSTM cells per layer.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout between LSTM layers.")

    @field_validator("hidden")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(int(h) < 1 for h in value):
            raise ValueError(f"every layer needs at least one cell; got {value}")
        return value


class TransformerParams(_Params):
    """Transformer-encoder ablation (fixed sinusoidal positions, residual blocks, dense sigmoid head)."""

    d_model: int = Field(64, ge=4)
    n_heads: int = Field(4, ge=1)
    n_blocks: int = Field(4, ge=1)
    dim_feedforward: int = Field(128, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerParams:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self


class ForestParams(_Params):
    """Random forest (study section 4.6): 100 trees, Gini, bootstrap; depth, leaf size and features per split by a
    random search with patient-grouped inner CV on the training patients (``vent.models.forest``)."""

    n_estimators: int = Field(100, ge=1, description="Trees (the study: 100).")
    n_iter: int = Field(10, ge=1, description="Random-search draws.")
    inner_folds: int = Field(3, ge=2, description="Patient-grouped inner CV folds (fewer if fewer patients).")
    max_voxels_per_case: int = Field(5000, ge=10, description="Stratified training voxels per patient.")
    seed: int = 0


_FAMILY_NEEDS: dict[str, tuple[str, ...]] = {
    "volume": ("split", "preprocess"),
    "tabular": ("split", "preprocess"),
    "registration": ("preprocess",),
    "rule": ("preprocess",),
}


@dataclass(frozen=True)
class ModelSpec:
    """One method of Table 2.

    Attributes:
        name: The registry name used in ``train.models``.
        label: The Table 2 row label.
        family: See the module docstring.
        input_kind: What it reads (:data:`InputKind`).
        params: Its typed parameter model (``train.models.<name>``).
        builder: ``"module:function"`` building the network from (n_inputs, n_steps, params); None if none.
        trainer: ``"module:function"`` producing one fold's predictions from a ``vent.stages.train.FoldJob``.
        explainable: Whether the explain stage (temporal saliency) can explain it.
        learns: Whether it is trained (False: a rule or registration method, scored on every fold's test patients).
        default: Whether ``train.models`` includes it when the config does not set the key.
        train_settings: The ``train`` keys its result depends on (a fold's identity holds only these); None = all
            of them (the networks' optimiser, batches and early stopping).
    """

    name: str
    label: str
    family: Family
    input_kind: InputKind
    params: type[_Params]
    trainer: str
    builder: str | None = None
    explainable: bool = False
    learns: bool = True
    default: bool = True
    train_settings: tuple[str, ...] | None = None

    @property
    def trains_by_epochs(self) -> bool:
        """A network trained epoch by epoch, whose checkpoint can resume a longer training."""
        return self.learns and self.builder is not None

    def needs(self) -> tuple[str, ...]:
        """The stages whose artifacts this method reads."""
        if self.family == "sequence":
            return ("split", "radiomics", "select") if self.input_kind == "radiomics" else ("split", "radiomics")
        return _FAMILY_NEEDS[self.family]

    def build(self, n_inputs: int, n_steps: int, params: _Params | dict[str, Any]) -> Any:
        """A freshly initialised network (seed torch first for reproducible weights)."""
        if self.builder is None:
            raise ConfigError(f"method {self.name!r} has no network to build")
        return _load(self.builder)(n_inputs, n_steps, self.parse_params(params))

    def parse_params(self, params: _Params | dict[str, Any] | None) -> _Params:
        """Validated parameters (defaults filled in); an unknown key or bad value is a ConfigError naming the key."""
        if isinstance(params, self.params):
            return params
        try:
            return self.params.model_validate(params or {})
        except Exception as error:  # pydantic.ValidationError: reworded with the config key
            raise ConfigError(f"train.models.{self.name}: {_brief(error)}") from None

    def train_fold(self) -> Callable[..., Any]:
        return _load(self.trainer)


def _load(target: str) -> Callable[..., Any]:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def _brief(error: Exception) -> str:
    errors = getattr(error, "errors", None)
    if errors is None:
        return str(error)
    parts = []
    for item in errors():
        key = ".".join(str(p) for p in item["loc"]) or "(parameters)"
        parts.append(f"unknown parameter '{key}'" if item["type"] == "extra_forbidden" else f"'{key}': {item['msg']}")
    return "; ".join(parts)


REGISTRY: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="lstm",
        label="LSTM on radiomic sequences",
        family="sequence",
        input_kind="radiomics",
        params=LSTMParams,
        builder="vent.models.networks:build_lstm",
        trainer="vent.models.sequence:train_sequence_fold",
        explainable=True,
    ),
    ModelSpec(
        name="bilstm",
        label="BiLSTM on radiomic sequences",
        family="sequence",
        input_kind="radiomics",
        params=LSTMParams,
        builder="vent.models.networks:build_bilstm",
        trainer="vent.models.sequence:train_sequence_fold",
        explainable=True,
    ),
    ModelSpec(
        name="transformer",
        label="Transformer on radiomic sequences",
        family="sequence",
        input_kind="radiomics",
        params=TransformerParams,
        builder="vent.models.networks:build_transformer",
        trainer="vent.models.sequence:train_sequence_fold",
        explainable=True,
    ),
    ModelSpec(
        name="lstm_raw",
        label="LSTM on raw 4DCT",
        family="sequence",
        input_kind="raw",
        params=LSTMParams,
        builder="vent.models.networks:build_lstm",
        trainer="vent.models.sequence:train_sequence_fold",
        explainable=True,
    ),
    ModelSpec(
        name="rf",
        label="Random forest on raw 4DCT",
        family="tabular",
        input_kind="ct",
        params=ForestParams,
        trainer="vent.models.forest:train_forest_fold",
        train_settings=("seed",),  # its own parameters hold the rest; no epochs, optimiser or batches
    ),
    ModelSpec(
        name="densest_inhale",
        label="No learning: densest voxels at max inhale",
        family="rule",
        input_kind="ct",
        params=NoParams,
        trainer="vent.baselines:densest_inhale_fold",
        learns=False,
    ),
)

MODEL_NAMES: tuple[str, ...] = tuple(spec.name for spec in REGISTRY)
DEFAULT_MODELS: tuple[str, ...] = tuple(spec.name for spec in REGISTRY if spec.default)
DEFAULT_REFERENCE = "lstm"
"""The proposed model of the study, every other row's Wilcoxon partner unless ``train.reference_model`` says."""


def get_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; an unknown name is a ConfigError with the closest valid one."""
    for spec in REGISTRY:
        if spec.name == name:
            return spec
    close = difflib.get_close_matches(str(name), MODEL_NAMES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown model {name!r}{hint} (models: {', '.join(MODEL_NAMES)})")


def needed_stages(names: Any) -> set[str]:
    """The stages the methods ``names`` read (the union of their ``ModelSpec.needs``)."""
    return {stage for name in names for stage in get_spec(name).needs()}


def parse_models(value: Any) -> dict[str, _Params]:
    """``train.models``: a list of names (default parameters) or a mapping name -> parameters (null = defaults).

    Returns:
        ``{name: validated parameters}`` in the config's order.
    """
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        items: list[tuple[Any, Any]] = []
        for entry in value:
            if isinstance(entry, dict) and len(entry) == 1:
                items.append(next(iter(entry.items())))
            elif isinstance(entry, str):
                items.append((entry, None))
            else:
                raise ConfigError(
                    f"train.models: each entry is a model name or {{name: {{parameters}}}}; got {entry!r}"
                )
    elif isinstance(value, dict):
        items = list(value.items())
    else:
        raise ConfigError(f"train.models must be a list of model names or a mapping name -> parameters; got {value!r}")
    if not items:
        raise ConfigError("train.models is empty; name at least one model")
    names = [str(name) for name, _ in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"train.models lists {repeated} twice")
    return {str(name): get_spec(str(name)).parse_params(params) for name, params in items}
