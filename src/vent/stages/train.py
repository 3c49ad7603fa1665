"""Stage ``train``: every configured sequence model, 5-fold cross-validation by patient, per-patient metrics.

Reads: ``select/splits.json`` (validated against the cohort; never re-split silently), the selection of the mode
``select.mode`` per fold, and ``radiomics/<case>.h5``. Writes:

- ``train/splits.json``: the folds used (a copy of the select stage's, so the train folder is self-contained);
- ``train/<model>/fold_<k>/``: ``checkpoint.pt`` (atomic, per epoch; an interrupted fold resumes from it),
  ``model.pt`` (best weights, architecture spec, standardiser, feature ids) and ``result.json`` (written last; its
  ``threshold`` entry holds ``setting``, ``rule``, ``value``, ``validation_cases`` and ``validation`` figures);
- ``train/thresholds.json``: ``{"setting", "rows": {row: [{"fold", "rule", "value", "validation", ...}]}}``;
  each fold's binary threshold is chosen on its validation patients only (``train.threshold``), never its test ones;
- ``train/predictions/<model>/<case>.h5``: per-voxel defect probability, binary prediction at the fold's threshold
  (attribute ``threshold``), label, coordinates; and ``<case>_probability.nii.gz`` / ``<case>_defect.nii.gz`` on the
  case's 2 mm grid;
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

__all__ = ["TrainStage", "load_fold_model", "feature_positions", "threshold_note"]

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
        thresholds: dict[str, list[dict[str, Any]]] = {}
        outputs: dict[str, Any] = {"splits.json": "folds used", "per_patient_metrics.csv": "per-patient metrics"}
        with ctx.progress.task("train (models x folds)", total=len(runs) * len(folds)) as bar:
            for run in runs:
                for fold in folds:
                    rows += self._train_fold(ctx, plan, run, fold, files)
                    fold_dir = out / run.row / f"fold_{fold.index}"
                    record = json.loads((fold_dir / "result.json").read_text())["threshold"]
                    thresholds.setdefault(run.row, []).append({"fold": fold.index, **record})
                    outputs[f"{run.row}/fold_{fold.index}/model.pt"] = "trained weights"
                    bar.advance(1)
        if config.no_learning_baseline:
            rows += _score_baselines(ctx, folds, files, out / "predictions")
            runs = [*runs, TrainingRun(row="densest_inhale", model="densest_inhale", selection="none")]
        write_json(out / "thresholds.json", {"setting": config.threshold, "rows": thresholds})
        outputs["thresholds.json"] = "per row and fold: the binary threshold, its rule and the validation figures"
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
            if k not in ("models", "reference_model", "compare_selection_modes", "threshold", "no_learning_baseline")
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

        from vent.models.training import fit

        config = ctx.config.train
        fold_dir = ctx.stage_dir(self.name) / run.row / f"fold_{fold.index}"
        pred_root = ctx.stage_dir(self.name) / "predictions"
        result_path = fold_dir / "result.json"
        stamp = self._fold_stamp(plan, run, fold.index)
        previous = json.loads(result_path.read_text()) if result_path.is_file() else None
        if previous is not None and previous.get("stamp") == stamp:
            if (previous.get("threshold") or {}).get("setting") != config.threshold:
                previous = _rethreshold(previous, fold_dir, fold, files, pred_root, config)
                ctx.echo(f"[train] {run.row} fold {fold.index}: kept, new threshold {_threshold_text(previous)}")
            else:
                ctx.echo(f"[train] {run.row} fold {fold.index}: already trained with these settings, kept")
            return self._rescore(previous, pred_root)
        stamp_file = fold_dir / "stamp.txt"
        if fold_dir.exists() and (not stamp_file.is_file() or stamp_file.read_text() != stamp):
            shutil.rmtree(fold_dir)  # artifacts of another configuration: never resume from them
        fold_dir.mkdir(parents=True, exist_ok=True)
        write_text(stamp_file, stamp)

        inputs = _fold_inputs(ctx.run_dir, run, fold, files, config)
        model, train_batches, val_batches, settings = _fold_setup(run, fold, files, inputs, config)
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
            torch.save({"spec": model.spec, "state_dict": model.state_dict(), **inputs.payload(run, fold)}, tmp)

        choice = _choose_fold_threshold(config.threshold, fold.val, _predictor(model, files, inputs.common, config))
        pred_dir = pred_root / run.row
        for case in fold.test:
            labels, probability = _predict_case(model, files[case], inputs.common, config.device)
            _write_prediction(pred_dir / f"{case}.h5", pred_dir, case, probability, choice.threshold, files[case])
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
                "features": inputs.selected,
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "epochs_run": result.epochs_run,
                "stopped_early": result.stopped_early,
                "pos_weight": result.pos_weight,
                "device_setting": config.device,
                "device": result.device,
                "threshold": threshold_record(config.threshold, choice, fold.val),
                "history": result.history,
            },
        )
        (fold_dir / "checkpoint.pt").unlink(missing_ok=True)
        saved = json.loads(result_path.read_text())
        rows = self._rescore(saved, pred_root)
        ctx.echo(
            f"[train] {run.row} fold {fold.index}: {result.epochs_run} epochs (best {result.best_epoch}) on "
            f"{result.device}, threshold {_threshold_text(saved)}, held-out Dice "
            f"{np.nanmean([r['dice'] for r in rows]):.3f}"
        )
        return rows

    def _rescore(self, result: dict[str, Any], predictions_dir: Path) -> list[dict[str, Any]]:
        """Per-patient metrics of a fold's held-out patients from the saved predictions, at the fold's threshold."""
        from vent.metrics import patient_metrics

        pred_dir = predictions_dir / result["row"]
        threshold = float(result["threshold"]["value"])
        rows = []
        for case in result["test"]:
            path = pred_dir / f"{case}.h5"
            if not path.is_file():
                raise ArtifactError(f"prediction {path} is missing; re-run train with --force")
            with h5py.File(path, "r") as handle:
                labels, probability = handle["labels"][...], handle["probability"][...]
            metrics = patient_metrics(labels, probability, threshold=threshold)
            rows.append(
                {
                    "model": result["row"],
                    "case": case,
                    "fold": result["fold"],
                    **{k: float(metrics[k]) for k in METRIC_COLUMNS},
                }
            )
        return rows


@dataclass
class FoldInputs:
    """What a fold's model reads: the selected features, their positions, the input kind and the standardiser."""

    selected: list[str]
    positions: list[int] | None
    kind: str
    standardiser: Any
    common: dict[str, Any]
    edge_channels: list[str]

    def payload(self, run: TrainingRun, fold: Any) -> dict[str, Any]:
        """The ``model.pt`` entries besides the weights and the architecture spec."""
        return {
            "feature_ids": self.selected,
            "feature_positions": self.positions,
            "input_kind": self.kind,
            "selection": run.selection,
            "standardiser": self.standardiser.to_dict(),
            "fold": fold.index,
            "edge_channels": self.edge_channels,
            "edge_index": self.common["edge_index"],
        }


