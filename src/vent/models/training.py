"""Train a sequence model with early stopping and resumable checkpoints; predict probabilities.

The study's recipe: binary cross-entropy on a sigmoid output (here ``BCEWithLogitsLoss`` on logits, the same
quantity computed stably), Adam with learning rate 1e-4, gradient-norm clipping at 1.0, batches of 2048 voxels, up
to 500 epochs, early stopping on the validation loss.

Resume order (after nnU-Net's ``maybe_load_checkpoint``): if ``checkpoint_path`` exists, the model weights,
optimiser state, epoch counter, best weights, early-stopping counter, history and torch RNG state are restored from
it and training continues with the next epoch; with the same seed and data order the final weights equal those of an
uninterrupted run (exactly on CPU). The checkpoint is rewritten atomically (temporary file + ``os.replace``) after
every epoch, so an interruption leaves either the previous or the new checkpoint, never a torn file.

Resuming with other settings: lr, clip_grad_norm, seed, weight_decay and pos_weight must equal the checkpoint's
(else ArtifactError). ``max_epochs`` and ``patience`` may grow: ``stopped_early`` is not taken from the checkpoint
but recomputed as ``bad_epochs >= patience``, so a fold that stopped early under patience P continues under P' > P,
and one that ran out of epochs continues when max_epochs is raised; the result equals a fresh run with the new
settings (exactly on CPU). A smaller max_epochs or patience than the checkpoint's is an ArtifactError: the checkpoint
may have trained further than the new settings allow (a resumed run must always equal a fresh one), so it has to be
deleted to retrain the fold.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from vent.errors import ArtifactError, ConfigError, DataError, VentError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1

# Settings that must match for a checkpoint to be resumed (others, e.g. max_epochs or patience, may change).
# pos_weight is one of them: a resumed fold would otherwise keep the checkpoint's loss weight without saying so.
_RESUME_KEYS = ("lr", "clip_grad_norm", "seed", "weight_decay", "pos_weight", "min_delta", "loss")
# Defaults of keys added after checkpoints were first written (an older checkpoint trained with these).
_OLD_DEFAULTS = {"loss": "bce"}
# Settings that may grow on resume but never shrink (a smaller value could have stopped training earlier).
_GROWABLE_KEYS = ("max_epochs", "patience")


@dataclass
class TrainSettings:
    """Optimisation settings (defaults are the study's).

    Attributes:
        lr: Adam learning rate.
        batch_size: Voxels per batch (used by the caller to build the batches; ``fit`` warns on a mismatch).
        max_epochs: Upper bound on epochs.
        patience: Stop after this many epochs without a validation-loss improvement.
        min_delta: An epoch improves when val_loss < best_val_loss - min_delta.
        clip_grad_norm: Clip the global gradient L2 norm to this value (``None`` = no clipping).
        seed: Seed of torch's RNG (dropout) at the start of training.
        pos_weight: Weight of the defect class in the loss: a number, ``"auto"`` (n_healthy / n_defect of the
            training voxels) or ``None`` (unweighted).
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        weight_decay: Adam L2 weight decay.
        loss: ``"bce"`` (binary cross-entropy on the logits, the study's) or ``"mse"`` (squared error of
            sigmoid(logit) against a target in [0, 1], for a continuous ventilation target).
        mixed_precision: Forward passes under ``torch.autocast`` on CUDA (:func:`resolve_precision`); on a CPU it
            is ignored with a warning recorded in :attr:`FitResult.precision_warning`.
    """

    lr: float = 1e-4
    batch_size: int = 2048
    max_epochs: int = 500
    patience: int = 20
    min_delta: float = 0.0
    clip_grad_norm: float | None = 1.0
    seed: int = 0
    pos_weight: float | Literal["auto"] | None = None
    device: str = "auto"
    weight_decay: float = 0.0
    loss: Literal["bce", "mse"] = "bce"
    mixed_precision: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number; got {self.lr}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1; got {self.batch_size}")
        if self.max_epochs < 1:
            problems.append(f"max_epochs must be >= 1; got {self.max_epochs}")
        if self.patience < 1:
            problems.append(f"patience must be >= 1; got {self.patience}")
        if self.min_delta < 0:
            problems.append(f"min_delta must be >= 0; got {self.min_delta}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            problems.append(f"clip_grad_norm must be positive or None; got {self.clip_grad_norm}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0; got {self.weight_decay}")
        if isinstance(self.pos_weight, str):
            if self.pos_weight != "auto":
                problems.append(f"pos_weight must be a positive number, 'auto' or None; got {self.pos_weight!r}")
        elif self.pos_weight is not None and not self.pos_weight > 0:
            problems.append(f"pos_weight must be a positive number, 'auto' or None; got {self.pos_weight}")
        if self.loss not in ("bce", "mse"):
            problems.append(f"loss must be 'bce' or 'mse'; got {self.loss!r}")
        if self.loss == "mse" and self.pos_weight is not None:
            problems.append("pos_weight weighs the defect class of a binary target; it has no meaning with loss='mse'")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            problems.append(f"device must be 'auto', 'cpu' or 'cuda[:N]'; got {self.device!r}")
        if problems:
            raise ConfigError("invalid train settings: " + "; ".join(problems))


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        best_epoch: Epoch (0-based) with the lowest validation loss; its weights are in the model.
        best_val_loss: That validation loss (mean BCE per voxel, with pos_weight if set).
        epochs_run: Epochs completed in total (including those before a resume).
        stopped_early: Whether early stopping ended training (else max_epochs did).
        history: One dict per epoch: epoch, train_loss, val_loss, seconds, improved.
        resumed_from_epoch: Epochs already done in the checkpoint that was resumed, or ``None``.
        pos_weight: The pos_weight used (resolved from "auto"), or ``None``.
        device: The device trained on.
        precision: ``float32``, or the autocast dtype of mixed precision (``bfloat16`` / ``float16``).
        precision_warning: Why mixed precision asked for was not used (on a CPU), else ``None``.
        data_path: How the caller held the batches (``vent.models.sequence.stage_fold_batches``), if it says.
    """

    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_epoch: int | None = None
    pos_weight: float | None = None
    device: str = "cpu"
    precision: str = "float32"
    precision_warning: str | None = None
    data_path: dict[str, Any] = field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        """The fit's facts for a fold's ``result.json`` (everything but the per-epoch history)."""
        return {k: v for k, v in asdict(self).items() if k != "history"}


def resolve_device(device: str = "auto") -> torch.device:
    """Return the torch device for ``device`` ("auto" = CUDA if available, else CPU; the caller records which).

    Never falls back: an explicit CUDA device that is absent is an error, not a silent switch to the CPU.

    Raises:
        ConfigError: CUDA (or CUDA device N) was asked for but is not available.
    """
    if device == "auto":
        chosen = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        logger.info("execution.device 'auto' resolved to %s", chosen)
        return chosen
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"execution.device is {device!r} but CUDA is not available on this machine; set execution.device to 'auto' "
            "(CUDA when present, else CPU; the device used is recorded) or 'cpu'"
        )
    target = torch.device(device)
    if target.type == "cuda" and target.index is not None and target.index >= torch.cuda.device_count():
        raise ConfigError(
            f"execution.device is {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist; use 'cuda:0'"
        )
    return target


