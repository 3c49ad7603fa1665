"""The pipeline stages, in order. One module per stage; each module's docstring says what it reads and writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vent.errors import ConfigError

if TYPE_CHECKING:
    from vent.stages.base import Stage

__all__ = ["all_stages", "get_stage", "check_config", "STAGE_NAMES"]

STAGE_NAMES = ("preprocess", "split", "radiomics", "select", "train", "evaluate", "explain", "report")

_STAGE_CLASSES = {name: f"vent.stages.{name}:{name.capitalize()}Stage" for name in STAGE_NAMES}
"""The stage registry: name -> "module:class" (each stage's module is named after it and imported when asked)."""


def get_stage(name: str) -> Stage:
    """A fresh instance of one stage (imports only its module)."""
    import importlib

    if name not in _STAGE_CLASSES:
        raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
    module, _, cls = _STAGE_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def all_stages() -> list[Stage]:
    """Fresh instances of every stage, in pipeline order."""
    return [get_stage(name) for name in STAGE_NAMES]


def check_config(config, n_cases: int | None = None) -> None:
    """Checks that need the registries (model names, feature ids) or the cohort size; run before any compute.

    Raises:
        ConfigError: naming the key, the bad value and the valid choices.
    """
    from vent.stages.radiomics import selected_feature_specs

    # train.models and reference_model are checked against the registry when the config is loaded
    if config.train.reference_model not in config.train.models:
        raise ConfigError(f"train.reference_model {config.train.reference_model!r} is not in train.models")
    selected_feature_specs(config.radiomics.features)
    if config.execution.device.startswith("cuda"):  # before any compute, not at the first stage that uses it
        from vent.models.training import resolve_device

        resolve_device(config.execution.device)
    if n_cases is not None and n_cases < 3:  # first: no cv.n_folds (at least 2) would do
        raise ConfigError(f"the cohort has {n_cases} subject(s); cross-validation by patient needs at least 3: add "
                          "subjects to data.root (for one new patient, use `vent predict` with a trained run)")
    if n_cases is not None and config.cv.n_folds > n_cases:
        raise ConfigError(
            f"cv.n_folds = {config.cv.n_folds} but the cohort has {n_cases} subjects; set cv.n_folds "
            f"to at most {n_cases}"
        )
    if n_cases is not None:
        from vent.cv import check_fold_sizes

        check_fold_sizes(n_cases, config.cv.n_folds, config.cv.val_fraction)
