"""The job description every method's trainer receives, and what it hands back (``vent.models.registry``).

A :class:`FoldJob` is plain, picklable data built by the train stage's driver, so a trainer can run in another
process or on another machine; it reads its inputs through ``vent.io`` from ``run_dir`` and returns a
:class:`FoldOutcome` whose predictions the stage writes through ``vent.io.predictions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vent.config import ExecutionConfig, GroundTruthConfig, TrainConfig
from vent.cv import Fold
from vent.io.predictions import Prediction

__all__ = ["FoldJob", "FoldOutcome"]


@dataclass(frozen=True)
class FoldJob:
    """One method on one fold.

    Attributes:
        run_dir: The run folder (inputs are read through ``vent.io.layout``).
        row: The Table 2 row (``lstm``, ``lstm@paper`` ...); names the fold's folder.
        model: The registry name.
        selection: Selection mode of the features it reads (``nested`` / ``paper``), or ``none``.
        fold: The fold's training, validation and test patients.
        train: The ``train`` section (frozen copy).
        execution: Device, threads and batch sizes (never change results).
        ground_truth: The ground-truth definition (the defect fraction a rule calls).
    """

    run_dir: Path
    row: str
    model: str
    selection: str
    fold: Fold
    train: TrainConfig
    execution: ExecutionConfig
    ground_truth: GroundTruthConfig


@dataclass
class FoldOutcome:
    """What a trainer returns: the held-out predictions and the facts for the fold's ``result.json``.

    Attributes:
        predictions: One per test patient of the fold.
        record: JSON-ready facts (epochs, validation loss, device, features ...), stored in ``result.json``.
        threshold: The fold's threshold record (setting, rule, value, validation figures), or None when the method
            sets a threshold per patient itself (rules).
        summary: One line for the log.
    """

    predictions: list[Prediction]
    record: dict[str, Any] = field(default_factory=dict)
    threshold: dict[str, Any] | None = None
    summary: str = ""