@dataclass
class Precision:
    """How forward passes run: ``float32``, or under ``torch.autocast`` with ``dtype`` (mixed precision).

    Attributes:
        name: ``float32``, ``bfloat16`` or ``float16``.
        device_type: ``cuda`` or ``cpu``.
        scaler: The float16 loss scaler (``torch.amp.GradScaler``), else ``None``.
        warning: Why mixed precision asked for is not used (recorded by the caller), else ``None``.
    """

    name: str = "float32"
    device_type: str = "cpu"
    scaler: Any = None
    warning: str | None = None

    def autocast(self) -> Any:
        """The context of a forward pass (a no-op in float32)."""
        import contextlib

        if self.name == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=getattr(torch, self.name))


def resolve_precision(mixed_precision: bool, device: torch.device) -> Precision:
    """The precision of training on ``device``: float32 unless mixed precision is asked for on CUDA.

    On CUDA: bfloat16 autocast where the GPU supports it (no loss scaling needed), else float16 with a
    ``GradScaler``. Losses are computed in float32 on the float32 cast of the logits. On a CPU, mixed precision is
    not used (bfloat16 LSTMs are slower there than float32 on most CPUs, and would change results for no gain):
    training runs in float32 and the returned :attr:`Precision.warning` says so (logged, and recorded in the fold's
    result), never silently.
    """
    if not mixed_precision:
        return Precision(device_type=device.type)
    if device.type != "cuda":
        message = (
            f"execution.mixed_precision is on but training runs on {device}: mixed precision is for CUDA only, "
            "so this fold trained in float32"
        )
        logger.warning(message)
        return Precision(device_type=device.type, warning=message)
    if torch.cuda.is_bf16_supported():
        return Precision("bfloat16", "cuda")
    return Precision("float16", "cuda", scaler=torch.amp.GradScaler("cuda"))


