"""The pipeline stages, in order. One module per stage; each module's docstring says what it reads and writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vent.errors import ConfigError

if TYPE_CHECKING:
    from vent.stages.base import Stage

__all__ = ["all_stages", "get_stage", "STAGE_NAMES"]

STAGE_NAMES = ("preprocess", "radiomics", "select", "train", "explain", "report")


def all_stages() -> list[Stage]:
    """Fresh instances of every stage, in pipeline order."""
    from vent.stages.explain import ExplainStage
    from vent.stages.preprocess import PreprocessStage
    from vent.stages.radiomics import RadiomicsStage
    from vent.stages.report import ReportStage
    from vent.stages.select import SelectStage
    from vent.stages.train import TrainStage

    return [PreprocessStage(), RadiomicsStage(), SelectStage(), TrainStage(), ExplainStage(), ReportStage()]


def get_stage(name: str) -> Stage:
    for stage in all_stages():
        if stage.name == name:
            return stage
    raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
