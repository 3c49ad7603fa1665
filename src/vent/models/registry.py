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
    "VolumeNetParams",
    "RegistrationParams",
    "RegressionParams",
    "NoParams",
]

Family = Literal["sequence", "volume", "tabular", "registration", "rule"]
InputKind = Literal["radiomics", "raw", "ct"]
"""What a method reads: ``radiomics`` (T x F selected radiomic sequences per voxel), ``raw`` (the voxel's T CT values,
stored beside the features in ``radiomics/<case>.h5``) or ``ct`` (the preprocessed 4DCT and masks)."""


class _Params(BaseModel):
    """Base of the typed per-model parameters: unknown keys are errors naming the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _all_positive(value: list[int], message: str) -> list[int]:
    """``value`` when every entry is >= 1; else a ValueError with ``message`` (reworded to the config key)."""
    if any(int(v) < 1 for v in value):
        raise ValueError(f"{message}; got {value}")
    return value


class NoParams(_Params):
    """A method without parameters."""


class LSTMParams(_Params):
    """Stacked LSTM (study section 4.6): cells per layer, dropout between layers."""

    hidden: list[int] = Field([128, 64, 32, 16, 8], min_length=1, description="LSTM cells per layer.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout between LSTM layers.")

    @field_validator("hidden")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        return _all_positive(value, "every layer needs at least one cell")


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


class RegressionParams(LSTMParams):
    """The proposed LSTM trained on the normalised RefVI instead of the binary mask (``lstm_regress``)."""

    target: Literal["rank", "minmax"] = Field(
        "rank",
        description="'rank': each patient's RefVI as its within-lung percentile in [0, 1] (the VAMPIRE metrics are "
        "rank-based, and percentiles compare across PET and SPECT); 'minmax': the RefVI after the ground truth's "
        "outlier clip, scaled to [0, 1] per patient.",
    )


class VolumeNetParams(_Params):
    """3D encoder-decoder networks on the whole 4DCT, phases as channels (``vent.models.volume_networks``, trained by
    ``vent.models.volume``): four 2x downsamplings, so patch sides are multiples of 16."""

    features: list[int] = Field(
        [32, 32, 64, 128, 256], min_length=5, max_length=5,
        description="Channels of the five resolution levels, full resolution to the 1/16 bottleneck (MONAI's "
        "BasicUNet defaults); the decoder mirrors them. The Res-UNet (MONAI's UNet) places them one level lower: "
        "the widths after each strided convolution, then the bottleneck.",
    )
    norm: Literal["instance", "batch", "none"] = Field(
        "instance", description="Normalisation after each convolution ('none' = the study's plain convolutions)."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after each convolution.")
    patch_size: list[int] = Field(
        [64, 64, 64], min_length=3, max_length=3,
        description="Training patch and inference window (z, y, x) voxels; multiples of 16.",
    )
    batch_size: int = Field(16, ge=1, description="Patches per batch (the study: 16), also windows per inference step.")
    patches_per_epoch: int = Field(160, ge=1, description="Patches drawn per epoch, centred on analysed lung voxels.")
    overlap: float = Field(0.5, ge=0.0, lt=1.0, description="Sliding-window inference overlap (Gaussian blending).")

    @field_validator("features")
    @classmethod
    def _positive_features(cls, value: list[int]) -> list[int]:
        return _all_positive(value, "every level needs at least one channel")

    @field_validator("patch_size")
    @classmethod
    def _multiple_of_16(cls, value: list[int]) -> list[int]:
        if any(int(p) < 16 or int(p) % 16 for p in value):
            raise ValueError(f"every patch side must be a multiple of 16 (four 2x poolings); got {value}")
        return value

    @model_validator(mode="after")
    def _bottleneck_can_be_normalised(self) -> VolumeNetParams:
        if self.norm == "instance" and all(int(p) == 16 for p in self.patch_size):
            raise ValueError(
                "norm 'instance' normalises each channel over the voxels of the 1/16 bottleneck, and a 16^3 patch "
                "leaves one; make a patch side >= 32 or use norm 'batch' or 'none'"
            )
        return self


class RegistrationParams(_Params):
    """Exhale-to-inhale deformable registration for CT ventilation (``vent.baselines.registration``,
    ``vent.baselines.ctvi``): fixed = the exhale phase, moving = the inhale phase, a multi-resolution cubic B-spline
    sampled in the exhale lung mask dilated by ``mask_dilation_mm``.

    Every field changes the registration, so every field is part of its cache key (``ctvi.registration_key``); the
    CPU threads are ``execution.threads``. Defaults follow the elastix model zoo's lung maps (Par0011, Par0007; see
    ``registration.elastix_parameter_map``) except the bending-energy weight, raised from Par0011's 0.05 to 0.5: on a
    real CT lung (LUNG1-001) with a planted breathing field it cut the 95th-percentile displacement error at 2 mm from
    0.65 to 0.19 mm, and on a mass-conserving phantom it raised DIR-Jac's Spearman r_s with the planted J - 1 from
    0.57 to 0.65 (tests/baselines/test_baselines_ctvi.py).
    """

    backend: Literal["elastix", "simpleitk"] = Field(
        "elastix", description="'elastix' (itk-elastix, the field's standard) or 'simpleitk' (its B-spline, no "
        "bending-energy penalty). Never a silent fallback: elastix without itk-elastix is an error."
    )
    grid_spacing_mm: float = Field(
        10.0, gt=0.0, description="Final B-spline control-point spacing (Par0011, Par0007)."
    )
    resolutions: int = Field(
        4, ge=1, le=6, description="Multi-resolution levels; image and control grid halve per level (8, 4, 2, 1 x)."
    )
    iterations: int = Field(
        250, ge=1, description="Optimiser iterations per resolution (Par0007: 500; 250 measured as accurate at 2 mm)."
    )
    spatial_samples: int = Field(
        2000, ge=100, description="Random metric samples: elastix draws this many every iteration (Par0011: 2000); "
        "simpleitk draws them once per level, so give it about ten times more (20000)."
    )
    bending_weight: float = Field(
        0.5, ge=0.0, description="Relative weight of elastix's bending-energy penalty against the normalised "
        "correlation (Par0011: 0.05; 0 = none)."
    )
    mask_dilation_mm: float = Field(
        4.0, ge=0.0, description="The exhale lung mask is dilated by this much (Euclidean) so the lung boundary, where "
        "the motion shows, lies inside the sampled region."
    )
    map_to: Literal["exhale", "average"] = Field(
        "exhale", description="Frame the ventilation is scored in: the exhale phase as registered, or the average CT "
        "(the frame of the analysed voxels and the RefVI; one more registration, average fixed and exhale moving)."
    )
    seed: int = Field(
        0, ge=0, description="Seed of the random metric samples (elastix RandomSeed; SimpleITK's sampling seed + 1)."
    )


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


_VOLUME_SETTINGS = ("lr", "clip_grad_norm", "weight_decay", "pos_weight", "seed")
"""The train keys a volume network reads: the optimiser and early stopping, not the voxel batches."""

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
        name="lstm_regress",
        label="LSTM regressing the RefVI",
        family="sequence",
        input_kind="radiomics",
        params=RegressionParams,
        builder="vent.models.networks:build_lstm",
        trainer="vent.models.regression:train_regression_fold",
        # the sequence settings less pos_weight (a binary target's class weight) and the threshold (none is chosen)
        train_settings=("lr", "batch_size", "clip_grad_norm", "weight_decay", "max_voxels_per_case", "edge_inputs",
                        "seed"),
    ),
    ModelSpec(
        name="unet",
        label="3D U-Net on raw 4DCT",
        family="volume",
        input_kind="ct",
        params=VolumeNetParams,
        builder="vent.models.volume_networks:build_unet",
        trainer="vent.models.volume:train_volume_fold",
        train_settings=_VOLUME_SETTINGS,
    ),
    ModelSpec(
        name="unetpp",
        label="3D U-Net++ on raw 4DCT",
        family="volume",
        input_kind="ct",
        params=VolumeNetParams,
        builder="vent.models.volume_networks:build_unetpp",
        trainer="vent.models.volume:train_volume_fold",
        train_settings=_VOLUME_SETTINGS,
    ),
    ModelSpec(
        name="resunet",
        label="3D Res-UNet on raw 4DCT",
        family="volume",
        input_kind="ct",
        params=VolumeNetParams,
        builder="vent.models.volume_networks:build_resunet",
        trainer="vent.models.volume:train_volume_fold",
        train_settings=_VOLUME_SETTINGS,
    ),
    ModelSpec(
        name="ctvi_jac",
        label="CT ventilation: DIR Jacobian",
        family="registration",
        input_kind="ct",
        params=RegistrationParams,
        trainer="vent.baselines.ctvi:ctvi_jacobian_fold",
        learns=False,
    ),
    ModelSpec(
        name="ctvi_hu",
        label="CT ventilation: DIR HU",
        family="registration",
        input_kind="ct",
        params=RegistrationParams,
        trainer="vent.baselines.ctvi:ctvi_hu_fold",
        learns=False,
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