def _resolve_pos_weight(setting: float | str | None, train_batches: Iterable) -> float | None:
    """n_healthy / n_defect over the training voxels for "auto"; the number itself otherwise."""
    if setting != "auto":
        return None if setting is None else float(setting)
    if hasattr(train_batches, "label_counts"):
        n_negative, n_positive = train_batches.label_counts()
    else:
        n_positive = n_total = 0
        for _, y in train_batches:
            valid = torch.isfinite(y)
            n_positive += int(y[valid].sum().item())
            n_total += int(valid.sum().item())
        n_negative = n_total - n_positive
    if n_positive == 0 or n_negative == 0:
        raise DataError(
            f"pos_weight='auto' needs both classes in the training voxels; found {n_negative} healthy and "
            f"{n_positive} defect voxels"
        )
    return n_negative / n_positive


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    elif "cuda" in state:
        logger.warning("the checkpoint was written with CUDA, resumed without it: weights will not be bit-identical")


def save_checkpoint_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` with ``torch.save`` to a temporary file beside ``path`` and rename it into place."""
    from vent.io.atomic import atomic_path

    with atomic_path(path) as temporary:
        save_torch(state, temporary)


def save_torch(payload: Any, path: Path) -> None:
    """``torch.save`` through an open file, so that the zip archive's inner folder is ``archive`` and not the stem of
    ``path`` (a random temporary name under ``atomic_path``): the same weights then give the same bytes."""
    with open(path, "wb") as handle:
        torch.save(payload, handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit`.

    Raises:
        ArtifactError: The file is unreadable or not a vent training checkpoint.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        raise ArtifactError(f"cannot read checkpoint {path} ({error}); delete it to restart this fold") from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{path} is not a vent training checkpoint (format {CHECKPOINT_FORMAT}); delete it")
    return state


def _state_to_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


def _mean_loss(
    model: nn.Module, batches: Iterable, loss_sum: nn.Module, device: torch.device, what: str,
    precision: Precision | None = None,
) -> float:
    """Mean per-voxel loss of ``model`` over ``batches`` (eval mode, no gradients)."""
    model.eval()
    precision = precision or Precision(device_type=device.type)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with torch.no_grad():
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with precision.autocast():
                logits = model(x)
            total += loss_sum(logits.float(), y).double()
            count += _n_targets(y)
    if count == 0:
        raise DataError(f"the {what} batches are empty; every fold needs {what} voxels")
    return float(total.item()) / count


def _read_checkpoint_if_any(checkpoint_path: Path | None) -> dict[str, Any] | None:
    """The checkpoint at ``checkpoint_path`` when that file exists and verifies against its seal, else ``None``.

    A checkpoint that does not verify (truncated, replaced, written before a crash could seal it) is deleted with a
    warning and the fold trains from the start: resuming from it could not reproduce an uninterrupted run.
    """
    from vent.io.seals import verify_artifact

    if checkpoint_path is None or not checkpoint_path.exists():
        return None
    if (problem := verify_artifact(checkpoint_path)) is not None:
        logger.warning("checkpoint %s %s: deleted, the fold trains from the start", checkpoint_path, problem)
        checkpoint_path.unlink()
        return None
    return load_checkpoint(checkpoint_path)


def _pos_weight(checkpoint: dict[str, Any] | None, settings: TrainSettings, train_batches: Iterable) -> float | None:
    """The checkpoint's pos_weight on resume, else the one resolved from ``settings.pos_weight``."""
    if checkpoint is not None:
        return checkpoint["pos_weight"]
    return _resolve_pos_weight(settings.pos_weight, train_batches)


def _warn_on_batch_size(train_batches: Iterable, settings: TrainSettings) -> None:
    """Warn when the batches were built with another batch size than ``settings.batch_size``."""
    batch_size = getattr(train_batches, "batch_size", settings.batch_size)
    if batch_size != settings.batch_size:
        logger.warning("train batches hold %d voxels but settings.batch_size is %d", batch_size, settings.batch_size)


class MaskedLoss(nn.Module):
    """The training loss over the targets that are finite; a NaN target marks a voxel that is not scored.

    ``bce``: -[w y log sigma(z) + (1 - y) log(1 - sigma(z))] on the logits z (``BCEWithLogitsLoss``, w = pos_weight);
    ``mse``: (sigma(z) - y)^2. Volume networks mark voxels outside the analysed lung with NaN, so the loss is taken on
    analysed lung voxels only; sequence batches hold no NaN and get the plain loss. ``reduction``: mean or sum over
    the scored targets (a batch without any gives 0 and counts 0, see :func:`_n_targets`).
    """

    def __init__(self, kind: str, pos_weight: float | None, reduction: str, device: torch.device) -> None:
        super().__init__()
        weight = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float32, device=device)
        self.kind, self.reduction = kind, reduction
        self.bce = nn.BCEWithLogitsLoss(pos_weight=weight, reduction="sum")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.reshape(target.shape)
        valid = torch.isfinite(target)
        if not bool(valid.all()):
            logits, target = logits[valid], target[valid]
        if self.kind == "mse":
            total = ((torch.sigmoid(logits) - target) ** 2).sum()
        else:
            total = self.bce(logits, target)
        if self.reduction == "sum":
            return total
        return total / max(int(target.numel()), 1)


def _n_targets(y: torch.Tensor) -> int:
    """The number of scored (finite) targets of a batch."""
    return int(torch.isfinite(y).sum().item())


def _losses(pos_weight: float | None, device: torch.device, kind: str = "bce") -> tuple[nn.Module, nn.Module]:
    """The mean (for the updates) and summed (for the validation mean) losses (:class:`MaskedLoss`)."""
    return MaskedLoss(kind, pos_weight, "mean", device), MaskedLoss(kind, pos_weight, "sum", device)


@dataclass
class _TrainState:
    """Where training stands between epochs: next epoch, best epoch and weights, early-stopping counter, history."""

    epoch: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def _check_resumable(
    checkpoint: dict[str, Any], checkpoint_path: Path, settings: TrainSettings, model: nn.Module
) -> None:
    """Raise ArtifactError unless the checkpoint's settings and architecture allow resuming with ``settings``."""
    saved = checkpoint["settings"]
    changed = [key for key in _RESUME_KEYS if saved.get(key, _OLD_DEFAULTS.get(key)) != getattr(settings, key)]
    if changed:
        raise ArtifactError(
            f"checkpoint {checkpoint_path} was written with different settings ({', '.join(changed)}); "
            "delete it to retrain this fold with the new settings"
        )
    lowered = [
        f"{key} {saved[key]} -> {getattr(settings, key)}"
        for key in _GROWABLE_KEYS
        if saved.get(key) is not None and getattr(settings, key) < saved[key]
    ]
    if lowered:
        raise ArtifactError(
            f"checkpoint {checkpoint_path} was trained further than the new settings allow ({', '.join(lowered)}); "
            "a resumed fold must equal a fresh one, so delete the checkpoint to retrain this fold"
        )
    spec = getattr(model, "spec", None)
    if checkpoint.get("model_spec") is not None and spec is not None and checkpoint["model_spec"] != spec:
        raise ArtifactError(
            f"checkpoint {checkpoint_path} was written for another model architecture "
            f"({checkpoint['model_spec']}, not {spec}); delete it to retrain this fold"
        )


def _restore_or_start(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    checkpoint: dict[str, Any] | None,
    checkpoint_path: Path | None,
    settings: TrainSettings,
) -> _TrainState:
    """The state to train from: the checked checkpoint's (weights, optimiser, RNG restored) or a fresh seeded one.

    On resume, ``stopped_early`` is recomputed as ``bad_epochs >= settings.patience``, so a fold that stopped early
    (or ran out of epochs) continues when patience (or max_epochs) grew.
    """
    if checkpoint is None:
        torch.manual_seed(settings.seed)
        return _TrainState()
    _check_resumable(checkpoint, checkpoint_path, settings, model)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ArtifactError(
            f"checkpoint {checkpoint_path} does not match the model architecture; delete it to retrain ({error})"
        ) from error
    optimiser.load_state_dict(checkpoint["optimiser"])
    bad_epochs = int(checkpoint["bad_epochs"])
    state = _TrainState(
        epoch=int(checkpoint["epoch"]),
        best_val_loss=float(checkpoint["best_val_loss"]),
        best_epoch=int(checkpoint["best_epoch"]),
        best_state=checkpoint["best_model"],
        bad_epochs=bad_epochs,
        stopped_early=bad_epochs >= settings.patience,
        history=list(checkpoint["history"]),
    )
    _set_rng_state(checkpoint["rng"])
    logger.info("resuming from %s after epoch %d (best epoch %d)", checkpoint_path, state.epoch - 1, state.best_epoch)
    return state


def _train_epoch(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    train_batches: Iterable,
    loss_mean: nn.Module,
    clip_grad_norm: float | None,
    device: torch.device,
    precision: Precision | None = None,
) -> float:
    """One pass of Adam updates over ``train_batches``; returns the mean per-voxel training loss.

    Under mixed precision the forward pass runs in ``torch.autocast`` and the loss in float32; with float16 the
    loss is scaled (``GradScaler``) and the gradients unscaled before clipping.
    """
    model.train()
    precision = precision or Precision(device_type=device.type)
    scaler = precision.scaler
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for x, y in train_batches:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        optimiser.zero_grad(set_to_none=True)
        with precision.autocast():
            logits = model(x)
        loss = loss_mean(logits.float(), y)
        (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is not None:
            scaler.unscale_(optimiser)
        if clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        if scaler is None:
            optimiser.step()
        else:
            scaler.step(optimiser)
            scaler.update()
        n = _n_targets(y)
        total += loss.detach().double() * n
        count += n
    if count == 0:
        raise DataError("the training batches are empty; every fold needs training voxels")
    return float(total.item()) / count


def _run_epoch(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    train_batches: Iterable,
    val_batches: Iterable,
    losses: tuple[nn.Module, nn.Module],
    settings: TrainSettings,
    device: torch.device,
    state: _TrainState,
    precision: Precision | None = None,
) -> dict[str, Any]:
    """Train and validate epoch ``state.epoch``, advance ``state`` (best, counter, history); return its record."""
    started = time.perf_counter()
    epoch = state.epoch
    if hasattr(train_batches, "set_epoch"):
        train_batches.set_epoch(epoch)
    train_loss = _train_epoch(model, optimiser, train_batches, losses[0], settings.clip_grad_norm, device, precision)
    val_loss = _mean_loss(model, val_batches, losses[1], device, "validation", precision)
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        raise VentError(
            f"training diverged at epoch {epoch} (train loss {train_loss}, validation loss {val_loss}); "
            "lower train.lr or check the inputs are standardised"
        )
    improved = val_loss < state.best_val_loss - settings.min_delta
    if improved:
        state.best_val_loss, state.best_epoch, state.best_state, state.bad_epochs = (
            val_loss, epoch, _state_to_cpu(model), 0
        )
    else:
        state.bad_epochs += 1
    state.stopped_early = state.bad_epochs >= settings.patience
    record = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "seconds": time.perf_counter() - started,
        "improved": bool(improved),
    }
    state.history.append(record)
    state.epoch += 1
    return record


def _checkpoint_state(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    state: _TrainState,
    settings: TrainSettings,
    pos_weight: float | None,
    precision_name: str = "float32",
) -> dict[str, Any]:
    """The checkpoint dict written after an epoch (everything :func:`_restore_or_start` needs to resume)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": _state_to_cpu(model),
        "optimiser": optimiser.state_dict(),
        "epoch": state.epoch,
        "best_val_loss": state.best_val_loss,
        "best_epoch": state.best_epoch,
        "best_model": state.best_state,
        "bad_epochs": state.bad_epochs,
        "stopped_early": state.stopped_early,
        "history": state.history,
        "rng": _rng_state(),
        "settings": asdict(settings),
        "pos_weight": pos_weight,
        "model_spec": getattr(model, "spec", None),
        "precision": precision_name,
    }


def _report_epoch(
    record: dict[str, Any],
    state: _TrainState,
    max_epochs: int,
    progress: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Log the epoch and pass its record, with the best epoch so far, to ``progress``."""
    logger.debug(
        "epoch %d: train %.5f val %.5f%s",
        record["epoch"], record["train_loss"], record["val_loss"], " *" if record["improved"] else "",
    )
    if progress is not None:
        best = {"best_epoch": state.best_epoch, "best_val_loss": state.best_val_loss, "max_epochs": max_epochs}
        progress({**record, **best})


def _finish(
    model: nn.Module, state: _TrainState, resumed_from: int | None, pos_weight: float | None, device: torch.device,
    precision: Precision | None = None,
) -> FitResult:
    """Load the best epoch's weights into ``model`` (eval mode) and build the :class:`FitResult`."""
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    return FitResult(
        best_epoch=state.best_epoch,
        best_val_loss=state.best_val_loss,
        epochs_run=state.epoch,
        stopped_early=state.stopped_early,
        history=state.history,
        resumed_from_epoch=resumed_from,
        pos_weight=pos_weight,
        device=str(device),
        precision=precision.name if precision is not None else "float32",
        precision_warning=precision.warning if precision is not None else None,
    )


def fit(
    model: nn.Module, train_batches: Iterable, val_batches: Iterable, settings: TrainSettings,
    checkpoint_path: Path | None = None, progress: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``model`` with Adam, gradient clipping and early stopping on the validation loss.

    Loss: L = -mean_i [w y_i log sigma(z_i) + (1 - y_i) log(1 - sigma(z_i))], z the logits, w = pos_weight (1 if
    unset). Each epoch: ``train_batches.set_epoch(epoch)`` when available (reshuffles), one pass with updates, then
    the mean loss over ``val_batches``. An epoch improves when val_loss < best - min_delta; training stops after
    ``patience`` epochs without improvement or at ``max_epochs``. The best epoch's weights are restored into
    ``model``, which is left in eval mode on the training device.

    Args:
        model: Module mapping x (B, T, F) to logits (B,).
        train_batches: Iterable of (x (B, T, F) float32, y (B,) float32), e.g. a shuffled
            :class:`vent.models.data.VoxelBatches`.
        val_batches: Same, for the validation patients (not shuffled).
        settings: Optimisation settings.
        checkpoint_path: Written after every epoch; when it exists, training resumes from it.
        progress: Called after every epoch with a dict (epoch, train_loss, val_loss, best_epoch, best_val_loss,
            seconds, improved, max_epochs).

    Returns:
        The :class:`FitResult`.

    Raises:
        ArtifactError: The checkpoint is unreadable, was written with different settings or architecture, or was
            trained further than the new max_epochs or patience allow.
        DataError: No training or validation voxels, or only one class with pos_weight="auto".
        VentError: The loss became NaN or infinite (lower the learning rate).
    """
    device = resolve_device(settings.device)
    _warn_on_batch_size(train_batches, settings)
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    checkpoint = _read_checkpoint_if_any(checkpoint_path)
    pos_weight = _pos_weight(checkpoint, settings, train_batches)
    losses = _losses(pos_weight, device, settings.loss)
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    precision = resolve_precision(settings.mixed_precision, device)
    _check_precision(checkpoint, checkpoint_path, precision)
    state = _restore_or_start(model, optimiser, checkpoint, checkpoint_path, settings)
    resumed_from = state.epoch if checkpoint is not None else None
    while state.epoch < settings.max_epochs and not state.stopped_early:
        record = _run_epoch(model, optimiser, train_batches, val_batches, losses, settings, device, state, precision)
        if checkpoint_path is not None:
            save_checkpoint_atomic(
                _checkpoint_state(model, optimiser, state, settings, pos_weight, precision.name), checkpoint_path
            )
        _report_epoch(record, state, settings.max_epochs, progress)
    return _finish(model, state, resumed_from, pos_weight, device, precision)


def _check_precision(checkpoint: dict[str, Any] | None, checkpoint_path: Path | None, precision: Precision) -> None:
    """Refuse to resume a checkpoint trained in another precision (the resumed fold would equal neither run)."""
    if checkpoint is None:
        return
    saved = checkpoint.get("precision", "float32")
    if saved != precision.name:
        raise ArtifactError(
            f"checkpoint {checkpoint_path} was trained in {saved}, this run trains in {precision.name} "
            "(execution.mixed_precision or the device changed); delete it to retrain this fold, or set "
            "execution.mixed_precision back"
        )


def predict_proba(model: nn.Module, batches: Iterable, device: str = "auto") -> np.ndarray:
    """Return sigmoid(model(x)) for every voxel of ``batches``, in input order.

    Args:
        model: Module mapping x (B, T, F) to logits (B,). Put in eval mode; no gradients are computed.
        batches: Iterable of (x, y) or of x, not shuffled (e.g. ``VoxelBatches(..., shuffle=False)``).
        device: Where to run ("auto" = CUDA if available).

    Returns:
        (n_voxels,) float32 defect probabilities.

    Raises:
        ConfigError: ``batches`` is shuffled, so the output order would not match the voxels.
    """
    if getattr(batches, "shuffle", False):
        raise ConfigError("predict_proba needs unshuffled batches (shuffle=False) so outputs match voxel order")
    target = resolve_device(device)
    model.to(target)
    model.eval()
    outputs = []
    with torch.inference_mode():
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            outputs.append(torch.sigmoid(model(x.to(target))).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros(0, dtype=np.float32)
