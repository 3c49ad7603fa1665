"""Trainer of the volume family (``unet``, ``unetpp``, ``resunet``): a 3D network on the whole 4DCT, one fold.

For a :class:`vent.models.jobs.FoldJob`, from ``preprocess/<case>.h5`` (``ct`` (T, Z, Y, X) HU in the analysis phase
order, ``lung_mask`` = the analysed voxels, ``defect`` = the ground truth):

1. **Inputs** (:func:`volume_case`): the phases as channels, HU clipped to :data:`HU_WINDOW` = [-1000, 500] and
   scaled linearly to [-1, 1] (x = (clip(HU) + 250) / 750: air -1, water 1/3, 500 HU 1), cropped to the lung's
   bounding box plus half a patch on every side (within the volume), then padded at the far end with air (-1) to at
   least one patch. The target is the defect label (0/1) at the analysed voxels and NaN elsewhere, so the loss
   (``vent.models.training.MaskedLoss``) is binary cross-entropy on the analysed lung voxels only.
2. **Training patches** (:class:`LungPatches`): ``patches_per_epoch`` patches of ``patch_size`` per epoch, in
   batches of ``batch_size`` (the study: 16). Each patch picks a training patient uniformly, then a centre uniformly
   among that patient's analysed voxels, shifted where needed so the patch stays inside the crop (it always holds
   its centre): the sampling of MONAI's ``RandCropByPosNegLabel`` with the lung as the label and only positive
   centres. It is written here (a few lines of numpy) rather than taken from MONAI because the draws of epoch e must
   come from ``numpy.random.default_rng([train.seed + fold, e])``, a pure function of the epoch, so that a training
   resumed from its checkpoint sees exactly the patches of an uninterrupted one; MONAI's transforms carry their own
   mutable random state.
3. **Early stopping** (``vent.models.training.fit``: Adam, ``train.lr``, ``clip_grad_norm``, ``weight_decay``,
   ``pos_weight``, ``max_epochs``, ``patience``, resumable from ``checkpoint.pt``) on the validation loss over every
   analysed voxel of the fold's validation patients, each counted once (:class:`TilePatches`: non-overlapping
   patch tiles of each crop, deterministic).
4. **Inference** (:func:`predict_volume`): MONAI's ``sliding_window_inference`` over the crop (window = patch,
   ``overlap``, Gaussian weights: the probability of a voxel is the Gaussian-weighted mean of sigmoid(logit) over the
   windows holding it), read at the analysed voxels ``np.argwhere(lung_mask > 0)`` (the prediction contract).
5. The threshold is chosen on the validation patients (``train.threshold``); ``model.pt`` holds the architecture
   spec, the weights and the input normalisation (:func:`load_volume_model`, :func:`predict_preprocessed_case`).

Memory: the training and validation patients' crops are held as float16 (image) plus float16 (target): per patient
2 (T + 1) bytes per crop voxel. The demo cohort (5 phases, ~73 x 41 x 58 voxels) needs ~2 MB a patient; an adult
lung at 2 mm (bounding box ~150 x 110 x 170 plus a 64^3 patch: ~9 M voxels, 10 phases) ~200 MB a patient, so a few
dozen patients fit in a few GB. Test patients are read and predicted one at a time.

Threads: the train stage sets torch's CPU threads from ``execution.threads`` before any trainer runs; this module
does not change them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vent.errors import ArtifactError, DataError
from vent.io import layout
from vent.io.artifacts import PreprocessedCase, read_preprocessed_case
from vent.io.atomic import atomic_path
from vent.io.images import Grid
from vent.io.predictions import Prediction
from vent.models.jobs import FoldJob, FoldOutcome

__all__ = [
    "HU_WINDOW",
    "VolumeCase",
    "normalise_hu",
    "volume_case",
    "LungPatches",
    "TilePatches",
    "predict_volume",
    "train_volume_fold",
    "load_volume_model",
    "predict_preprocessed_case",
]

log = logging.getLogger(__name__)

HU_WINDOW = (-1000.0, 500.0)
"""The HU range the networks see (air to dense tissue); values outside are clipped before scaling to [-1, 1]."""
AIR = -1.0
"""The normalised value of -1000 HU, used to pad a crop smaller than a patch."""


def normalise_hu(ct_tzyx: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """x = 2 (clip(HU, lo, hi) - lo) / (hi - lo) - 1, float32 in [-1, 1] (lo, hi = ``window``)."""
    lo, hi = float(window[0]), float(window[1])
    clipped = np.clip(np.asarray(ct_tzyx, dtype=np.float32), lo, hi)
    return (2.0 * (clipped - lo) / (hi - lo) - 1.0).astype(np.float32)


@dataclass
class VolumeCase:
    """One patient ready for a volume network: normalised crop, target, and where its analysed voxels lie.

    Attributes:
        case_id: The patient.
        image_tzyx: (T, z, y, x) float16 normalised HU of the crop (padded with :data:`AIR`).
        target_zyx: (z, y, x) float16: the defect label at analysed voxels, NaN elsewhere.
        start_zyx: The crop's first voxel on the case grid.
        coords_zyx: (N, 3) int32 analysed voxels on the case grid, ``np.argwhere(lung_mask > 0)`` order.
        labels: (N,) uint8 ground truth at ``coords_zyx``.
        grid: The case grid (for the prediction contract).
    """

    case_id: str
    image_tzyx: np.ndarray
    target_zyx: np.ndarray
    start_zyx: np.ndarray
    coords_zyx: np.ndarray
    labels: np.ndarray
    grid: Grid

    @property
    def local_coords(self) -> np.ndarray:
        """(N, 3) analysed voxels in the crop's frame."""
        return self.coords_zyx - self.start_zyx

    @property
    def nbytes(self) -> int:
        return int(self.image_tzyx.nbytes + self.target_zyx.nbytes + self.coords_zyx.nbytes + self.labels.nbytes)


