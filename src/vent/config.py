"""Typed run configuration, validated when the YAML file is loaded.

One section per stage (``preprocess``, ``radiomics``, ``select``, ``train``, ``explain``, ``report``) plus ``data``
(where the cohort is), ``cv`` (the patient folds the split stage writes for ``select`` and every method) and
``execution`` (workers, device, threads, batch sizes: how the work runs, read by no fingerprint). Every model
forbids unknown keys, so a typo is an error that names the file, the dotted key and the closest valid key.

Relative paths in a config file are resolved against the directory holding that file, never against the current
directory or environment variables, so ``vent run configs/pet.yaml`` means the same thing from anywhere.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vent.errors import ConfigError

__all__ = [
    "RunConfig",
    "DataConfig",
    "SyntheticConfig",
    "PreprocessConfig",
    "GroundTruthConfig",
    "SegmentationConfig",
    "RadiomicsConfig",
    "SelectConfig",
    "CVConfig",
    "TrainConfig",
    "ExplainConfig",
    "ReportConfig",
    "ExecutionConfig",
    "load_config",
]


class _Section(BaseModel):
    """Base of every config section: unknown keys are rejected, and a section is frozen once validated, so a stage
    or a trainer receives settings it cannot change (``model_copy(update=...)`` makes a changed copy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Mutable(_Section):
    """The run-level models whose paths are resolved after loading (``run_dir``, ``data.root``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class SyntheticConfig(_Section):
    """A built-in synthetic cohort, generated into ``data.root`` (VAMPIRE layout) before preprocessing."""

    cases: int = Field(6, ge=1, le=200, description="Number of synthetic subjects.")
    modality: Literal["pet", "spect"] = Field("pet", description="PET-like (5 phases) or SPECT-like (10 phases).")
    size: Literal["tiny", "demo", "full"] = Field("demo", description="Anatomy size; 'full' is a real adult lung.")
    seed: int = Field(0, description="Seed of the generator; each subject depends only on (seed, index).")


class DataConfig(_Mutable):
    """Where the cohort is and which subjects to use."""

    root: Path | None = Field(
        None, description="A study folder in the VAMPIRE layout (holds Subject_XX folders); or give 'manifest'."
    )
    manifest: Path | None = Field(
        None,
        description="A CSV or YAML manifest listing each case's phase images (files or DICOM series folders), "
        "optional masks, RefVI and modality, for any other layout (vent.io.manifest); instead of 'root'.",
    )
    subjects: list[str] | str | None = Field(
        None, description="Subject ids, or a glob pattern such as 'Subject_*'; null = every Subject_* folder."
    )
    exclude: dict[str, str] = Field(
        default_factory=dict, description="Subject id -> reason for leaving it out (recorded in the report)."
    )
    phase_order: Literal["file", "from_max_exhale"] = Field(
        "file",
        description="'file': keep the PhaseImage_NN order; 'from_max_exhale': rotate so the phase with the smallest "
        "lung volume comes first (the order is recorded either way).",
    )
    synthetic: SyntheticConfig | None = Field(
        None, description="If set, generate a synthetic cohort into 'root' when it is not there yet."
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.root is None) == (self.manifest is None):
            raise ValueError("give either data.root (a VAMPIRE study folder) or data.manifest (a CSV/YAML manifest)")
        if self.synthetic is not None and self.root is None:
            raise ValueError("data.synthetic writes a VAMPIRE-layout cohort into data.root; set data.root")
        return self

    @property
    def location(self) -> Path:
        """The cohort's root folder or manifest file, for messages and the report."""
        return self.root if self.root is not None else self.manifest


class GroundTruthConfig(_Section):
    """Ground-truth defects from the reference ventilation image (study section 4.1)."""

    method: Literal["volume", "cumulative"] = Field(
        "volume",
        description="'volume': the lowest-valued fraction of lung voxels; 'cumulative': the lowest-valued voxels "
        "that together hold that fraction of the total ventilation.",
    )
    fraction: float = Field(0.30, gt=0.0, lt=1.0, description="Defect fraction (study: 0.30).")
    outlier_sd: float = Field(4.0, gt=0.0, description="Iterative clipping at mean +/- this many SD.")
    tolerance: float = Field(0.01, gt=0.0, lt=1.0, description="Stop when the threshold moves less than this.")
    max_iterations: int = Field(100, ge=1)
    median_filter: bool = Field(False, description="3x3x3 median filter on the RefVI before thresholding.")
    refvi_interpolation: Literal["masked", "linear"] = Field(
        "masked",
        description="'masked': normalised interpolation over RefVI lung voxels only, so the zeros outside the "
        "RefVI mask do not pull border voxels down (vent.io.refvi); 'linear': plain linear, 0 outside (old).",
    )


class SegmentationConfig(_Section):
    """Lung masks for cases that come without them (``vent.segmentation``)."""

    when: Literal["missing", "always", "never"] = Field(
        "missing",
        description="'missing': segment a case's lungs only when it has no phase masks; 'always': ignore the given "
        "masks; 'never': a case without masks is an error.",
    )
    mode: Literal["per_phase", "average"] = Field(
        "per_phase",
        description="'per_phase': segment every phase (follows the breathing); 'average': segment the average CT "
        "(the phases' mean when there is none) once and use that mask for every phase (faster, blurs the motion).",
    )
    backend: Literal["classical", "lungmask"] = Field(
        "classical",
        description="'classical': SimpleITK thresholds and morphology, no weights (Dice 0.97 on LUNG1-001); "
        "'lungmask': the learned U-net of Hofmanninger et al. 2020 (pip install lungmask; downloads weights).",
    )
    lungmask_model: str = Field("R231", description="The lungmask model name (R231, LTRCLobes, R231CovidWeb).")


class PreprocessConfig(_Section):
    """Reading, checking and resampling each subject onto one 2 mm grid."""

    spacing_mm: tuple[float, float, float] = Field((2.0, 2.0, 2.0), description="Output spacing (x, y, z) in mm.")
    analysis_mask: Literal["average", "average_and_vent", "union_phases"] = Field(
        "average_and_vent",
        description="Voxels analysed: the average-CT lung mask, intersected with the RefVI mask by default.",
    )
    crop_margin_mm: float = Field(
        20.0, ge=0.0, description="Crop every array to the lung bounding box plus this margin (saves memory)."
    )
    min_lung_voxels: int = Field(100, ge=1, description="Fewer analysed voxels than this is an error.")
    ground_truth: GroundTruthConfig = Field(default_factory=GroundTruthConfig)
    segmentation: SegmentationConfig = Field(default_factory=SegmentationConfig)

    @field_validator("spacing_mm")
    @classmethod
    def _positive_spacing(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v <= 0 for v in value):
            raise ValueError(f"every spacing must be > 0 mm, got {list(value)}")
        return value


class RadiomicsConfig(_Section):
    """Voxel-wise radiomic filtering of every phase."""

    kernel_mm: float = Field(26.0, gt=0.0, description="Kernel edge in mm; turned into an odd voxel count.")
    bin_count: int | None = Field(64, ge=2, description="Fixed bin number; null with bin_width or for grey levels.")
    bin_width: float | None = Field(None, gt=0.0, description="Fixed bin width (HU); excludes bin_count.")
    discretisation_scope: Literal["phase", "case"] = Field(
        "phase",
        description="'phase': bin edges over the lung in each phase (pyradiomics); 'case': one scale per patient.",
    )
    masked_kernel: bool = Field(True, description="Restrict each kernel to lung voxels (pyradiomics' masked kernel).")
    kernel_mask: Literal["phase", "analysis"] = Field(
        "phase", description="Mask bounding the kernel: each phase's own lung mask, or the analysis mask."
    )
    empty_kernel: Literal["analysis_mask", "nearest_phase", "drop"] = Field(
        "analysis_mask",
        description="A lung voxel whose kernel holds no lung voxel (or leaves a feature undefined) at a phase: "
        "recompute it with the phase | analysis mask kernel, carry the nearest phase's values, or drop the voxel "
        "(see vent.radiomics.lung_edge). Counts are recorded and reported.",
    )
    features: list[str] | Literal["all"] = Field("all", description="Feature ids to compute, or 'all' (56).")
    dtype: Literal["float32", "float64"] = "float32"

    @model_validator(mode="after")
    def _one_discretisation(self) -> RadiomicsConfig:
        if self.bin_count is not None and self.bin_width is not None:
            raise ValueError("set either bin_count or bin_width, not both (set the other to null)")
        return self


class CVConfig(_Section):
    """Cross-validation folds, split by patient, written once and reused by every model."""

    n_folds: int = Field(5, ge=2)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Share of training patients kept for early stopping.")
    seed: int = 0


class SelectConfig(_Section):
    """Feature selection by correlation clustering (study section 4.5)."""

    mode: Literal["nested", "paper"] = Field(
        "nested",
        description="'nested': select inside each fold from training patients only (no leakage); 'paper': select once "
        "on all patients, as published. Both are computed and reported; this one feeds the models.",
    )
    linkage: Literal["average", "complete", "single", "weighted"] = "average"
    cutoffs: list[float] | None = Field(None, description="Distance cut-offs swept; null = a default sweep.")
    max_voxels_per_case: int = Field(20000, ge=100, description="Voxels sampled per patient for the Spearman score.")
    target: Literal["defect", "refvi"] = Field("defect", description="Ground truth the representative must track.")
    singleton_silhouette: Literal["one", "zero", "exclude"] = Field(
        "one",
        description="Silhouette of a one-feature cluster: 'one' (MATLAB; the study's 38 clusters at silhouette 0.79 "
        "need it), 'zero' (Rousseeuw 1987, scikit-learn; caps 38 of 56 at 0.643), 'exclude' (left out of the mean).",
    )
    min_clusters: float = Field(
        0.25, gt=0, description="Guard: fewest clusters (= features kept); a count, or a fraction of the features."
    )
    max_clusters: float | None = Field(
        0.75, gt=0, description="Guard: most clusters; a count, or a fraction of the features; null = no ceiling."
    )
    max_cutoff: float | None = Field(
        None, gt=0, le=1, description="Guard: largest cut-off distance 1 - |r| allowed; null = no bound."
    )

    @field_validator("min_clusters", "max_clusters")
    @classmethod
    def _count_or_fraction(cls, value: float | None) -> float | None:
        if value is not None and value >= 1 and value != int(value):
            raise ValueError(f"{value} is neither a fraction below 1 nor a whole number of clusters")
        return value

    @model_validator(mode="after")
    def _band_not_empty(self) -> SelectConfig:
        same_kind = self.max_clusters is not None and (self.min_clusters < 1) == (self.max_clusters < 1)
        if same_kind and self.max_clusters < self.min_clusters:
            raise ValueError(f"max_clusters {self.max_clusters} is below min_clusters {self.min_clusters}")
        return self


class TrainConfig(_Section):
    """Sequence models and their training."""

    models: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: _default_models(),
        description="The methods of Table 2 (vent.models.registry): a list of names, or a mapping name -> "
        "parameters (null = the registry's defaults), e.g. {lstm: {hidden: [128, 64]}, transformer: {d_model: 32}}.",
    )
    reference_model: str = Field(
        default_factory=lambda: _default_reference(), description="The proposed model every other is tested against."
    )
    compare_selection_modes: bool = Field(
        True, description="Also train the reference model on the other selection mode's features (row model@mode)."
    )
    lr: float = Field(1e-4, gt=0.0)
    batch_size: int = Field(2048, ge=1)
    max_epochs: int = Field(500, ge=1)
    patience: int = Field(20, ge=1, description="Epochs without validation improvement before stopping.")
    clip_grad_norm: float = Field(1.0, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    pos_weight: float | Literal["auto"] | None = Field(None, description="Positive-class weight; 'auto' = neg/pos.")
    max_voxels_per_case: int | None = Field(None, ge=1, description="Subsample training voxels per patient.")
    threshold: float | Literal["val_defect_fraction", "val_dice"] = Field(
        "val_defect_fraction",
        description="Binary-defect threshold, chosen per fold on its validation patients only: 'val_defect_fraction' "
        "(predicted defect fraction = the validation ground truth's), 'val_dice' (best mean validation Dice on "
        "0.01..0.99), or a fixed number in (0, 1). 0.5 under-calls 30% defects.",
    )
    edge_inputs: list[Literal["inside", "distance_mm", "kernel_lung_fraction"]] = Field(
        default_factory=list,
        description="Lung-edge positional sequences appended to every sequence model's inputs (the study's proposed "
        "fix for edge effects): inside the phase's lung (0/1), signed distance to its surface (mm), lung fraction "
        "of the kernel. Empty = the study's inputs.",
    )
    seed: int = 0

    @field_validator("models", mode="before")
    @classmethod
    def _registered_models(cls, value: Any) -> dict[str, dict[str, Any]]:
        from vent.models.registry import parse_models

        try:
            return {name: params.model_dump() for name, params in parse_models(value).items()}
        except ConfigError as error:
            raise ValueError(str(error).removeprefix("train.models: ")) from None

    def model_params(self, name: str) -> Any:
        """The typed parameters of one configured model (``vent.models.registry``)."""
        from vent.models.registry import get_spec

        return get_spec(name).parse_params(self.models[name])

    @model_validator(mode="after")
    def _reference_is_trained(self) -> TrainConfig:
        if self.reference_model not in self.models:
            raise ValueError(f"reference_model {self.reference_model!r} must be one of models {list(self.models)}")
        return self

    @field_validator("threshold")
    @classmethod
    def _threshold_in_range(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not 0.0 < value < 1.0:
            raise ValueError("a fixed threshold must be in (0, 1), or use 'val_defect_fraction' or 'val_dice'")
        return value


class ExplainConfig(_Section):
    """Temporal saliency (Integrated Gradients + the study's TSR variant) of the reference model."""

    method: Literal["study", "tsr"] = "study"
    n_steps: int = Field(
        50, ge=2, description="Integrated Gradients steps to start from; doubled per voxel until it converges."
    )
    completeness_tolerance: float = Field(
        1e-3,
        gt=0.0,
        description="Largest IG completeness error |sum IG - (f(x) - f(0))| allowed for any explained voxel, in "
        "probability units (absolute: the output is a probability, so every gap is at most 1).",
    )
    max_steps: int = Field(1024, ge=2, description="Most IG steps; a voxel still above tolerance here is warned.")
    voxels_per_class_per_case: int = Field(200, ge=1, description="Defect and healthy voxels explained per patient.")
    seed: int = 0

    @model_validator(mode="after")
    def _steps_within_max(self) -> ExplainConfig:
        if self.max_steps < self.n_steps:
            raise ValueError(f"max_steps ({self.max_steps}) must be >= n_steps ({self.n_steps})")
        return self


class ExecutionConfig(_Section):
    """Where and how fast the work runs; never what it computes. No fingerprint reads this section, so changing it
    re-runs nothing (the values used are recorded in the manifests' provenance)."""

    backend: Literal["serial", "local", "dask"] = Field(
        "local",
        description="Where per-case preprocessing, per-phase radiomics, the registrations of CT ventilation and the "
        "training folds run (vent.execution): 'serial' in the driver process; 'local' a pool of `workers` processes "
        "(a stage with one task left runs it in the driver); 'dask' dask.distributed, on the scheduler at "
        "scheduler_address or a LocalCluster of `workers` processes. Every backend writes the same arrays "
        "(training and registration: with the same `threads`, as torch and elastix may round differently on other "
        "thread counts).",
    )
    workers: int | None = Field(
        None, ge=1, description="Worker processes of the 'local' backend and of a dask LocalCluster; null = all "
        "cores; 1 = the tasks run in the driver, one at a time.",
    )
    scheduler_address: str | None = Field(
        None, description="backend 'dask': the address of a running scheduler (e.g. tcp://10.0.0.5:8786, printed by "
        "scripts/slurm_cluster.py); null = a LocalCluster of `workers` processes, started by the driver.",
    )
    radiomics_engine: Literal["auto", "numba", "torch"] = Field(
        "auto", description="Radiomics engine: 'auto' = torch on CUDA when present, else numba (equal values)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' = CUDA if available, else CPU (the device used is recorded); 'cuda' must exist."
    )
    threads: int | None = Field(
        None, ge=1,
        description="CPU threads of one task (numba radiomics, torch, BLAS/OpenMP, elastix, the random forest), set "
        "explicitly in every worker so that workers x threads does not oversubscribe the cores; null = the cores "
        "divided among the workers (a dask scheduler's worker: its cores divided among its task threads), or the "
        "libraries' defaults (all cores) for work in the driver.",
    )
    explain_batch_size: int = Field(4096, ge=1, description="Most (voxel x IG step) rows per forward pass.")
    memory_budget_gb: float = Field(
        2.0, gt=0.0,
        description="RAM for a training fold's staged inputs (the selected, standardised features of its training "
        "and validation voxels, read once from the radiomics files): staged in memory within the budget, else in a "
        "contiguous float32 file beside the fold, read through a bounded window. Values are identical either way.",
    )
    mixed_precision: bool = Field(
        False,
        description="Train networks under torch.autocast on CUDA (bfloat16, float16 with loss scaling where bf16 "
        "is absent). Results move by rounding (not bit-identical to float32); recorded per fold. On a CPU it is "
        "ignored with a warning recorded in the fold's result (training runs in float32).",
    )

    @model_validator(mode="after")
    def _address_needs_dask(self) -> ExecutionConfig:
        if self.scheduler_address is not None and self.backend != "dask":
            raise ValueError(
                f"scheduler_address is set but backend is {self.backend!r}; set execution.backend: dask to use the "
                "scheduler, or remove scheduler_address"
            )
        return self


MOVED_KEYS = {
    "radiomics.workers": "execution.workers",
    "radiomics.backend": "execution.radiomics_engine",
    "train.device": "execution.device",
    "train.threads": "execution.threads",
    "explain.internal_batch_size": "execution.explain_batch_size",
    "train.hidden": "train.models.<lstm|bilstm|lstm_raw>.hidden",
    "train.transformer": "train.models.transformer",
    "train.no_learning_baseline": "train.models (add or remove densest_inhale)",
    "explain.top_k": "report.key_sequences (the rule that picks the key sequences; rule: top_k keeps top_k)",
}
"""Keys of older configs and where they live now: an error names both, never a silent default."""


def _default_reference() -> str:
    from vent.models.registry import DEFAULT_REFERENCE

    return DEFAULT_REFERENCE


def _default_models() -> dict[str, dict[str, Any]]:
    from vent.models.registry import DEFAULT_MODELS, parse_models

    return {name: params.model_dump() for name, params in parse_models(list(DEFAULT_MODELS)).items()}


class EvaluateConfig(_Section):
    """Scoring: Table 2 (study section 4.7) and the VAMPIRE challenge's metrics of continuous estimates."""

    vampire_fraction: float | None = Field(
        None, gt=0.0, lt=0.5,
        description="DSC_low / DSC_high: the lowest / highest fraction of lung voxels by volume of the estimate and "
        "of the RefVI; null = preprocess.ground_truth.fraction.",
    )


class KeySequenceConfig(_Section):
    """How the key sequences are picked from the importance histogram (the study's Fig. 12 does not say; the rules
    and their formulas are in ``vent.explain.key_sequences``). The defaults equal ``pick_key_sequences``'s."""

    rule: Literal["largest_gap", "above_uniform", "top_k"] = Field(
        "largest_gap",
        description="'largest_gap': cut the sorted importances at the largest ratio gap (natural break) among cuts "
        "keeping min_count..max_share; 'above_uniform': importance > 1 (more than a uniform share), at most "
        "max_share; 'top_k': the top_k largest.",
    )
    top_k: int = Field(5, ge=1, description="Key sequences kept by the 'top_k' rule.")
    min_count: int = Field(1, ge=1, description="Fewest key sequences the 'largest_gap' rule keeps.")
    max_share: float = Field(
        0.5, gt=0.0, le=1.0,
        description="Most key sequences picked ('largest_gap', 'above_uniform'), as a share of the ranked sequences "
        "(at least min_count).",
    )


class ReportConfig(_Section):
    """Tables and figures."""

    formats: list[Literal["html", "md"]] = ["html", "md"]
    alpha: float = Field(0.01, gt=0.0, lt=1.0, description="Significance level for the '*' marks.")
    key_sequences: KeySequenceConfig = Field(
        default_factory=KeySequenceConfig, description="The rule that picks the key sequences (Fig. 12)."
    )
    cohort_name: str | None = Field(
        None,
        description="How the figures name the cohort (e.g. 'Galligas PET cohort'); null = from data.synthetic's "
        "modality, else '<data folder name> cohort'.",
    )


class RunConfig(_Mutable):
    """A whole run: data, every stage's settings and where the artifacts go."""

    run_dir: Path = Field(..., description="Folder for every stage's artifacts.")
    data: DataConfig
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    radiomics: RadiomicsConfig = Field(default_factory=RadiomicsConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    cv: CVConfig = Field(default_factory=CVConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    source: Path | None = Field(None, exclude=True, description="The YAML file this was loaded from.")


def _model_for_path(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the key at ``loc`` (used to suggest a valid key)."""
    model: type[BaseModel] | None = RunConfig
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            owner = _model_for_path(loc)
            valid = sorted(owner.model_fields) if owner else []
            valid = [v for v in valid if v != "source"]
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
            hint = f"; did you mean '{'.'.join(map(str, loc[:-1] + (close[0],)))}'?" if close else ""
            lines.append(f"  - unknown key '{key}'{hint} (valid keys here: {', '.join(valid)})")
        else:
            value = item.get("input")
            # a whole section or mapping (train.models) is not shown back: the message names the bad entry
            hidden = item["type"] == "missing" or isinstance(value, (dict, list)) and len(repr(value)) > 120
            shown = "" if hidden else f" (got {value!r})"
            lines.append(f"  - '{key}': {item['msg']}{shown}")
    lines.append(f"fix each key above in {source} (or its --set override) and run again")
    return "\n".join(lines)


def _resolve_paths(config: RunConfig, base: Path) -> RunConfig:
    if not config.run_dir.is_absolute():
        config.run_dir = (base / config.run_dir).resolve()
    for key in ("root", "manifest"):
        value = getattr(config.data, key)
        if value is not None and not value.is_absolute():
            setattr(config.data, key, (base / value).resolve())
    return config


def config_from_dict(raw: dict[str, Any], base_dir: Path, source: str = "<dict>") -> RunConfig:
    """Validate a config mapping; relative paths are resolved against ``base_dir``."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"invalid config {source}: the top level must be a mapping of sections, got {type(raw).__name__}"
        )
    _check_moved_keys(raw, source)
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None
    return _resolve_paths(config, base_dir)


def _check_moved_keys(raw: dict[str, Any], source: str) -> None:
    """Keys that moved (``MOVED_KEYS``) are an error naming the old and the new place."""
    found = [
        f"'{old}' is now '{new}'"
        for old, new in MOVED_KEYS.items()
        if isinstance(raw.get(old.split(".")[0]), dict) and old.split(".")[1] in raw[old.split(".")[0]]
    ]
    if found:
        raise ConfigError(f"invalid config {source}: " + "; ".join(found) + "; move the key(s) and run again")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML silently keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml_mapping(path: Path, what: str = "file", error: type[Exception] | None = None) -> dict[str, Any]:
    """A YAML file's top-level mapping, with duplicate keys rejected; an empty file is ``{}``.

    Raises:
        ``error`` (ConfigError by default; DataError for a manifest): the file is not valid YAML, repeats a key,
        or is not a mapping; the message names the file and the line.
    """
    from vent.errors import DataError

    error = error or (DataError if what == "manifest" else ConfigError)
    try:
        raw = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as problem:
        raise error(
            f"{what} {path} is not valid YAML: {problem}\nfix the line shown (a key given twice: keep one of them)"
        ) from None
    if not isinstance(raw, dict):
        raise error(f"{what} {path}: the top level must be a mapping, got {type(raw).__name__}")
    return raw


def load_config(path: Path | str, overrides: list[str] | None = None) -> RunConfig:
    """Load and validate a YAML run config.

    Args:
        path: the YAML file.
        overrides: ``dotted.key=value`` strings applied on top (values parsed as YAML), e.g. ``train.lr=2e-4``.

    Raises:
        ConfigError: the file is missing or unreadable, or a key or value is invalid (the message names the file,
            the dotted key, the bad value and, for unknown keys, the closest valid one).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist; pass the path of a YAML config such as configs/demo.yaml"
        )
    raw = _read_config_yaml(path)
    for override in overrides or []:
        _apply_override(raw, override, path)
    config = config_from_dict(raw, path.parent.resolve(), str(path))
    config.source = path.resolve()
    return config


def _read_config_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as error:
        raise ConfigError(
            f"config file {path} is not valid YAML: {error}\nfix the line shown (a key given twice: keep one of them)"
        ) from None


def _apply_override(raw: dict[str, Any], override: str, path: Path) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like section.key=value (for example train.lr=2e-4)")
    key, value = override.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: '{part}' in {path} is not a section")
    node[parts[-1]] = yaml.safe_load(value)


def section_dict(config: RunConfig, section: str) -> Any:
    """The JSON-ready content of one top-level section (paths as strings)."""
    return (
        json.loads(getattr(config, section).model_dump_json())
        if isinstance(getattr(config, section), BaseModel)
        else json.loads(json.dumps(getattr(config, section), default=str))
    )