def _fold_inputs(run_dir: Path, run: TrainingRun, fold: Any, files: dict[str, Path], config: Any) -> FoldInputs:
    """The selection of the fold, its feature positions (the same in every file) and the training standardiser."""
    from vent.models import model_input_kind
    from vent.models.data import edge_channel_index, fit_standardiser

    kind = model_input_kind(run.model)
    selected = fold_selection(run_dir, run.selection, fold.index) if kind == "radiomics" else []
    positions = _common_positions(files, selected) if kind == "radiomics" else None
    edge_index = edge_channel_index(files[fold.train[0]], config.edge_inputs)
    # the same seed as the training batches, so the statistics use the voxels the model sees
    standardiser = fit_standardiser(
        [files[c] for c in fold.train], positions, kind, config.max_voxels_per_case, seed=config.seed + fold.index,
        edge_index=edge_index,
    )
    common = dict(
        feature_index=positions, input_kind=kind, standardiser=standardiser, batch_size=config.batch_size,
        edge_index=edge_index,
    )
    return FoldInputs(selected, positions, kind, standardiser, common, list(config.edge_inputs))


def _common_positions(files: dict[str, Path], selected: list[str]) -> list[int]:
    """Feature positions, checked to be the same in every radiomics file (a mismatch would mix features)."""
    by_case = {case: feature_positions(path, selected) for case, path in sorted(files.items())}
    distinct = {tuple(p) for p in by_case.values()}
    if len(distinct) > 1:
        first = next(iter(by_case))
        other = next(c for c, p in by_case.items() if p != by_case[first])
        raise ArtifactError(
            f"the selected features sit at different positions in radiomics/{first}.h5 and radiomics/{other}.h5; "
            "re-run radiomics with --force so every case has the same feature order"
        )
    return next(iter(by_case.values()))


def _fold_setup(run: TrainingRun, fold: Any, files: dict[str, Path], inputs: FoldInputs, config: Any) -> tuple:
    """(model, training batches, validation batches, settings) of one fold; validation patients are required."""
    import torch

    from vent.models import build_model
    from vent.models.data import VoxelBatches
    from vent.models.training import TrainSettings

    fold_seed = config.seed + fold.index
    batches = {
        part: VoxelBatches(
            [files[c] for c in cases],
            shuffle=part == "train",
            seed=fold_seed if part == "train" else config.seed,
            max_voxels_per_case=config.max_voxels_per_case,
            **inputs.common,
        )
        for part, cases in (("train", fold.train), ("val", fold.val))
    }
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
    train_batches = batches["train"]
    model = build_model(run.model, train_batches.n_inputs, train_batches.n_steps, **model_params(config, run.model))
    return model, train_batches, batches["val"], settings