def _crop_box(coords_zyx: np.ndarray, shape_zyx: tuple[int, ...], patch: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of the lung bounding box plus half a patch on each side, within the volume."""
    margin = np.asarray(patch) // 2
    start = np.maximum(coords_zyx.min(axis=0) - margin, 0)
    stop = np.minimum(coords_zyx.max(axis=0) + 1 + margin, np.asarray(shape_zyx))
    return start, stop


def _pad_to(array: np.ndarray, minimum: list[int], value: float) -> np.ndarray:
    """Pad the last three axes at their far end with ``value`` up to ``minimum`` voxels."""
    short = [max(0, int(m) - s) for m, s in zip(minimum, array.shape[-3:])]
    if not any(short):
        return array
    widths = [(0, 0)] * (array.ndim - 3) + [(0, s) for s in short]
    return np.pad(array, widths, constant_values=value)


def volume_case(pre: PreprocessedCase, patch_size: list[int], window: tuple[float, float] = HU_WINDOW) -> VolumeCase:
    """The network's view of a preprocessed case (module docstring, step 1)."""
    lung = pre.lung_mask_zyx > 0
    coords = np.argwhere(lung).astype(np.int32)
    if not len(coords):
        raise DataError(f"case {pre.case_id} has no analysed lung voxels; check its preprocess output")
    start, stop = _crop_box(coords, lung.shape, patch_size)
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
    image = normalise_hu(pre.ct_tzyx[(slice(None), *box)], window)
    target = np.where(lung[box], pre.defect_zyx[box], np.nan).astype(np.float16)
    z, y, x = coords.T
    return VolumeCase(
        case_id=pre.case_id,
        image_tzyx=_pad_to(image, patch_size, AIR).astype(np.float16),
        target_zyx=_pad_to(target, patch_size, np.nan),
        start_zyx=start.astype(np.int32),
        coords_zyx=coords,
        labels=pre.defect_zyx[z, y, x].astype(np.uint8),
        grid=pre.grid,
    )


def read_volume_case(run_dir: Path, case: str, patch_size: list[int]) -> VolumeCase:
    """:func:`volume_case` of ``preprocess/<case>.h5``."""
    return volume_case(read_preprocessed_case(layout.case_file(run_dir, "preprocess", case)), patch_size)


def _patch(case: VolumeCase, start: np.ndarray, patch: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(image (T, *patch) float32, target (1, *patch) float32) of the patch starting at ``start`` (crop frame)."""
    box = tuple(slice(int(s), int(s) + int(p)) for s, p in zip(start, patch))
    return case.image_tzyx[(slice(None), *box)].astype(np.float32), case.target_zyx[box][None].astype(np.float32)


def _as_batch(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Any, Any]:
    import torch

    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))


class LungPatches:
    """Training batches: random patches centred on analysed lung voxels (module docstring, step 2).

    Iterating yields ``(x (B, T, *patch), y (B, 1, *patch))`` float32 tensors, y NaN outside the analysed lung.
    ``set_epoch(e)`` selects epoch e's draws (``fit`` calls it before every epoch).
    """

    def __init__(self, cases: list[VolumeCase], patch_size: list[int], n_patches: int, batch_size: int,
                 seed: int) -> None:
        if not cases:
            raise DataError("a fold without training patients cannot train a volume network")
        self.cases, self.patch_size = cases, [int(p) for p in patch_size]
        self.n_patches, self.batch_size, self.seed = int(n_patches), int(batch_size), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def draws(self, epoch: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Epoch ``epoch``'s patches: (case index, centre, patch start), both in the crop's frame."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        half, patch = np.asarray(self.patch_size) // 2, np.asarray(self.patch_size)
        draws = []
        for case_index in rng.integers(len(self.cases), size=self.n_patches):
            case = self.cases[int(case_index)]
            centre = case.local_coords[rng.integers(len(case.coords_zyx))]
            start = np.clip(centre - half, 0, np.asarray(case.target_zyx.shape) - patch)
            draws.append((int(case_index), centre, start))
        return draws

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        draws = self.draws(self.epoch)
        for first in range(0, len(draws), self.batch_size):
            chunk = draws[first:first + self.batch_size]
            yield _as_batch([_patch(self.cases[k], start, self.patch_size) for k, _, start in chunk])

    def __len__(self) -> int:
        return -(-self.n_patches // self.batch_size)

    def label_counts(self) -> tuple[int, int]:
        """(healthy, defect) analysed voxels of the training patients (``pos_weight: auto``)."""
        positive = sum(int(case.labels.sum()) for case in self.cases)
        return sum(len(case.labels) for case in self.cases) - positive, positive


def _tile_ranges(size: int, patch: int) -> list[tuple[int, int, int]]:
    """Along one axis: (tile start, first owned, end owned) for tiles of ``patch`` covering [0, size) once.

    Tiles start at 0, p, 2p, ... and the last at size - p; tile k owns [k p, min((k + 1) p, size)).
    """
    starts = [*range(0, size - patch, patch), size - patch]
    return [(start, k * patch, min((k + 1) * patch, size)) for k, start in enumerate(starts)]


class TilePatches:
    """Validation batches: each crop in patch tiles, every analysed voxel scored in exactly one tile.

    Iterating yields ``(x, y)`` as :class:`LungPatches`; y is NaN outside the analysed lung and outside the voxels the
    tile owns (the last tile of an axis overlaps its neighbour). Tiles without an owned analysed voxel are skipped.
    """

    def __init__(self, cases: list[VolumeCase], patch_size: list[int], batch_size: int) -> None:
        self.cases, self.patch_size, self.batch_size = cases, [int(p) for p in patch_size], int(batch_size)
        self.tiles = [(k, start, owned) for k, case in enumerate(cases) for start, owned in self._case_tiles(case)]
        if not self.tiles:
            raise DataError("a fold without validation patients cannot stop early; re-split the folds")

    def _case_tiles(self, case: VolumeCase) -> Iterator[tuple[np.ndarray, tuple[slice, ...]]]:
        axes = [_tile_ranges(s, p) for s, p in zip(case.target_zyx.shape, self.patch_size)]
        for tz in axes[0]:
            for ty in axes[1]:
                for tx in axes[2]:
                    start = np.array([tz[0], ty[0], tx[0]])
                    owned = tuple(slice(t[1] - t[0], t[2] - t[0]) for t in (tz, ty, tx))
                    region = tuple(slice(s + o.start, s + o.stop) for s, o in zip(start, owned))
                    if np.isfinite(case.target_zyx[region]).any():
                        yield start, owned

    def _tile(self, k: int, start: np.ndarray, owned: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
        image, target = _patch(self.cases[k], start, self.patch_size)
        scored = np.full_like(target, np.nan)
        scored[(slice(None), *owned)] = target[(slice(None), *owned)]
        return image, scored

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for first in range(0, len(self.tiles), self.batch_size):
            yield _as_batch([self._tile(*tile) for tile in self.tiles[first:first + self.batch_size]])

    def __len__(self) -> int:
        return -(-len(self.tiles) // self.batch_size)


def predict_volume(model: Any, case: VolumeCase, params: Any, device: Any) -> np.ndarray:
    """Defect probability of every analysed voxel of ``case`` (module docstring, step 4), float32 in [0, 1].

    Windows run on ``device``; the blended volume is accumulated on the CPU, so GPU memory holds only the windows.
    """
    import torch
    from monai.inferers import sliding_window_inference

    model.to(device).eval()
    image = torch.from_numpy(case.image_tzyx[None].astype(np.float32))
    with torch.inference_mode():
        probability = sliding_window_inference(
            image, roi_size=list(params.patch_size), sw_batch_size=params.batch_size,
            predictor=lambda x: torch.sigmoid(model(x)), overlap=params.overlap, mode="gaussian",
            padding_mode="constant", cval=AIR, sw_device=device, device="cpu",
        )
    z, y, x = case.local_coords.T
    return np.clip(probability[0, 0].numpy()[z, y, x], 0.0, 1.0).astype(np.float32)


def _fit_fold(job: FoldJob, params: Any, train: list[VolumeCase], val: list[VolumeCase], progress: Any) -> tuple:
    """Build the seeded network and train it (resuming from the fold's checkpoint); returns (model, FitResult)."""
    import torch

    from vent.models import build_model
    from vent.models.sequence import fold_settings
    from vent.models.training import fit

    fold_seed = job.train.seed + job.fold.index
    patches = LungPatches(train, params.patch_size, params.patches_per_epoch, params.batch_size, seed=fold_seed)
    tiles = TilePatches(val, params.patch_size, params.batch_size)
    torch.manual_seed(fold_seed)
    model = build_model(job.model, train[0].image_tzyx.shape[0], 1, **job.train.models[job.model])
    settings = fold_settings(job, batch_size=params.batch_size)  # the train keys of _VOLUME_SETTINGS + length
    checkpoint = layout.checkpoint_file(job.run_dir, job.row, job.fold.index)
    with progress.task(f"{job.row} fold {job.fold.index} (epochs)", total=settings.max_epochs) as epochs:
        result = fit(model, patches, tiles, settings, checkpoint_path=checkpoint,
                     progress=lambda info: epochs.advance(1))
    return model, result


def _save_model(job: FoldJob, model: Any, params: Any) -> None:
    """``model.pt``: architecture spec, weights and the input normalisation (:func:`load_volume_model`)."""
    from vent.models.training import save_torch

    payload = {
        "spec": model.spec,
        "state_dict": {name: t.detach().cpu() for name, t in model.state_dict().items()},
        "input_kind": "ct",
        "normalisation": {"hu_window": list(HU_WINDOW), "scaled_to": [-1.0, 1.0], "pad_value": AIR},
        "patch_size": list(params.patch_size),
        "selection": job.selection,
        "fold": job.fold.index,
    }
    with atomic_path(layout.model_file(job.run_dir, job.row, job.fold.index)) as tmp:
        save_torch(payload, tmp)


def _fit_record(result: Any, job: FoldJob, params: Any, cases: list[VolumeCase], model: Any) -> dict[str, Any]:
    """The fold's facts for ``result.json``: the fit, the patches and the memory the held crops took."""
    from vent.models import count_parameters

    return {
        **result.facts(),
        "device_setting": job.execution.device,
        "patch_size": list(params.patch_size),
        "patches_per_epoch": params.patches_per_epoch,
        "batch_size": params.batch_size,
        "n_parameters": count_parameters(model),
        "held_volumes_mb": round(sum(case.nbytes for case in cases) / 2**20, 1),
        "history": result.history,
    }


def train_volume_fold(job: FoldJob, progress: Any) -> FoldOutcome:
    """Train one volume network on one fold and predict its held-out patients (module docstring)."""
    from vent.models.sequence import choose_fold_threshold, threshold_record

    params = job.train.model_params(job.model)
    train = [read_volume_case(job.run_dir, case, params.patch_size) for case in job.fold.train]
    val = {case: read_volume_case(job.run_dir, case, params.patch_size) for case in job.fold.val}
    held = sum(case.nbytes for case in [*train, *val.values()]) / 2**20
    log.info("%s fold %d: %d training and %d validation crops held (%.1f MB)", job.row, job.fold.index,
             len(train), len(val), held)
    started = time.perf_counter()
    model, result = _fit_fold(job, params, train, list(val.values()), progress)
    training_seconds = time.perf_counter() - started
    _save_model(job, model, params)
    started = time.perf_counter()
    choice = choose_fold_threshold(
        job.train.threshold, job.fold.val,
        lambda case: (val[case].labels, predict_volume(model, val[case], params, result.device)),
    )
    predictions = []
    for case in job.fold.test:
        test = read_volume_case(job.run_dir, case, params.patch_size)
        probability = predict_volume(model, test, params, result.device)
        predictions.append(Prediction(case, job.row, job.fold.index, probability, choice.threshold,
                                      test.coords_zyx, test.grid))
    record = _fit_record(result, job, params, [*train, *val.values()], model)
    record.update(training_seconds=round(training_seconds, 2),
                  inference_seconds=round(time.perf_counter() - started, 2))
    resumed = "" if result.resumed_from_epoch is None else f", resumed after epoch {result.resumed_from_epoch}"
    return FoldOutcome(
        predictions=predictions,
        record=record,
        threshold=threshold_record(job.train.threshold, choice, job.fold.val),
        summary=f"{result.epochs_run} epochs (best {result.best_epoch}{resumed}) on {result.device} in "
        f"{training_seconds:.0f} s, threshold {choice.threshold:.3f} ({choice.rule})",
    )


def load_volume_model(path: Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild a trained volume network from ``model.pt``; returns (model in eval mode, the saved payload)."""
    from vent.models.sequence import load_fold_model

    model, payload = load_fold_model(path)
    if payload.get("input_kind") != "ct" or "normalisation" not in payload:
        raise ArtifactError(f"{path} is not a volume network's model file (no CT input normalisation)")
    return model, payload


def predict_preprocessed_case(model: Any, payload: dict[str, Any], pre: PreprocessedCase,
                              device: str = "auto") -> np.ndarray:
    """Defect probability at ``np.argwhere(pre.lung_mask_zyx > 0)`` with a loaded model (:func:`load_volume_model`).

    The crop, normalisation, window and blending are the training run's (``payload``), so ``vent predict`` scores a
    new case exactly as the fold's test patients were.
    """
    from vent.models.registry import get_spec
    from vent.models.training import resolve_device

    params = get_spec(payload["spec"]["name"]).parse_params(payload["spec"]["params"])
    window = tuple(payload["normalisation"]["hu_window"])
    return predict_volume(model, volume_case(pre, params.patch_size, window), params, resolve_device(device))
