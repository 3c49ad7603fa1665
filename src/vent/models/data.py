"""Stream voxel sequences from the per-patient radiomics HDF5 files in bounded memory.

Reads ``<run_dir>/radiomics/<case>.h5`` as written by the radiomics stage:

- ``/features``  (n_voxels, T, F) float32, chunked along voxels; T phases in breathing order, F features.
- ``/intensity`` (n_voxels, T) float32, raw CT value in HU per phase (input kind ``"raw"``, read as (n, T, 1)).
- ``/labels``    (n_voxels,) uint8, ground-truth defect (1) or healthy (0).
- ``/edge``      (n_voxels, T, 3) float32, the lung-edge positional sequences (``vent.radiomics.lung_edge``); the
  channels chosen by ``edge_index`` are appended after the features (the study's proposed positional input).

Reads are whole row blocks aligned to the HDF5 chunks (contiguous, no fancy indexing in HDF5); feature selection and
voxel subsampling happen in memory on the block. A shuffled epoch visits the blocks of all patients in a random
order and mixes them in a buffer of ``buffer_voxels`` voxels, so the memory held depends on the buffer size and the
batch size, not on the number of patients. Files are opened per block read, so no per-file handle or cache is kept.

Training reads the same batches from a staged copy (:class:`StagedBatches`): each block is read, subsampled and
standardised once into one contiguous float32 array (in RAM within ``execution.memory_budget_gb``, else a mapped
temporary file whose touched pages are released every buffer), and each epoch gathers its rows in the order
:func:`shuffled_epoch_order` draws with the streamed path's own random calls, so the batches are bit-identical and
an epoch no longer decompresses the files. On CUDA the in-memory copy lives on the GPU and batches are gathered there.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch

from vent.errors import ArtifactError, ConfigError, DataError

logger = logging.getLogger(__name__)

InputKind = Literal["radiomics", "raw"]

INPUT_DATASETS: dict[str, str] = {"radiomics": "features", "raw": "intensity"}
LABEL_DATASET = "labels"
DEFAULT_READ_ROWS = 4096


@dataclass(frozen=True)
class CaseInfo:
    """Shape facts of one patient file, read from its HDF5 header.

    Attributes:
        path: The HDF5 file.
        n_voxels: Number of lung voxels (rows).
        n_steps: Number of phases T.
        n_features: Features per phase in the file (1 for raw intensities).
        read_rows: Rows per block read (the dataset's HDF5 chunk length, or 4096 if not chunked).
    """

    path: Path
    n_voxels: int
    n_steps: int
    n_features: int
    read_rows: int


def _check_input_kind(input_kind: str) -> None:
    if input_kind not in INPUT_DATASETS:
        raise ConfigError(f"input_kind must be one of {sorted(INPUT_DATASETS)}; got {input_kind!r}")


def inspect_case(path: str | Path, input_kind: InputKind) -> CaseInfo:
    """Read and check the header of one patient file.

    Args:
        path: ``<run_dir>/radiomics/<case>.h5``.
        input_kind: ``"radiomics"`` (reads /features) or ``"raw"`` (reads /intensity).

    Returns:
        The file's :class:`CaseInfo`.

    Raises:
        ArtifactError: Missing file or dataset, or inconsistent shapes.
    """
    _check_input_kind(input_kind)
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"radiomics file {path} does not exist; run the radiomics stage for this case first")
    name = INPUT_DATASETS[input_kind]
    try:
        with h5py.File(path, "r") as h5:
            for required in (name, LABEL_DATASET):
                if required not in h5:
                    raise ArtifactError(
                        f"{path} has no /{required} dataset; re-run the radiomics stage for this case"
                    )
            data = h5[name]
            n_labels = h5[LABEL_DATASET].shape
            expected_ndim = 3 if input_kind == "radiomics" else 2
            if data.ndim != expected_ndim:
                raise ArtifactError(f"{path}: /{name} must have {expected_ndim} axes; got shape {data.shape}")
            if n_labels != (data.shape[0],):
                raise ArtifactError(
                    f"{path}: /{LABEL_DATASET} has shape {n_labels} but /{name} has {data.shape[0]} voxels"
                )
            read_rows = data.chunks[0] if data.chunks else DEFAULT_READ_ROWS
            n_features = data.shape[2] if input_kind == "radiomics" else 1
            return CaseInfo(path, int(data.shape[0]), int(data.shape[1]), int(n_features), int(read_rows))
    except OSError as error:
        raise ArtifactError(
            f"cannot read {path} as HDF5 ({error}); re-run the radiomics stage for this case"
        ) from error


def select_case_voxels(labels: np.ndarray, max_voxels: int | None, seed: int, case_key: str) -> np.ndarray | None:
    """Draw a class-stratified random subsample of one patient's voxels, reproducibly.

    The defect fraction of the subsample equals the patient's (rounded), with at least one voxel of each class
    present in the patient. The draw depends only on ``seed``, ``case_key`` and the labels, so it is the same in
    every epoch and every process.

    Args:
        labels: (n_voxels,) 0/1 labels of the patient.
        max_voxels: Voxels to keep; ``None`` (or >= n_voxels) keeps all.
        seed: Random seed.
        case_key: Stable identity of the patient (the file stem).

    Returns:
        Sorted int64 row indices, or ``None`` when every voxel is kept.
    """
    n_voxels = labels.shape[0]
    if max_voxels is None or max_voxels >= n_voxels:
        return None
    rng = np.random.default_rng([seed, zlib.crc32(case_key.encode())])
    positives = np.flatnonzero(labels == 1)
    negatives = np.flatnonzero(labels != 1)
    n_positive = int(round(max_voxels * positives.size / n_voxels))
    n_positive = max(n_positive, min(1, positives.size))
    n_positive = min(n_positive, positives.size, max_voxels - min(1, negatives.size))
    n_negative = min(max_voxels - n_positive, negatives.size)
    chosen = np.concatenate(
        [rng.choice(positives, n_positive, replace=False), rng.choice(negatives, n_negative, replace=False)]
    )
    return np.sort(chosen).astype(np.int64)


EDGE_DATASET = "edge"


def edge_channel_index(path: str | Path, channels: Sequence[str]) -> list[int] | None:
    """Positions of the named lung-edge channels in a radiomics file's ``/edge`` (``None`` when none is asked)."""
    if not channels:
        return None
    with h5py.File(path, "r") as h5:
        if EDGE_DATASET not in h5:
            raise ArtifactError(
                f"{path} has no /{EDGE_DATASET} dataset (lung-edge sequences) but train.edge_inputs asks for "
                f"{list(channels)}; re-run the radiomics stage (vent run CONFIG --from radiomics --force)"
            )
        names = [c.decode() if isinstance(c, bytes) else str(c) for c in h5[EDGE_DATASET].attrs["channels"]]
    unknown = [c for c in channels if c not in names]
    if unknown:
        raise ConfigError(f"train.edge_inputs: unknown channel(s) {unknown}; the radiomics file holds {names}")
    return [names.index(c) for c in channels]


def _model_inputs(
    h5: h5py.File,
    rows: slice | np.ndarray,
    input_kind: InputKind,
    feature_index: Sequence[int] | None,
    edge_index: Sequence[int] | None,
) -> np.ndarray:
    """Rows of an open radiomics file as model inputs (n, T, F_sel + E) float32: the selected features (or the raw
    intensity as one channel), then the chosen lung-edge channels."""
    data = h5[INPUT_DATASETS[input_kind]][rows]
    if input_kind == "raw":
        data = data[:, :, None]
    elif feature_index is not None:
        data = data[:, :, np.asarray(list(feature_index), dtype=np.int64)]
    if edge_index:
        data = np.concatenate([data, h5[EDGE_DATASET][rows][:, :, list(edge_index)]], axis=2)
    return np.ascontiguousarray(data, dtype=np.float32)


def _read_block(
    path: Path,
    input_kind: InputKind,
    start: int,
    stop: int,
    feature_index: np.ndarray | None,
    edge_index: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read rows [start, stop) of one file: x (n, T, F_sel + E) float32 and labels (n,) uint8."""
    with h5py.File(path, "r") as h5:
        data = _model_inputs(h5, slice(start, stop), input_kind, feature_index, edge_index)
        labels = h5[LABEL_DATASET][start:stop]
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data).all(axis=(1, 2))))
        raise DataError(
            f"{path}: {bad} voxel(s) in rows {start}-{stop} have NaN or infinite {INPUT_DATASETS[input_kind]}; "
            "the radiomics stage never writes NaN (radiomics.empty_kernel), so the file is from an older vent or was "
            "altered: delete it and run `vent run CONFIG --from radiomics`"
        )
    if labels.size and labels.max() > 1:
        raise DataError(
            f"{path}: /{LABEL_DATASET} must hold 0/1 values; found {int(labels.max())} in rows {start}-{stop}"
        )
    return data, labels


def read_voxel_inputs(
    path: str | Path,
    rows: np.ndarray,
    input_kind: InputKind,
    feature_index: Sequence[int] | None,
    edge_index: Sequence[int] | None = None,
) -> np.ndarray:
    """Model inputs (n, T, F_sel + E) float32, unstandardised, of the given rows (sorted) of one file.

    The same layout as the training batches (selected features, or the raw intensity, then the edge channels), so
    explanation and prediction feed a model exactly what it was trained on.
    """
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    with h5py.File(path, "r") as h5:
        return _model_inputs(h5, rows, input_kind, feature_index, edge_index)


def _read_labels(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        return h5[LABEL_DATASET][()]


def _as_feature_index(feature_index: Sequence[int] | None, n_features: int, path: Path) -> np.ndarray | None:
    if feature_index is None:
        return None
    index = np.asarray(list(feature_index), dtype=np.int64)
    if index.ndim != 1 or index.size == 0:
        raise ConfigError(f"feature_index must be a non-empty list of feature positions; got {feature_index!r}")
    if index.min() < 0 or index.max() >= n_features:
        raise ConfigError(
            f"feature_index {index.tolist()} is out of range for {path}, which has {n_features} features "
            f"(valid positions 0-{n_features - 1})"
        )
    if np.unique(index).size != index.size:
        raise ConfigError(f"feature_index {index.tolist()} lists a feature twice")
    return index


def _check_same_shape(infos: Sequence[CaseInfo]) -> None:
    first = infos[0]
    for info in infos[1:]:
        if (info.n_steps, info.n_features) != (first.n_steps, first.n_features):
            raise ArtifactError(
                f"{info.path} has {info.n_steps} phases x {info.n_features} features but {first.path} has "
                f"{first.n_steps} x {first.n_features}; all patients of a run must share T and F"
            )


def _checked_targets(targets: Sequence[np.ndarray], infos: Sequence[CaseInfo]) -> list[np.ndarray]:
    """Per-patient continuous targets, one finite value per voxel of each file."""
    if len(targets) != len(infos):
        raise ConfigError(f"{len(targets)} target arrays for {len(infos)} radiomics files")
    checked = []
    for target, info in zip(targets, infos):
        target = np.asarray(target, dtype=np.float32)
        if target.shape != (info.n_voxels,) or not np.isfinite(target).all():
            raise DataError(f"{info.path}: the target needs {info.n_voxels} finite values; got shape {target.shape}")
        checked.append(target)
    return checked


@dataclass(eq=False)
class Standardiser:
    """Per-feature z-scoring with statistics pooled over voxels and phases of the training patients.

    z = (x - mean) / std. Features with zero spread get std = 1 (they become constant 0 after centring).

    Attributes:
        mean: (F_sel,) float64 mean of each selected feature.
        std: (F_sel,) float64 population standard deviation (ddof = 0).
        feature_index: Feature positions the statistics belong to (``None`` = all features, or raw input).
        input_kind: ``"radiomics"`` or ``"raw"``.
        n_values: Number of (voxel, phase) values pooled per feature.
    """

    mean: np.ndarray
    std: np.ndarray
    feature_index: list[int] | None = None
    input_kind: str = "radiomics"
    n_values: int = 0
    _mean32: np.ndarray = field(init=False, repr=False)
    _std32: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ArtifactError(f"standardiser mean {self.mean.shape} and std {self.std.shape} differ in shape")
        if not (np.all(np.isfinite(self.std)) and np.all(self.std > 0)):
            raise ArtifactError("standardiser std must be finite and positive; re-fit it on the training patients")
        self._mean32 = self.mean.astype(np.float32)
        self._std32 = self.std.astype(np.float32)

    def apply(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Return (x - mean) / std.

        Args:
            x: Array or tensor of shape (..., F_sel); float32 output.

        Returns:
            The standardised values, same type and shape as ``x``.
        """
        if x.shape[-1] != self.mean.size:
            raise DataError(
                f"standardiser expects {self.mean.size} features in the last axis; got shape {tuple(x.shape)}"
            )
        if isinstance(x, torch.Tensor):
            mean = torch.as_tensor(self._mean32, device=x.device)
            std = torch.as_tensor(self._std32, device=x.device)
            return (x - mean) / std
        return (np.asarray(x, dtype=np.float32) - self._mean32) / self._std32

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "feature_index": None if self.feature_index is None else [int(i) for i in self.feature_index],
            "input_kind": self.input_kind,
            "n_values": int(self.n_values),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Standardiser:
        """Rebuild a standardiser written by :meth:`to_dict`."""
        try:
            return cls(
                mean=np.asarray(data["mean"], dtype=np.float64),
                std=np.asarray(data["std"], dtype=np.float64),
                feature_index=data.get("feature_index"),
                input_kind=data.get("input_kind", "radiomics"),
                n_values=int(data.get("n_values", 0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ArtifactError(f"invalid standardiser record ({error!r}); re-run the train stage") from error


def merge_moments(
    count_a: int, mean_a: np.ndarray, m2_a: np.ndarray, count_b: int, mean_b: np.ndarray, m2_b: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Merge the running moments of two samples (Chan, Golub & LeVeque 1979, parallel variance).

    n = n_a + n_b;  delta = mean_b - mean_a;  mean = mean_a + delta n_b / n;
    M2 = M2_a + M2_b + delta^2 n_a n_b / n, where M2 is the sum of squared deviations (variance = M2 / n).

    Args:
        count_a, count_b: Sample sizes.
        mean_a, mean_b: (F,) means.
        m2_a, m2_b: (F,) sums of squared deviations from the mean.

    Returns:
        (n, mean, M2) of the union.
    """
    count = count_a + count_b
    if count == 0:
        return 0, mean_a, m2_a
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / count)
    m2 = m2_a + m2_b + delta**2 * (count_a * count_b / count)
    return count, mean, m2


def _case_blocks(info: CaseInfo, selected: np.ndarray | None) -> list[tuple[int, int, np.ndarray | None]]:
    """Split a case into HDF5-chunk-aligned blocks: (start, stop, selected rows relative to start or None)."""
    blocks = []
    for start in range(0, info.n_voxels, info.read_rows):
        stop = min(start + info.read_rows, info.n_voxels)
        if selected is None:
            blocks.append((start, stop, None))
            continue
        lo, hi = np.searchsorted(selected, [start, stop])
        if hi > lo:
            blocks.append((start, stop, (selected[lo:hi] - start).astype(np.int64)))
    return blocks


def fit_standardiser(
    paths: Sequence[str | Path],
    feature_index: Sequence[int] | None,
    input_kind: InputKind = "radiomics",
    max_voxels_per_case: int | None = None,
    seed: int = 0,
    edge_index: Sequence[int] | None = None,
) -> Standardiser:
    """Fit per-feature mean and std over the training patients, streaming block by block.

    Pass only the training patients of a fold (never validation or test patients). With ``max_voxels_per_case`` the
    statistics use the same stratified voxel subsample as :class:`VoxelBatches` with the same seed.

    Args:
        paths: Training patients' radiomics HDF5 files.
        feature_index: Positions of the selected features in the file's F axis (``None`` = all).
        input_kind: ``"radiomics"`` or ``"raw"``.
        max_voxels_per_case: Optional per-patient voxel subsample.
        seed: Subsample seed.
        edge_index: Lung-edge channels appended to the inputs (see :func:`edge_channel_index`), or ``None``.

    Returns:
        The fitted :class:`Standardiser` (statistics pooled over voxels and phases).
    """
    if not paths:
        raise ConfigError("fit_standardiser needs at least one training file; got none")
    infos = [inspect_case(p, input_kind) for p in paths]
    _check_same_shape(infos)
    index = _as_feature_index(feature_index, infos[0].n_features, infos[0].path) if input_kind == "radiomics" else None
    count, mean, m2 = 0, None, None
    for info in infos:
        selected = None
        if max_voxels_per_case is not None:
            selected = select_case_voxels(_read_labels(info.path), max_voxels_per_case, seed, info.path.stem)
        for start, stop, rows in _case_blocks(info, selected):
            block, _ = _read_block(info.path, input_kind, start, stop, index, edge_index)
            if rows is not None:
                block = block[rows]
            values = block.reshape(-1, block.shape[-1]).astype(np.float64)
            block_mean = values.mean(axis=0)
            block_m2 = ((values - block_mean) ** 2).sum(axis=0)
            if mean is None:
                count, mean, m2 = values.shape[0], block_mean, block_m2
            else:
                count, mean, m2 = merge_moments(count, mean, m2, values.shape[0], block_mean, block_m2)
    if mean is None or count == 0:
        raise DataError(f"no voxels found in the training files {[str(p) for p in paths]}")
    std = np.sqrt(m2 / count)
    flat = ~(std > 1e-12 * np.maximum(1.0, np.abs(mean)))
    if flat.any():
        logger.warning("features at selected positions %s are constant over the training voxels; using std = 1",
                       np.flatnonzero(flat).tolist())
        std = np.where(flat, 1.0, std)
    return Standardiser(
        mean=mean,
        std=std,
        feature_index=None if index is None else index.tolist(),
        input_kind=input_kind,
        n_values=int(count),
    )


class VoxelBatches:
    """Iterable of (x, y) batches over the voxels of several patients.

    Yields ``x``: torch.float32 (B, T, F_sel), standardised; ``y``: torch.float32 (B,) 0/1 labels. Every voxel
    (of the subsample, if any) appears exactly once per epoch; the last batch may be smaller.

    Without shuffling, voxels come in file order and row order (patients concatenated), so predictions line up with
    :attr:`case_voxel_counts` and :meth:`voxel_indices`. With shuffling, each epoch visits the chunk-aligned blocks
    of all patients in a random order (seeded by ``seed`` and the epoch set with :meth:`set_epoch`), collects them
    in a buffer of at least ``buffer_voxels`` voxels, permutes the buffer and emits full batches, carrying the
    remainder over. At most about ``buffer_voxels + batch_size + read block`` voxels are held at once, whatever the
    number of patients (transiently twice that in bytes while the buffer is concatenated and permuted);
    :attr:`peak_buffered_voxels_` records the peak voxel count of the last epoch.

    Args:
        paths: Patients' radiomics HDF5 files.
        feature_index: Positions of the selected features in the file's F axis (``None`` = all; ignored for raw).
        input_kind: ``"radiomics"`` (/features) or ``"raw"`` (/intensity as (n, T, 1)).
        standardiser: Applied to every block; ``None`` leaves values as stored.
        batch_size: Voxels per batch.
        shuffle: Shuffle voxels across patients every epoch.
        seed: Seed of the shuffle and of the voxel subsample.
        max_voxels_per_case: Stratified random subsample per patient, fixed across epochs (``None`` = all voxels).
        buffer_voxels: Voxels collected before a shuffle permutation (memory bound when shuffling).
        edge_index: Lung-edge channels appended after the features (see :func:`edge_channel_index`), or ``None``.
        targets: Per patient (``paths`` order), the (n_voxels,) float32 target that replaces the 0/1 labels as
            ``y`` (a continuous ventilation target, ``vent.models.regression``); ``None`` = the labels. The voxel
            subsample is still stratified by the labels.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        feature_index: Sequence[int] | None,
        input_kind: InputKind,
        standardiser: Standardiser | None,
        batch_size: int = 2048,
        shuffle: bool = False,
        seed: int = 0,
        max_voxels_per_case: int | None = None,
        buffer_voxels: int = 65536,
        edge_index: Sequence[int] | None = None,
        targets: Sequence[np.ndarray] | None = None,
    ) -> None:
        if not paths:
            raise ConfigError("VoxelBatches needs at least one radiomics file; got none")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1; got {batch_size}")
        if buffer_voxels < 1:
            raise ConfigError(f"buffer_voxels must be >= 1; got {buffer_voxels}")
        if max_voxels_per_case is not None and max_voxels_per_case < 1:
            raise ConfigError(f"max_voxels_per_case must be >= 1 or None; got {max_voxels_per_case}")
        self.paths = [Path(p) for p in paths]
        self.input_kind = input_kind
        self.infos = [inspect_case(p, input_kind) for p in self.paths]
        _check_same_shape(self.infos)
        self.feature_index = (
            _as_feature_index(feature_index, self.infos[0].n_features, self.paths[0])
            if input_kind == "radiomics"
            else None
        )
        self.edge_index = list(edge_index) if edge_index else None
        n_inputs = self.n_inputs
        if standardiser is not None and standardiser.mean.size != n_inputs:
            raise ConfigError(
                f"standardiser has {standardiser.mean.size} features but the batches have {n_inputs}; "
                "fit it with the same feature_index and input_kind"
            )
        self.standardiser = standardiser
        self.targets = None if targets is None else _checked_targets(targets, self.infos)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.max_voxels_per_case = max_voxels_per_case
        self.buffer_voxels = int(buffer_voxels)
        self.epoch = 0
        self.peak_buffered_voxels_ = 0
        self._selected = [
            select_case_voxels(_read_labels(info.path), max_voxels_per_case, self.seed, info.path.stem)
            if max_voxels_per_case is not None
            else None
            for info in self.infos
        ]
        self._blocks = [
            (case_number, start, stop, rows)
            for case_number, (info, selected) in enumerate(zip(self.infos, self._selected))
            for start, stop, rows in _case_blocks(info, selected)
        ]

    @property
    def n_steps(self) -> int:
        """Number of phases T."""
        return self.infos[0].n_steps

    @property
    def n_inputs(self) -> int:
        """Inputs per phase F_sel + E of the yielded batches (selected features, then edge channels)."""
        n_features = self.infos[0].n_features if self.feature_index is None else int(self.feature_index.size)
        return n_features + (len(self.edge_index) if self.edge_index else 0)

    @property
    def case_voxel_counts(self) -> list[int]:
        """Voxels yielded per patient per epoch, in ``paths`` order."""
        return [
            info.n_voxels if selected is None else int(selected.size)
            for info, selected in zip(self.infos, self._selected)
        ]

    @property
    def n_voxels(self) -> int:
        """Voxels yielded per epoch."""
        return sum(self.case_voxel_counts)

    def voxel_indices(self, case_number: int) -> np.ndarray:
        """Row indices into patient ``case_number``'s file of the voxels yielded (unshuffled order)."""
        selected = self._selected[case_number]
        return np.arange(self.infos[case_number].n_voxels) if selected is None else selected.copy()

    def label_counts(self) -> tuple[int, int]:
        """Return (n_healthy, n_defect) over the voxels yielded per epoch (reads only /labels)."""
        n_positive = 0
        for info, selected in zip(self.infos, self._selected):
            labels = _read_labels(info.path)
            if selected is not None:
                labels = labels[selected]
            n_positive += int(np.count_nonzero(labels == 1))
        return self.n_voxels - n_positive, n_positive

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the next shuffle (same seed and epoch give the same order)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n_voxels / self.batch_size)

    def _load(self, block: tuple[int, int, int, np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        case_number, start, stop, rows = block
        x, y = _read_block(
            self.infos[case_number].path, self.input_kind, start, stop, self.feature_index, self.edge_index
        )
        if self.targets is not None:
            y = self.targets[case_number][start:stop]
        if rows is not None:
            x, y = x[rows], y[rows]
        if self.standardiser is not None:
            x = self.standardiser.apply(x)
        return x, y.astype(np.float32)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(len(self._blocks))
            capacity = max(self.buffer_voxels, self.batch_size)
        else:
            rng = None
            order = np.arange(len(self._blocks))
            capacity = self.batch_size
        self.peak_buffered_voxels_ = 0
        held_x: list[np.ndarray] = []
        held_y: list[np.ndarray] = []
        held = 0
        position = 0
        while position < len(order) or held:
            while held < capacity and position < len(order):
                x, y = self._load(self._blocks[order[position]])
                position += 1
                held_x.append(x)
                held_y.append(y)
                held += y.shape[0]
                self.peak_buffered_voxels_ = max(self.peak_buffered_voxels_, held)
            x_all = np.concatenate(held_x) if len(held_x) > 1 else held_x[0]
            y_all = np.concatenate(held_y) if len(held_y) > 1 else held_y[0]
            held_x, held_y = [], []
            if rng is not None:
                permutation = rng.permutation(y_all.shape[0])
                x_all, y_all = x_all[permutation], y_all[permutation]
            n_full = y_all.shape[0] // self.batch_size
            last = position >= len(order)
            n_emit = y_all.shape[0] if last else n_full * self.batch_size
            for start in range(0, n_emit, self.batch_size):
                stop = min(start + self.batch_size, n_emit)
                yield torch.from_numpy(np.ascontiguousarray(x_all[start:stop])), torch.from_numpy(
                    np.ascontiguousarray(y_all[start:stop])
                )
            if n_emit < y_all.shape[0]:
                held_x, held_y = [x_all[n_emit:].copy()], [y_all[n_emit:].copy()]
            held = y_all.shape[0] - n_emit


def shuffled_epoch_order(
    block_sizes: Sequence[int], batch_size: int, buffer_voxels: int, seed: int, epoch: int
) -> np.ndarray:
    """The voxel order of one shuffled :class:`VoxelBatches` epoch, as rows of the blocks' concatenation.

    The same random draws, in the same order, as ``VoxelBatches.__iter__`` with ``shuffle=True`` (a block order,
    then one permutation per filled buffer, the remainder carried over), applied to row numbers instead of data:
    ``x_staged[order]`` cut into batches of ``batch_size`` equals the streamed batches value for value (a buffer
    emits whole batches except at the end, so no batch spans two buffers).

    Args:
        block_sizes: Rows of every block, in ``VoxelBatches`` block order (patient by patient, file order).
        batch_size: Voxels per batch.
        buffer_voxels: The shuffle buffer of the streamed path.
        seed: The batches' seed.
        epoch: The epoch (``set_epoch``).

    Returns:
        (n_voxels,) int64 row numbers into the concatenated blocks.
    """
    sizes = np.asarray(block_sizes, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(sizes))
    capacity = max(buffer_voxels, batch_size)
    pieces: list[np.ndarray] = []
    held_rows: list[np.ndarray] = []
    held = position = 0
    while position < len(order) or held:
        while held < capacity and position < len(order):
            block = order[position]
            position += 1
            held_rows.append(np.arange(offsets[block], offsets[block + 1], dtype=np.int64))
            held += int(sizes[block])
        rows = np.concatenate(held_rows) if len(held_rows) > 1 else held_rows[0]
        rows = rows[rng.permutation(rows.shape[0])]
        n_emit = rows.shape[0] if position >= len(order) else (rows.shape[0] // batch_size) * batch_size
        pieces.append(rows[:n_emit])
        held_rows = [rows[n_emit:]] if n_emit < rows.shape[0] else []
        held = rows.shape[0] - n_emit
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def staged_bytes(batches: VoxelBatches) -> int:
    """Bytes of a batches' inputs staged as float32 (n_voxels x T x F_sel + E)."""
    return batches.n_voxels * batches.n_steps * batches.n_inputs * 4


class StagedBatches:
    """The batches of a :class:`VoxelBatches`, from its inputs read once into one contiguous float32 array.

    Each HDF5 block is read, subsampled and standardised once (``VoxelBatches``' own block reader), in block order,
    into ``(n_voxels, T, F_sel + E)`` float32 rows: in RAM when that fits in ``memory_budget_bytes``, else in an
    unlinked temporary file in ``spill_dir`` mapped read-only (still contiguous; the pages touched are released
    every buffer of rows, so resident memory stays about one shuffle buffer). Epochs then gather rows in
    :func:`shuffled_epoch_order` (shuffled) or file order: the same samples in the same order as the streamed
    batches, bit for bit, without decompressing the files again every epoch. On a CUDA ``device`` the RAM copy is
    also put on the GPU once (when it takes under half the free GPU memory) and batches are gathered there.

    Args:
        source: The batches to stage (their paths, features, subsample, standardiser, targets, seed, shuffle).
        memory_budget_bytes: Most bytes held in RAM (``execution.memory_budget_gb``).
        spill_dir: Folder of the temporary file when over budget (``None`` = the system's temporary folder).
        device: Where batches are gathered (``None`` or CPU: host memory).

    Attributes:
        in_memory: Whether the rows are held in RAM (else in the mapped file).
        on_device: Whether the rows were copied to ``device``.
        staging_seconds: Wall time of the one read.
    """

    def __init__(
        self,
        source: VoxelBatches,
        memory_budget_bytes: int,
        spill_dir: str | Path | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.source = source
        self.batch_size, self.shuffle = source.batch_size, source.shuffle
        self.n_steps, self.n_inputs = source.n_steps, source.n_inputs
        self.epoch = 0
        self.in_memory = staged_bytes(source) <= memory_budget_bytes
        self._block_sizes = [
            (stop - start) if rows is None else int(rows.size) for _, start, stop, rows in source._blocks
        ]
        self._window = max(source.buffer_voxels, source.batch_size)
        self._spill_dir, self._device = spill_dir, torch.device(device) if device is not None else None
        self._mmap = self._x_device = None
        self.x: np.ndarray | None = None
        self.y = np.zeros(0, dtype=np.float32)
        self.on_device = False
        self.staging_seconds = 0.0

    def stage(self) -> None:
        """Read the inputs once (done by the first epoch; a no-op afterwards)."""
        import time

        if self.x is not None:
            return
        started = time.perf_counter()
        self.x, self.y = self._stage(self._spill_dir)
        target = self._device
        if (self.in_memory and target is not None and target.type == "cuda"
                and self.x.nbytes < 0.5 * torch.cuda.mem_get_info(target)[0]):
            self._x_device = torch.from_numpy(self.x).to(target)
        self.on_device = self._x_device is not None
        self.staging_seconds = time.perf_counter() - started
        logger.info(
            "staged %d voxels x %d x %d (%.2f GB) %s in %.1f s", self.n_voxels, self.n_steps, self.n_inputs,
            self.x.nbytes / 1e9, "in memory" if self.in_memory else "in a mapped file", self.staging_seconds,
        )

    def facts(self) -> dict[str, Any]:
        """How the inputs are held, for a fold's record."""
        return {
            "staged_gb": round(staged_bytes(self.source) / 1e9, 4),
            "held": "not staged (no epoch left)" if self.x is None else "gpu" if self.on_device
            else "ram" if self.in_memory else "mapped_file",
            "staging_seconds": round(self.staging_seconds, 3),
        }

    def _stage(self, spill_dir: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
        """Read every block once, in block order, into RAM or an unlinked temporary file mapped read-only."""
        import mmap
        import os
        import tempfile

        shape = (self.source.n_voxels, self.n_steps, self.n_inputs)
        y = np.empty(shape[0], dtype=np.float32)
        if self.in_memory:
            x = np.empty(shape, dtype=np.float32)
            position = 0
            for block in self.source._blocks:
                bx, by = self.source._load(block)
                x[position : position + by.shape[0]] = bx
                y[position : position + by.shape[0]] = by
                position += by.shape[0]
            return x, y
        descriptor, name = tempfile.mkstemp(prefix="staged-", suffix=".f32", dir=spill_dir)
        os.unlink(name)  # freed when the mapping and descriptor close, even if the process is killed
        with os.fdopen(descriptor, "w+b") as handle:
            position = 0
            for block in self.source._blocks:
                bx, by = self.source._load(block)
                handle.write(np.ascontiguousarray(bx, dtype=np.float32).tobytes())
                y[position : position + by.shape[0]] = by
                position += by.shape[0]
            handle.flush()
            self._mmap = mmap.mmap(handle.fileno(), max(1, int(np.prod(shape)) * 4), access=mmap.ACCESS_READ)
        return np.frombuffer(self._mmap, dtype=np.float32, count=int(np.prod(shape))).reshape(shape), y

    @property
    def n_voxels(self) -> int:
        """Voxels yielded per epoch."""
        return self.source.n_voxels

    def label_counts(self) -> tuple[int, int]:
        """(n_healthy, n_defect) of the voxels yielded, as :meth:`VoxelBatches.label_counts`."""
        return self.source.label_counts()

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the next shuffle (the same order as the streamed batches' epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n_voxels / self.batch_size)

    def epoch_order(self) -> np.ndarray | None:
        """Row order of the next epoch (``None`` = file order)."""
        if not self.shuffle:
            return None
        return shuffled_epoch_order(
            self._block_sizes, self.batch_size, self.source.buffer_voxels, self.source.seed, self.epoch
        )

    def _release_pages(self) -> None:
        import mmap

        if self._mmap is not None:
            self._mmap.madvise(mmap.MADV_DONTNEED)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.stage()
        order = self.epoch_order()
        device_order = None
        if order is not None and self._x_device is not None:
            device_order = torch.from_numpy(order).to(self._x_device.device)
        y_all = torch.from_numpy(self.y)
        since_release = 0
        for start in range(0, self.n_voxels, self.batch_size):
            stop = min(start + self.batch_size, self.n_voxels)
            if order is None:
                x = self._x_device[start:stop] if self._x_device is not None else torch.from_numpy(
                    np.array(self.x[start:stop]) if self._mmap is not None else self.x[start:stop]
                )
                yield x, y_all[start:stop]
            else:
                rows = order[start:stop]
                if device_order is not None:
                    x = self._x_device[device_order[start:stop]]
                else:
                    x = torch.from_numpy(self.x[rows])
                yield x, torch.from_numpy(self.y[rows])
            since_release += stop - start
            if since_release >= self._window:
                self._release_pages()
                since_release = 0
        self._release_pages()
