"""The model card: what a run's trained models need to be applied to a new patient, in one JSON file.

``train/model_card.json`` (written by the train stage, read by ``vent predict``) makes the run folder
self-describing: ``vent predict RUN_DIR CASE`` needs no config. It holds the format, the vent and library versions
that trained the models, the settings that shape a model's inputs (``data.phase_order``, the ``preprocess`` and
``radiomics`` sections, the ``train`` section for batch sizes and edge inputs), the phase count and the training
cohort (cases, modality), and per Table 2 row its method, selection mode and, per fold, the model file (relative to
the run folder), the feature ids it reads and its binary threshold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vent.errors import ArtifactError
from vent.io import layout
from vent.io.atomic import write_json

__all__ = ["MODEL_CARD_FORMAT", "write_model_card", "read_model_card"]

MODEL_CARD_FORMAT = 1


def write_model_card(run_dir: Path, card: dict[str, Any]) -> Path:
    """Write the card (atomically), stamped with ``MODEL_CARD_FORMAT``."""
    path = layout.model_card_file(run_dir)
    write_json(path, {"format_version": MODEL_CARD_FORMAT, **card})
    return path


def read_model_card(run_dir: Path) -> dict[str, Any]:
    """The card of a run folder.

    Raises:
        ArtifactError: the folder is not a trained run, or its card is of another format (names what to do).
    """
    path = layout.model_card_file(Path(run_dir))
    if not path.is_file():
        what = "is not a vent run folder" if not Path(run_dir, "train").is_dir() else "has no model card"
        raise ArtifactError(
            f"{run_dir} {what} ({path} is missing); give the run_dir of a finished `vent run`, or re-run its train "
            "stage with this vent (`vent run CONFIG --only train`) to write the card"
        )
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ArtifactError(
            f"model card {path} is unreadable ({error}); re-run `vent run CONFIG --only train`"
        ) from None
    if card.get("format_version") != MODEL_CARD_FORMAT:
        raise ArtifactError(
            f"model card {path} has format {card.get('format_version')}; this vent reads format {MODEL_CARD_FORMAT}: "
            "re-run `vent run CONFIG --only train --force` with this vent"
        )
    return card
