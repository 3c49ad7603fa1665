"""Stage ``train``: every configured sequence model, 5-fold cross-validation by patient, per-patient metrics.

Reads: ``select/splits.json`` (validated against the cohort; never re-split silently), the selection of the mode
``select.mode`` per fold, and ``radiomics/<case>.h5``. Writes:

- ``train/splits.json``: the folds used (a copy of the select stage's, so the train folder is self-contained);
- ``train/<model>/fold_<k>/``: ``checkpoint.pt`` (atomic, per epoch; an interrupted fold resumes from it),
  ``model.pt`` (best weights, architecture spec, standardiser, feature ids) and ``result.json`` (written last);
- ``train/predictions/<model>/<case>.h5``: per-voxel defect probability, binary prediction, label, coordinates;
  and ``<case>_probability.nii.gz`` / ``<case>_defect.nii.gz`` on the case's 2 mm grid;
- ``train/per_patient_metrics.csv``: model, case, fold, dice, auc, sensitivity, accuracy.

Config: ``train`` (and ``cv``, ``select.mode``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vent.errors import ArtifactError
from vent.io.artifacts import string_list
from vent.io.atomic import atomic_path, write_json, write_text
from vent.runner import RunContext, StagePlan
from vent.stages.base import Stage, upstream_cases
from vent.stages.select import fold_selection, load_splits

__all__ = ["TrainStage", "load_fold_model", "feature_positions"]

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("dice", "auc", "sensitivity", "accuracy")


def feature_positions(radiomics_file: Path, selected: list[str]) -> list[int]:
    """Positions of the selected feature ids on the F axis of a radiomics file."""
    with h5py.File(radiomics_file, "r") as handle:
        ids = string_list(handle.attrs["feature_ids"])
    missing = [f for f in selected if f not in ids]
    if missing:
        raise ArtifactError(f"selected features {missing} are not in {radiomics_file}; re-run radiomics and select")
    return [ids.index(f) for f in selected]


def model_params(config: Any, name: str) -> dict[str, Any]:
    """Architecture parameters for ``build_model`` from the train config."""
    if name == "transformer":
        return json.loads(config.transformer.model_dump_json())
    return {"hidden": list(config.hidden)}


def load_fold_model(path: Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild a trained fold model from ``model.pt``; returns (model in eval mode, metadata)."""
    import torch

    from vent.models import build_model

    if not path.is_file():
        raise ArtifactError(f"trained model {path} is missing; run the train stage")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    spec = payload["spec"]
    model = build_model(spec["name"], spec["n_inputs"], spec["n_steps"], **spec["params"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload


def _write_prediction(
    path: Path, nifti_dir: Path, case: str, probability: np.ndarray, threshold: float, radiomics_file: Path
) -> None:
    from vent.io.images import Grid, image_from_array

    with h5py.File(radiomics_file, "r") as source:
        coords = source["coords"][...]
        labels = source["labels"][...]
        grid = Grid.from_attrs(source.attrs)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("probability", data=probability.astype(np.float32), compression="gzip")
            handle.create_dataset("defect", data=(probability >= threshold).astype(np.uint8), compression="gzip")
            handle.create_dataset("labels", data=labels, compression="gzip")
            handle.create_dataset("coords", data=coords, compression="gzip")
            handle.attrs["case_id"] = case
            handle.attrs["threshold"] = threshold
            for key, value in grid.to_attrs().items():
                handle.attrs[key] = value
    import SimpleITK as sitk

    volume = np.full(grid.shape_zyx, np.nan, dtype=np.float32)
    volume[tuple(coords.T)] = probability
    for suffix, array in (
        ("probability", volume),
        ("defect", np.where(np.isnan(volume), 0, volume >= threshold).astype(np.uint8)),
    ):
        target = nifti_dir / f"{case}_{suffix}.nii.gz"
        with atomic_path(target) as tmp:
            sitk.WriteImage(image_from_array(array, grid), str(tmp))


class TrainStage(Stage):
    name = "train"
    sections = ("cv",)
    needs = ("select",)
    version = "1"

    def input_identity(self, ctx: RunContext) -> dict[str, Any]:
        # The selection mode lives in the select section but only decides which selection train reads.
        return {"select.mode": ctx.config.select.mode}

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        import torch

        from vent.cv import save_folds

        config = ctx.config.train
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        cases = sorted(upstream_cases(ctx, "radiomics"))
        folds = load_splits(ctx.run_dir, cases)
        out = ctx.stage_dir(self.name)
        save_folds(out / "splits.json", folds, {"source": "select/splits.json", "cases": cases})
        files = {case: ctx.case_file("radiomics", case) for case in cases}
        runs = training_runs(ctx.config)
        rows: list[dict[str, Any]] = []
        outputs: dict[str, Any] = {"splits.json": "folds used", "per_patient_metrics.csv": "per-patient metrics"}
        with ctx.progress.task("train (models x folds)", total=len(runs) * len(folds)) as bar:
            for run in runs:
                for fold in folds:
                    rows += self._train_fold(ctx, plan, run, fold, files)
                    outputs[f"{run.row}/fold_{fold.index}/model.pt"] = "trained weights"
                    bar.advance(1)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["model", "case", "fold", *METRIC_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
        write_text(out / "per_patient_metrics.csv", buffer.getvalue())
        write_json(out / "runs.json", [run.__dict__ for run in runs])
        outputs["runs.json"] = "the trained rows: model, selection mode"
        return outputs

    def _fold_stamp(self, plan: StagePlan, run: TrainingRun, fold_index: int) -> str:
        """Identity of one (model, selection mode, fold) training: adding a model does not retrain the others."""
        train = {
            k: v
            for k, v in plan.definition["config"]["train"].items()
            if k not in ("models", "reference_model", "compare_selection_modes", "threshold")
        }
        payload = {
            "version": self.version,
            "train": train,
            "cv": plan.definition["config"].get("cv"),
            "upstream": plan.definition["upstream"],
            "inputs": plan.inputs,
            "run": run.__dict__,
            "fold": fold_index,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def _train_fold(
        self, ctx: RunContext, plan: StagePlan, run: TrainingRun, fold: Any, files: dict[str, Path]
    ) -> list[dict[str, Any]]:
        import torch

        from vent.models import build_model, model_input_kind
        from vent.models.data import VoxelBatches, fit_standardiser
        from vent.models.training import TrainSettings, fit, predict_proba

        config = ctx.config.train
        fold_dir = ctx.stage_dir(self.name) / run.row / f"fold_{fold.index}"
        result_path = fold_dir / "result.json"
        stamp = self._fold_stamp(plan, run, fold.index)
        previous = json.loads(result_path.read_text()) if result_path.is_file() else None
        if previous is not None and previous.get("stamp") == stamp:
            ctx.echo(f"[train] {run.row} fold {fold.index}: already trained with these settings, kept")
            return self._rescore(previous, ctx.stage_dir(self.name) / "predictions", config)
        stamp_file = fold_dir / "stamp.txt"
        if fold_dir.exists() and (not stamp_file.is_file() or stamp_file.read_text() != stamp):
            shutil.rmtree(fold_dir)  # artifacts of another configuration: never resume from them
        fold_dir.mkdir(parents=True, exist_ok=True)
        write_text(stamp_file, stamp)

        kind = model_input_kind(run.model)
        selected = fold_selection(ctx.run_dir, run.selection, fold.index) if kind == "radiomics" else []
        cases = sorted(files)
        positions = feature_positions(files[cases[0]], selected) if kind == "radiomics" else None
        train_files = [files[c] for c in fold.train]
        val_files = [files[c] for c in (fold.val or fold.train)]
        fold_seed = config.seed + fold.index
        # the same seed as the training batches, so the statistics use the voxels the model sees
        standardiser = fit_standardiser(train_files, positions, kind, config.max_voxels_per_case, seed=fold_seed)
        common = dict(feature_index=positions, input_kind=kind, standardiser=standardiser, batch_size=config.batch_size)
        train_batches = VoxelBatches(
            train_files, shuffle=True, seed=fold_seed, max_voxels_per_case=config.max_voxels_per_case, **common
        )
        val_batches = VoxelBatches(
            val_files, shuffle=False, seed=config.seed, max_voxels_per_case=config.max_voxels_per_case, **common
        )
        settings = TrainSettings(
            lr=config.lr,
            batch_size=config.batch_size,
            max_epochs=config.max_epochs,
            patience=config.patience,
            clip_grad_norm=config.clip_grad_norm,
            seed=fold_seed,
            pos_weight=config.pos_weight,
            device=config.device,
            weight_decay=config.weight_decay,
        )
        torch.manual_seed(fold_seed)
        model = build_model(run.model, train_batches.n_inputs, train_batches.n_steps, **model_params(config, run.model))
        with ctx.progress.task(f"{run.row} fold {fold.index} (epochs)", total=config.max_epochs) as epochs:
            result = fit(
                model,
                train_batches,
                val_batches,
                settings,
                checkpoint_path=fold_dir / "checkpoint.pt",
                progress=lambda info: epochs.advance(1),
            )
        model.cpu()
        with atomic_path(fold_dir / "model.pt") as tmp:
            torch.save(
                {
                    "spec": model.spec,
                    "state_dict": model.state_dict(),
                    "feature_ids": selected,
                    "feature_positions": positions,
                    "input_kind": kind,
                    "selection": run.selection,
                    "standardiser": standardiser.to_dict(),
                    "fold": fold.index,
                },
                tmp,
            )

        pred_dir = ctx.stage_dir(self.name) / "predictions" / run.row
        for case in fold.test:
            batches = VoxelBatches([files[case]], shuffle=False, **common)
            probability = predict_proba(model, batches, device=config.device)
            _write_prediction(pred_dir / f"{case}.h5", pred_dir, case, probability, config.threshold, files[case])
        write_json(
            result_path,
            {
                "stamp": stamp,
                "row": run.row,
                "model": run.model,
                "selection": run.selection,
                "fold": fold.index,
                "train": fold.train,
                "val": fold.val,
                "test": fold.test,
                "features": selected,
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "epochs_run": result.epochs_run,
                "stopped_early": result.stopped_early,
                "pos_weight": result.pos_weight,
                "device": result.device,
                "history": result.history,
            },
        )
        (fold_dir / "checkpoint.pt").unlink(missing_ok=True)
        rows = self._rescore(json.loads(result_path.read_text()), pred_dir.parent, config)
        ctx.echo(
            f"[train] {run.row} fold {fold.index}: {result.epochs_run} epochs (best {result.best_epoch}), "
            f"held-out Dice {np.nanmean([r['dice'] for r in rows]):.3f}"
        )
        return rows

    def _rescore(self, result: dict[str, Any], predictions_dir: Path, config: Any) -> list[dict[str, Any]]:
        """Per-patient metrics of a fold's held-out patients from the saved predictions (threshold from config)."""
        from vent.metrics import patient_metrics

        pred_dir = predictions_dir / result["row"]
        rows = []
        for case in result["test"]:
            path = pred_dir / f"{case}.h5"
            if not path.is_file():
                raise ArtifactError(f"prediction {path} is missing; re-run train with --force")
            with h5py.File(path, "r") as handle:
                labels, probability = handle["labels"][...], handle["probability"][...]
            metrics = patient_metrics(labels, probability, threshold=config.threshold)
            rows.append(
                {
                    "model": result["row"],
                    "case": case,
                    "fold": result["fold"],
                    **{k: float(metrics[k]) for k in METRIC_COLUMNS},
                }
            )
        return rows


@dataclass(frozen=True)
class TrainingRun:
    """One row of Table 2: a model trained on the features of one selection mode (raw models ignore the mode)."""

    row: str
    model: str
    selection: str


def training_runs(config: Any) -> list[TrainingRun]:
    """The (row, model, selection mode) trainings of a config, the reference model first among equals.

    Every model uses ``select.mode``; with ``train.compare_selection_modes`` the reference model is trained again
    on the other mode's features, as the row ``<model>@<mode>``, so Table 2 shows what the selection mode changes.
    """
    from vent.models import model_input_kind

    mode = config.select.mode
    runs = [
        TrainingRun(row=name, model=name, selection=mode if model_input_kind(name) == "radiomics" else "none")
        for name in config.train.models
    ]
    reference = config.train.reference_model
    if config.train.compare_selection_modes and model_input_kind(reference) == "radiomics":
        other = "paper" if mode == "nested" else "nested"
        runs.append(TrainingRun(row=f"{reference}@{other}", model=reference, selection=other))
    return runs


def _labels(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle["labels"][...]