def _predict_case(model: Any, path: Path, common: dict[str, Any], device: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, defect probability) of every analysed voxel of one case, in file order."""
    from vent.models.data import VoxelBatches
    from vent.models.training import predict_proba

    probability = predict_proba(model, VoxelBatches([path], shuffle=False, **common), device=device)
    return _labels(path), probability


def _predictor(model: Any, files: dict[str, Path], common: dict[str, Any], config: Any) -> Any:
    """case -> (labels, probability) with the fold's model (used for its validation patients only)."""
    return lambda case: _predict_case(model, files[case], common, config.device)


def _choose_fold_threshold(setting: float | str, val_cases: list[str], predict: Any) -> Any:
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


def threshold_record(setting: float | str, choice: Any, val_cases: list[str]) -> dict[str, Any]:
    """The ``threshold`` entry of a fold's ``result.json``: setting, rule, value and the validation figures."""
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


def _threshold_text(result: dict[str, Any]) -> str:
    record = result["threshold"]
    return f"{record['value']:.3f} ({record['rule']})"


def _rethreshold(
    result: dict[str, Any], fold_dir: Path, fold: Any, files: dict[str, Path], pred_root: Path, config: Any
) -> dict[str, Any]:
    """A kept fold under a new ``train.threshold``: choose it again on the validation patients, rewrite predictions."""
    from vent.models.data import Standardiser

    model, payload = load_fold_model(fold_dir / "model.pt")
    common = dict(
        feature_index=payload["feature_positions"],
        input_kind=payload["input_kind"],
        standardiser=Standardiser.from_dict(payload["standardiser"]),
        batch_size=config.batch_size,
        edge_index=payload.get("edge_index"),
    )
    choice = _choose_fold_threshold(config.threshold, result["val"], _predictor(model, files, common, config))
    pred_dir = pred_root / result["row"]
    for case in result["test"]:
        path = pred_dir / f"{case}.h5"
        if not path.is_file():
            raise ArtifactError(f"prediction {path} is missing; re-run train with --force")
        with h5py.File(path, "r") as handle:
            probability = handle["probability"][...]
        _write_prediction(path, pred_dir, case, probability, choice.threshold, files[case])
    updated = {**result, "threshold": threshold_record(config.threshold, choice, result["val"])}
    write_json(fold_dir / "result.json", updated)
    return updated


def threshold_note(run_dir: Path) -> str:
    """One sentence for the Table 2 note: the threshold rule and each row's per-fold thresholds."""
    path = Path(run_dir) / "train" / "thresholds.json"
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; re-run the train stage")
    document = json.loads(path.read_text())
    per_row = "; ".join(
        f"{row} " + "/".join(f"{f['value']:.2f}" for f in folds) for row, folds in document["rows"].items()
    )
    setting = document["setting"]
    how = f"fixed at {setting:g}" if not isinstance(setting, str) else f"'{setting}' on each fold's validation patients"
    return f"Binary threshold {how} (per fold: {per_row})."


def _score_baselines(ctx: RunContext, folds: list[Any], files: dict[str, Path], pred_root: Path) -> list[dict]:
    """The no-learning densest-at-inhale rule on every fold's test patients (``vent.baselines``): predictions and
    per-patient metrics, as for a trained row, so Table 2 pairs it with the models on the same patients."""
    from vent.baselines import densest_at_inhale
    from vent.metrics import patient_metrics

    fraction = ctx.config.preprocess.ground_truth.fraction
    rows = []
    for fold in folds:
        for case in fold.test:
            with h5py.File(files[case], "r") as handle:
                intensity, labels = handle["intensity"][...], handle["labels"][...]
                inhale = int(handle.attrs["inhale_phase"]) if "inhale_phase" in handle.attrs else None
            if inhale is None:
                raise ArtifactError(f"{files[case]} has no inhale_phase attribute; re-run the radiomics stage")
            score, threshold = densest_at_inhale(intensity, inhale, fraction)
            pred_dir = pred_root / "densest_inhale"
            _write_prediction(pred_dir / f"{case}.h5", pred_dir, case, score, threshold, files[case])
            rows.append({"model": "densest_inhale", "case": case, "fold": fold.index,
                         **patient_metrics(labels, score, threshold)})
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
