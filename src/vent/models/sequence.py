"""Trainer of the sequence family (``lstm``, ``bilstm``, ``transformer``, ``lstm_raw``): one fold, end to end.

For a :class:`vent.models.jobs.FoldJob`: the fold's feature selection (radiomic inputs) and its positions in every
radiomics file, a standardiser fitted on the training patients' voxels only, early-stopped training on the fold's
validation patients (``vent.models.training.fit``, resumable from ``checkpoint.pt``), the binary threshold chosen on
the validation patients only (``train.threshold``), and the defect probability of every analysed voxel of each test
patient. Writes ``model.pt`` (weights, architecture spec, standardiser, feature ids) and keeps the last checkpoint,
so raising ``train.max_epochs`` or ``train.patience`` continues training instead of starting again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vent.errors import ArtifactError
from vent.io import layout
from vent.io.artifacts import open_radiomics_case
from vent.io.atomic import atomic_path
from vent.io.predictions import Prediction
from vent.models.jobs import FoldJob, FoldOutcome

__all__ = [
    "train_sequence_fold",
    "load_fold_model",
    "feature_positions",
    "choose_fold_threshold",
    "threshold_record",
    "ModelInputs",
    "fold_inputs",
    "fit_fold",
    "stage_fold_batches",
    "fold_settings",
    "fit_record",
    "save_fold_model",
    "predict_case",
]

log = logging.getLogger(__name__)


@dataclass
class ModelInputs:
    """How a fold's model reads a radiomics file: input kind, feature positions, edge channels, standardiser.

    Saved in ``model.pt`` (:meth:`payload`) and rebuilt from it (:meth:`from_payload`), so training, prediction and
    explanation feed a model exactly the same inputs.
    """

    kind: str
    feature_ids: list[str]
    positions: list[int] | None
    edge_channels: list[str]
    edge_index: list[int] | None
    standardiser: Any

    def batches(self, paths: list[Path], batch_size: int, **options: Any) -> Any:
        """``VoxelBatches`` over ``paths`` with this fold's inputs."""
        from vent.models.data import VoxelBatches

        return VoxelBatches(
            paths,
            feature_index=self.positions,
            input_kind=self.kind,
            standardiser=self.standardiser,
            batch_size=batch_size,
            edge_index=self.edge_index,
            **options,
        )

    def payload(self) -> dict[str, Any]:
        return {
            "feature_ids": self.feature_ids,
            "feature_positions": self.positions,
            "input_kind": self.kind,
            "standardiser": self.standardiser.to_dict(),
            "edge_channels": self.edge_channels,
            "edge_index": self.edge_index,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ModelInputs:
        from vent.models.data import Standardiser

        return cls(
            kind=payload["input_kind"],
            feature_ids=list(payload["feature_ids"]),
            positions=payload["feature_positions"],
            edge_channels=list(payload.get("edge_channels") or []),
            edge_index=payload.get("edge_index"),
            standardiser=Standardiser.from_dict(payload["standardiser"]),
        )


def feature_positions(radiomics_file: Path, selected: list[str]) -> list[int]:
    """Positions of the selected feature ids on the F axis of a radiomics file."""
    ids = open_radiomics_case(radiomics_file).feature_ids
    missing = [f for f in selected if f not in ids]
    if missing:
        raise ArtifactError(f"selected features {missing} are not in {radiomics_file}; re-run radiomics and select")
    return [ids.index(f) for f in selected]


def _common_positions(files: dict[str, Path], selected: list[str]) -> list[int]:
    """Feature positions, checked to be the same in every radiomics file (a mismatch would mix features)."""
    by_case = {case: feature_positions(path, selected) for case, path in sorted(files.items())}
    if len({tuple(p) for p in by_case.values()}) > 1:
        first = next(iter(by_case))
        other = next(c for c, p in by_case.items() if p != by_case[first])
        raise ArtifactError(
            f"the selected features sit at different positions in radiomics/{first}.h5 and radiomics/{other}.h5; "
            "re-run radiomics with --force so every case has the same feature order"
        )
    return next(iter(by_case.values()))


def read_selection(run_dir: Path, mode: str, fold: int) -> list[str]:
    """The feature ids selected for ``fold`` in ``mode`` (``nested`` or ``paper``)."""
    import json

    path = layout.selection_file(run_dir, mode, fold)
    try:
        return list(json.loads(path.read_text())["selected"])
    except FileNotFoundError:
        raise ArtifactError(f"selection {path} is missing; run the select stage") from None


def fold_inputs(job: FoldJob, files: dict[str, Path]) -> ModelInputs:
    """The fold's selection, its feature positions (the same in every file) and the training standardiser."""
    from vent.models.data import edge_channel_index, fit_standardiser
    from vent.models.registry import get_spec

    kind = get_spec(job.model).input_kind
    selected = read_selection(job.run_dir, job.selection, job.fold.index) if kind == "radiomics" else []
    positions = _common_positions(files, selected) if kind == "radiomics" else None
    edge_index = edge_channel_index(files[job.fold.train[0]], job.train.edge_inputs)
    # the same seed as the training batches, so the statistics use the voxels the model sees
    standardiser = fit_standardiser(
        [files[c] for c in job.fold.train],
        positions,
        kind,
        job.train.max_voxels_per_case,
        seed=job.train.seed + job.fold.index,
        edge_index=edge_index,
    )
    return ModelInputs(kind, selected, positions, list(job.train.edge_inputs), edge_index, standardiser)


def fold_settings(job: FoldJob, loss: str = "bce", batch_size: int | None = None) -> Any:
    """A fold's ``TrainSettings`` from the ``train`` section (seed = train.seed + fold index; device from
    ``execution``), for every network trainer. ``loss="mse"`` (a continuous target) leaves out
    ``train.pos_weight``, which weighs a binary target's defect class; ``batch_size`` overrides ``train.batch_size``
    (a volume network's patches per batch)."""
    from vent.models.training import TrainSettings

    config = job.train
    return TrainSettings(
        loss=loss,
        lr=config.lr,
        batch_size=config.batch_size if batch_size is None else batch_size,
        max_epochs=config.max_epochs,
        patience=config.patience,
        clip_grad_norm=config.clip_grad_norm,
        seed=config.seed + job.fold.index,
        pos_weight=config.pos_weight if loss == "bce" else None,
        device=job.execution.device,
        weight_decay=config.weight_decay,
        mixed_precision=job.execution.mixed_precision,
    )


def fit_fold(
    job: FoldJob, files: dict[str, Path], inputs: ModelInputs, progress: Any,
    targets: dict[str, np.ndarray] | None = None, loss: str = "bce",
) -> tuple[Any, Any]:
    """Build the seeded network and train it (resuming from the fold's checkpoint); returns (model, FitResult).

    ``targets`` (case -> per-voxel target) replace the labels for a continuous target trained with ``loss="mse"``.
    """
    import torch

    from vent.models import build_model
    from vent.models.training import fit

    config, fold = job.train, job.fold
    fold_seed = config.seed + fold.index
    options = {"max_voxels_per_case": config.max_voxels_per_case}

    def target_of(cases: list[str]) -> dict[str, Any]:
        return {} if targets is None else {"targets": [targets[c] for c in cases]}

    train = inputs.batches([files[c] for c in fold.train], config.batch_size, shuffle=True, seed=fold_seed,
                           **options, **target_of(fold.train))
    val = inputs.batches([files[c] for c in fold.val], config.batch_size, shuffle=False, seed=config.seed,
                         **options, **target_of(fold.val))
    train, val = stage_fold_batches(job, train, val)
    torch.manual_seed(fold_seed)
    model = build_model(job.model, train.n_inputs, train.n_steps, **job.train.models[job.model])
    checkpoint = layout.checkpoint_file(job.run_dir, job.row, fold.index)
    with progress.task(f"{job.row} fold {fold.index} (epochs)", total=config.max_epochs) as epochs:
        result = fit(model, train, val, fold_settings(job, loss), checkpoint_path=checkpoint,
                     progress=lambda info: epochs.advance(1))
    model.cpu()
    result.data_path = {"train": train.facts(), "validation": val.facts()}
    return model, result


def stage_fold_batches(job: FoldJob, train: Any, val: Any) -> tuple[Any, Any]:
    """The fold's training and validation batches staged once (``vent.models.data.StagedBatches``): the same
    batches, bit for bit, read from one contiguous array instead of the compressed files every epoch.

    ``execution.memory_budget_gb`` bounds the RAM of both together (training first); what does not fit is staged in
    a temporary mapped file in the fold's folder. On CUDA the in-memory rows are also put on the GPU.
    """
    from vent.models.data import StagedBatches, staged_bytes
    from vent.models.training import resolve_device

    budget = int(job.execution.memory_budget_gb * 1e9)
    device = resolve_device(job.execution.device)
    spill_dir = layout.fold_dir(job.run_dir, job.row, job.fold.index)
    spill_dir.mkdir(parents=True, exist_ok=True)
    staged_train = StagedBatches(train, budget, spill_dir=spill_dir, device=device)
    left = budget - (staged_bytes(train) if staged_train.in_memory else 0)
    return staged_train, StagedBatches(val, left, spill_dir=spill_dir, device=device)


def predict_case(model: Any, path: Path, inputs: ModelInputs, job: FoldJob) -> np.ndarray:
    """Defect probability of every analysed voxel of one case, in file order."""
    from vent.models.training import predict_proba

    batches = inputs.batches([path], job.train.batch_size, shuffle=False)
    return predict_proba(model, batches, device=job.execution.device)


def threshold_record(setting: float | str, choice: Any, val_cases: list[str]) -> dict[str, Any]:
    """A fold's threshold record: setting, rule, value and the validation figures it was chosen from."""
    from vent.metrics import DICE_GRID

    record = {
        "setting": setting,
        "rule": choice.rule,
        "value": choice.threshold,
        "validation_cases": list(val_cases),
        "validation": choice.figures,
    }
    if choice.rule == "val_dice":
        record["grid"] = {"start": DICE_GRID[0], "stop": DICE_GRID[-1], "step": 0.01}
    return record


def choose_fold_threshold(setting: float | str, val_cases: list[str], predict: Any) -> Any:
    """The fold's binary threshold from its validation patients: ``predict`` is called for them and no other case.

    Args:
        setting: ``train.threshold``: a fixed number, ``"val_defect_fraction"`` or ``"val_dice"``.
        val_cases: The fold's validation patients.
        predict: case id -> (labels, probability).

    Returns:
        The :class:`vent.metrics.ThresholdChoice`.
    """
    from vent.metrics import choose_threshold

    if not val_cases:
        raise ArtifactError("a fold without validation patients cannot choose a threshold; re-split the folds")
    pairs = [predict(case) for case in val_cases]
    return choose_threshold(setting, [p[0] for p in pairs], [p[1] for p in pairs])


def _choose_threshold(model: Any, job: FoldJob, files: dict[str, Path], inputs: ModelInputs) -> Any:
    """``choose_fold_threshold`` with the fold's model on its validation patients' radiomics files."""

    def predict(case: str) -> tuple[np.ndarray, np.ndarray]:
        return open_radiomics_case(files[case]).labels(), predict_case(model, files[case], inputs, job)

    return choose_fold_threshold(job.train.threshold, job.fold.val, predict)


def _test_predictions(model: Any, job: FoldJob, files: dict[str, Path], inputs: ModelInputs, threshold: float):
    """The contract's prediction of every test patient of the fold, at the radiomics file's voxels."""
    predictions = []
    for case in job.fold.test:
        source = open_radiomics_case(files[case])
        probability = predict_case(model, files[case], inputs, job)
        predictions.append(
            Prediction(case, job.row, job.fold.index, probability, threshold, source.coords(), source.grid)
        )
    return predictions


def train_sequence_fold(job: FoldJob, progress: Any) -> FoldOutcome:
    """Train one sequence model on one fold and predict its held-out patients (module docstring)."""
    files = {case: layout.case_file(job.run_dir, "radiomics", case) for case in job.fold.all_cases()}
    inputs = fold_inputs(job, files)
    model, result = fit_fold(job, files, inputs, progress)
    save_fold_model(model, job, inputs)
    choice = _choose_threshold(model, job, files, inputs)
    record = {**fit_record(result, inputs, job), "history": result.history}
    resumed = "" if result.resumed_from_epoch is None else f", resumed after epoch {result.resumed_from_epoch}"
    return FoldOutcome(
        predictions=_test_predictions(model, job, files, inputs, choice.threshold),
        record=record,
        threshold=threshold_record(job.train.threshold, choice, job.fold.val),
        summary=f"{result.epochs_run} epochs (best {result.best_epoch}{resumed}) on {result.device}, threshold "
        f"{choice.threshold:.3f} ({choice.rule})",
    )


def save_fold_model(model: Any, job: FoldJob, inputs: ModelInputs) -> None:
    """``model.pt``: the network's spec and weights and how it reads its inputs (atomic)."""
    from vent.models.training import save_torch

    with atomic_path(layout.model_file(job.run_dir, job.row, job.fold.index)) as tmp:
        payload = {"spec": model.spec, "state_dict": model.state_dict(), **inputs.payload()}
        save_torch({**payload, "selection": job.selection, "fold": job.fold.index}, tmp)


def fit_record(result: Any, inputs: ModelInputs, job: FoldJob) -> dict[str, Any]:
    """The training facts of a fold for its ``result.json`` (without the per-epoch history)."""
    return {"features": inputs.feature_ids, **result.facts(), "data_path": result.data_path,
            "device_setting": job.execution.device}


def load_fold_model(path: Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild a trained fold model from ``model.pt``; returns (model in eval mode, the saved payload)."""
    import torch

    from vent.io.seals import verify_artifact
    from vent.models import build_model

    if (problem := verify_artifact(path)) is not None:
        raise ArtifactError(
            f"trained model {path} {problem}; run the train stage again (`vent run CONFIG --from train`)"
        )
    payload = torch.load(path, map_location="cpu", weights_only=False)
    spec = payload["spec"]
    model = build_model(spec["name"], spec["n_inputs"], spec["n_steps"], **spec["params"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload
