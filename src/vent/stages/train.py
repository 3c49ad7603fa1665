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
import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vent.errors import ArtifactError
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
        ids = [v.decode() if isinstance(v, bytes) else str(v) for v in handle.attrs["feature_ids"]]
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


def _write_prediction(path: Path, nifti_dir: Path, case: str, probability: np.ndarray, threshold: float,
                      radiomics_file: Path) -> None:
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
    for suffix, array in (("probability", volume),
                          ("defect", np.where(np.isnan(volume), 0, volume >= threshold).astype(np.uint8))):
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

        from vent.metrics import patient_metrics
        from vent.models import build_model, model_input_kind
        from vent.models.data import VoxelBatches, fit_standardiser
        from vent.models.training import TrainSettings, fit, predict_proba
        from vent.cv import save_folds

        config = ctx.config.train
        cases = sorted(upstream_cases(ctx, "radiomics"))
        folds = load_splits(ctx.run_dir, cases)
        out = ctx.stage_dir(self.name)
        save_folds(out / "splits.json", folds, {"source": "select/splits.json", "cases": cases})
        files = {case: ctx.stage_dir("radiomics") / f"{case}.h5" for case in cases}
        settings = TrainSettings(lr=config.lr, batch_size=config.batch_size, max_epochs=config.max_epochs,
                                 patience=config.patience, clip_grad_norm=config.clip_grad_norm, seed=config.seed,
                                 pos_weight=config.pos_weight, device=config.device, weight_decay=config.weight_decay)
        rows: list[dict[str, Any]] = []
        outputs: dict[str, Any] = {"splits.json": "folds used", "per_patient_metrics.csv": "per-patient metrics"}
        with ctx.progress.task("train (models x folds)", total=len(config.models) * len(folds)) as bar:
            for model_name in config.models:
                kind = model_input_kind(model_name)
                for fold in folds:
                    fold_dir = out / model_name / f"fold_{fold.index}"
                    result_path = fold_dir / "result.json"
                    stamp = f"{plan.fingerprint}:{model_name}:{fold.index}"
                    previous = json.loads(result_path.read_text()) if result_path.is_file() else None
                    if previous is not None and previous.get("stamp") == stamp:
                        rows += previous["metrics"]
                        bar.advance(1)
                        continue
                    stamp_file = fold_dir / "stamp.txt"
                    if fold_dir.exists() and (not stamp_file.is_file() or stamp_file.read_text() != stamp):
                        shutil.rmtree(fold_dir)  # artifacts of another configuration: never resume from them
                    fold_dir.mkdir(parents=True, exist_ok=True)
                    write_text(stamp_file, stamp)

                    selected = fold_selection(ctx.run_dir, ctx.config.select.mode, fold.index) if kind == "radiomics" else []
                    positions = feature_positions(files[cases[0]], selected) if kind == "radiomics" else None
                    train_files = [files[c] for c in fold.train]
                    val_files = [files[c] for c in (fold.val or fold.train)]
                    standardiser = fit_standardiser(train_files, positions, kind, config.max_voxels_per_case,
                                                    seed=config.seed)
                    common = dict(feature_index=positions, input_kind=kind, standardiser=standardiser,
                                  batch_size=config.batch_size)
                    train_batches = VoxelBatches(train_files, shuffle=True, seed=config.seed + fold.index,
                                                 max_voxels_per_case=config.max_voxels_per_case, **common)
                    val_batches = VoxelBatches(val_files, shuffle=False, seed=config.seed,
                                               max_voxels_per_case=config.max_voxels_per_case, **common)
                    torch.manual_seed(config.seed + fold.index)
                    model = build_model(model_name, train_batches.n_inputs, train_batches.n_steps,
                                        **model_params(config, model_name))
                    result = fit(model, train_batches, val_batches, settings, checkpoint_path=fold_dir / "checkpoint.pt")
                    model.cpu()
                    with atomic_path(fold_dir / "model.pt") as tmp:
                        torch.save({"spec": model.spec, "state_dict": model.state_dict(), "feature_ids": selected,
                                    "feature_positions": positions, "input_kind": kind,
                                    "standardiser": standardiser.to_dict(), "fold": fold.index}, tmp)

                    fold_rows = []
                    for case in fold.test:
                        batches = VoxelBatches([files[case]], shuffle=False, **common)
                        probability = predict_proba(model, batches, device=config.device)
                        labels = _labels(files[case])
                        metrics = patient_metrics(labels, probability, threshold=config.threshold)
                        fold_rows.append({"model": model_name, "case": case, "fold": fold.index,
                                          **{k: float(metrics[k]) for k in METRIC_COLUMNS}})
                        pred_dir = out / "predictions" / model_name
                        _write_prediction(pred_dir / f"{case}.h5", pred_dir, case, probability, config.threshold,
                                          files[case])
                    write_json(result_path, {
                        "stamp": stamp, "model": model_name, "fold": fold.index, "train": fold.train,
                        "val": fold.val, "test": fold.test, "features": selected,
                        "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                        "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
                        "pos_weight": result.pos_weight, "device": result.device, "history": result.history,
                        "metrics": fold_rows,
                    })
                    (fold_dir / "checkpoint.pt").unlink(missing_ok=True)
                    rows += fold_rows
                    ctx.echo(f"[train] {model_name} fold {fold.index}: {result.epochs_run} epochs, best "
                             f"{result.best_epoch}, mean test Dice "
                             f"{np.nanmean([r['dice'] for r in fold_rows]):.3f}")
                    bar.advance(1)
                for fold in folds:
                    outputs[f"{model_name}/fold_{fold.index}/model.pt"] = "trained weights"
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["model", "case", "fold", *METRIC_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
        write_text(out / "per_patient_metrics.csv", buffer.getvalue())
        return outputs


def _labels(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle["labels"][...]
