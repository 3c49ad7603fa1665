"""HDF5 layouts of the per-case artifacts: the only module that knows their dataset names (paths: ``vent.io.layout``).

Axis order: 4D arrays are (t, z, y, x), 3D arrays (z, y, x), coordinates (z, y, x) voxel indices on the case's 2 mm
grid (the grid is stored as attributes; see ``vent.io.images.Grid``). Phase 0 is the first phase in the recorded
``phase_order``.

``preprocess/<case>.h5``::

    /ct            (T, Z, Y, X) float32   HU, resampled (linear) to the 2 mm grid
    /phase_masks   (T, Z, Y, X) uint8     lung mask per phase
    /lung_mask     (Z, Y, X) uint8        analysed voxels (see preprocess.analysis_mask)
    /refvi         (Z, Y, X) float32      reference ventilation image on the same grid
    /defect        (Z, Y, X) uint8        ground-truth defects (inside lung_mask)
    attrs: format_version, case_id, fingerprint, grid (size_xyz, spacing_mm_xyz, origin_mm_xyz, direction),
           crop_start_zyx, phase_files, phase_order, lung_volume_ml per phase, inhale_phase, exhale_phase,
           ground-truth details

``radiomics/<case>.h5``::

    /features      (N, T, F) float32      N lung voxels, T phases, F features (chunked by voxels, compressed)
    /intensity     (N, T) float32         the voxel's own CT value per phase (raw 4DCT sequence)
    /labels        (N,) uint8             ground-truth defect
    /refvi         (N,) float32           reference ventilation at the voxel
    /coords        (N, 3) int32           (z, y, x)
    /edge          (N, T, 3) float32      lung-edge sequences: inside, distance_mm, kernel_lung_fraction
                                          (``vent.radiomics.lung_edge``; attribute ``channels``)
    attrs: format_version, case_id, fingerprint, feature_ids, ibsi_ids, settings (JSON), grid, phase_order,
           exhale_phase, inhale_phase, empty_kernel (JSON: policy and per-phase counts)

``radiomics/partial/<case>/phase_<t>.h5`` (one task's output, merged into the case file and then removed)::

    /features      (N, F) float32         the features of phase t, voxels in the order of np.argwhere(lung_mask),
                                          after the phase's own part of ``radiomics.empty_kernel`` (the
                                          ``analysis_mask`` recomputation; NaN where a kernel stays undefined)
    /edge          (N, 3) float32         the lung-edge channels of phase t (``vent.radiomics.lung_edge``)
    attrs: format_version (``RADIOMICS_PHASE_FORMAT``), case_id, fingerprint (the case's), phase, n_grey,
           feature_ids, empty_kernel (JSON: the phase's empty, undefined and recomputed voxel counts)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vent.errors import ArtifactError
from vent.io.images import Grid

__all__ = [
    "PreprocessedCase",
    "write_preprocessed_case",
    "read_preprocessed_case",
    "PreprocessedPhase",
    "read_preprocessed_phase",
    "preprocessed_phase_count",
    "create_radiomics_phase",
    "finish_radiomics_phase",
    "open_radiomics_phase",
    "create_radiomics_case",
    "write_radiomics_case",
    "write_radiomics_voxel_data",
    "compact_radiomics_case",
    "RadiomicsCase",
    "open_radiomics_case",
    "EDGE_CHANNELS",
    "read_attrs",
    "string_list",
    "VOXEL_CHUNK",
]

VOXEL_CHUNK = 4096
PREPROCESS_FORMAT = 1
RADIOMICS_FORMAT = 1
RADIOMICS_PHASE_FORMAT = 2  # 1: raw features only; 2: with /edge and the empty-kernel tallies
"""``format_version`` attribute of each HDF5 layout; a reader refuses a file of another version."""


def check_format(path: Path, attrs: Any, expected: int, stage: str) -> None:
    """Raise ArtifactError unless the file's ``format_version`` is ``expected`` (names the stage to re-run)."""
    found = attrs.get("format_version")
    found = int(found) if found is not None else None
    if found != expected:
        what = "has no format_version (written by an older vent)" if found is None else f"has format_version {found}"
        raise ArtifactError(
            f"{path} {what}; this vent reads format {expected}: re-run `vent run CONFIG --from {stage} --force`"
        )
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
# Radiomic features are stored chunked but uncompressed: float32 texture values are nearly incompressible (gzip 4
# with shuffle saved 24% on a real-CT case, 673 -> 509 MB) and compressing them cost 24 s of a 40 s per-case merge,
# while the uncompressed write took 0.5 s and reads 10x faster (`python scripts/bench_storage.py FILE`). Files
# written compressed by an earlier vent read the same.
_FEATURE_STORAGE: dict[str, Any] = {}


@dataclass
class PreprocessedCase:
    case_id: str
    ct_tzyx: np.ndarray
    phase_masks_tzyx: np.ndarray
    lung_mask_zyx: np.ndarray
    refvi_zyx: np.ndarray
    defect_zyx: np.ndarray
    grid: Grid
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_phases(self) -> int:
        return int(self.ct_tzyx.shape[0])


def _set_attrs(node: h5py.HLObject, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, dict):
            node.attrs[key] = json.dumps(value, default=str)
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
            node.attrs[key] = np.array(value, dtype=h5py.string_dtype())
        else:
            node.attrs[key] = value


def _get_attrs(node: h5py.HLObject) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.ndarray) and value.dtype.kind in "OS":
            value = string_list(value)
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def write_preprocessed_case(path: Path, case: PreprocessedCase, fingerprint: str) -> None:
    """Write a preprocessed case (see module docstring for the layout)."""
    with h5py.File(path, "w") as handle:
        t, z, y, x = case.ct_tzyx.shape
        chunks4 = (1, min(z, 32), min(y, 64), min(x, 64))
        chunks3 = chunks4[1:]
        handle.create_dataset("ct", data=case.ct_tzyx.astype(np.float32), chunks=chunks4, **_COMPRESSION)
        handle.create_dataset(
            "phase_masks", data=case.phase_masks_tzyx.astype(np.uint8), chunks=chunks4, **_COMPRESSION
        )
        handle.create_dataset("lung_mask", data=case.lung_mask_zyx.astype(np.uint8), chunks=chunks3, **_COMPRESSION)
        handle.create_dataset("refvi", data=case.refvi_zyx.astype(np.float32), chunks=chunks3, **_COMPRESSION)
        handle.create_dataset("defect", data=case.defect_zyx.astype(np.uint8), chunks=chunks3, **_COMPRESSION)
        _set_attrs(
            handle,
            {
                "format_version": PREPROCESS_FORMAT,
                "case_id": case.case_id,
                "fingerprint": fingerprint,
                "axis_order": "t,z,y,x",
                **case.grid.to_attrs(),
                **case.attrs,
            },
        )


def read_preprocessed_case(path: Path, load_ct: bool = True) -> PreprocessedCase:
    """Read a preprocessed case; ``load_ct=False`` skips the 4D arrays (returns empty placeholders)."""
    if not path.is_file():
        raise ArtifactError(f"preprocessed case {path} is missing; run the preprocess stage first")
    with h5py.File(path, "r") as handle:
        attrs = _get_attrs(handle)
        check_format(path, attrs, PREPROCESS_FORMAT, "preprocess")
        grid = Grid.from_attrs(attrs)
        empty = np.zeros((0, 0, 0, 0), np.float32)
        return PreprocessedCase(
            case_id=str(attrs["case_id"]),
            ct_tzyx=handle["ct"][...] if load_ct else empty,
            phase_masks_tzyx=handle["phase_masks"][...] if load_ct else empty.astype(np.uint8),
            lung_mask_zyx=handle["lung_mask"][...],
            refvi_zyx=handle["refvi"][...],
            defect_zyx=handle["defect"][...],
            grid=grid,
            attrs=attrs,
        )


@dataclass
class PreprocessedPhase:
    """One phase of a preprocessed case (a per-phase radiomics task reads no other phase's 4D data)."""

    case_id: str
    phase: int
    n_phases: int
    ct_zyx: np.ndarray
    phase_mask_zyx: np.ndarray
    lung_mask_zyx: np.ndarray
    grid: Grid


def preprocessed_phase_count(path: Path) -> int:
    """The number of phases of a preprocessed case, read from its header."""
    if not path.is_file():
        raise ArtifactError(f"preprocessed case {path} is missing; run the preprocess stage first")
    with h5py.File(path, "r") as handle:
        check_format(path, _get_attrs(handle), PREPROCESS_FORMAT, "preprocess")
        return int(handle["ct"].shape[0])


def read_preprocessed_phase(path: Path, phase: int) -> PreprocessedPhase:
    """Phase ``phase`` of a preprocessed case: its CT and lung mask, with the analysis mask (the 4D datasets are
    chunked one phase per chunk, so this decompresses that phase only)."""
    if not path.is_file():
        raise ArtifactError(f"preprocessed case {path} is missing; run the preprocess stage first")
    with h5py.File(path, "r") as handle:
        attrs = _get_attrs(handle)
        check_format(path, attrs, PREPROCESS_FORMAT, "preprocess")
        n_phases = int(handle["ct"].shape[0])
        if not 0 <= phase < n_phases:
            raise ArtifactError(f"{path} has {n_phases} phases; phase {phase} does not exist")
        return PreprocessedPhase(
            case_id=str(attrs["case_id"]),
            phase=phase,
            n_phases=n_phases,
            ct_zyx=handle["ct"][phase],
            phase_mask_zyx=handle["phase_masks"][phase],
            lung_mask_zyx=handle["lung_mask"][...],
            grid=Grid.from_attrs(attrs),
        )


def create_radiomics_phase(
    handle: h5py.File, n_voxels: int, feature_ids: list[str], attrs: dict[str, Any]
) -> h5py.Dataset:
    """Create a per-phase radiomics file's layout in an open file; returns its (N, F) features dataset to fill
    (then :func:`finish_radiomics_phase`).

    Stored uncompressed like a case's features (``_FEATURE_STORAGE``); the file lives only until its case is merged."""
    chunk = (max(1, min(VOXEL_CHUNK, n_voxels)), len(feature_ids))
    features = handle.create_dataset(
        "features", shape=(n_voxels, len(feature_ids)), dtype=np.float32, chunks=chunk, **_FEATURE_STORAGE
    )
    _set_attrs(handle, {**attrs, "format_version": RADIOMICS_PHASE_FORMAT, "feature_ids": list(feature_ids)})
    return features


def finish_radiomics_phase(handle: h5py.File, edge_nc: np.ndarray, empty_kernel: dict[str, int]) -> None:
    """Write a per-phase file's lung-edge channels (N, 3) and its empty-kernel tallies (``empty_kernel`` attr)."""
    handle.create_dataset("edge", data=edge_nc.astype(np.float32), **_FEATURE_STORAGE)
    handle.attrs["empty_kernel"] = json.dumps(empty_kernel)


def open_radiomics_phase(path: Path) -> tuple[h5py.File, dict[str, Any]]:
    """Open a per-phase radiomics file: (the open file, whose ``features`` dataset is read by blocks; its attrs,
    ``empty_kernel`` decoded)."""
    handle = h5py.File(path, "r")
    attrs = _get_attrs(handle)
    try:
        check_format(path, attrs, RADIOMICS_PHASE_FORMAT, "radiomics")
        if "edge" not in handle or "empty_kernel" not in attrs:
            raise ArtifactError(f"{path} has no /edge or no empty_kernel attribute (not written by a finished phase "
                                "task); delete it and re-run the radiomics stage")
        try:
            attrs["empty_kernel"] = json.loads(attrs["empty_kernel"])
        except ValueError as error:
            raise ArtifactError(f"{path}: unreadable empty_kernel attribute ({error}); delete it and re-run the "
                                "radiomics stage") from None
    except ArtifactError:
        handle.close()
        raise
    return handle, attrs


def create_radiomics_case(
    handle: h5py.File,
    n_voxels: int,
    n_phases: int,
    feature_ids: list[str],
    ibsi_ids: list[str],
    attrs: dict[str, Any],
    chunk_rows: int = VOXEL_CHUNK,
) -> h5py.Dataset:
    """Create the radiomics layout in an open file; returns the (N, T, F) features dataset to fill phase by phase."""
    n_features = len(feature_ids)
    chunk = (max(1, min(chunk_rows, n_voxels)), n_phases, n_features)
    features = handle.create_dataset(
        "features", shape=(n_voxels, n_phases, n_features), dtype=np.float32, chunks=chunk, **_FEATURE_STORAGE
    )
    _set_attrs(
        features, {"feature_ids": list(feature_ids), "ibsi_ids": list(ibsi_ids), "axis_order": "voxel,t,feature"}
    )
    _set_attrs(
        handle,
        {**attrs, "format_version": RADIOMICS_FORMAT, "feature_ids": list(feature_ids), "ibsi_ids": list(ibsi_ids)},
    )
    return features


EDGE_CHANNELS = ("inside", "distance_mm", "kernel_lung_fraction")
_VOXEL_DATASETS = ("intensity", "labels", "refvi", "coords", "edge")
_UNCOMPRESSED = ("features", "intensity", "edge")  # see write_radiomics_voxel_data


def write_radiomics_voxel_data(
    handle: h5py.File,
    intensity_nt: np.ndarray,
    labels: np.ndarray,
    refvi: np.ndarray,
    coords_zyx: np.ndarray,
    edge_ntc: np.ndarray | None = None,
    chunk_rows: int = VOXEL_CHUNK,
) -> None:
    """Write the per-voxel datasets beside ``/features`` (``edge_ntc``: the lung-edge sequences, optional).

    The float sequences (intensity, edge) are stored uncompressed like the features: on a 300k-voxel 10-phase case
    gzip took 0.41 s to save 3 MB on the intensity and 1.29 s to save 23 MB on the edge (of a ~700 MB file), in the
    case's one serial step; the small per-voxel datasets stay compressed (under 0.05 s each)."""
    n = len(labels)
    chunk = max(1, min(chunk_rows, n))
    handle.create_dataset(
        "intensity", data=intensity_nt.astype(np.float32), chunks=(chunk, intensity_nt.shape[1]), **_FEATURE_STORAGE
    )
    handle.create_dataset("labels", data=labels.astype(np.uint8), chunks=(chunk,), **_COMPRESSION)
    handle.create_dataset("refvi", data=refvi.astype(np.float32), chunks=(chunk,), **_COMPRESSION)
    handle.create_dataset("coords", data=coords_zyx.astype(np.int32), chunks=(chunk, 3), **_COMPRESSION)
    if edge_ntc is not None:
        edge = handle.create_dataset(
            "edge", data=edge_ntc.astype(np.float32), chunks=(chunk,) + edge_ntc.shape[1:], **_FEATURE_STORAGE
        )
        _set_attrs(edge, {"channels": list(EDGE_CHANNELS), "axis_order": "voxel,t,channel"})


def write_radiomics_case(
    path: Path,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    feature_ids: list[str] | None = None,
    intensity: np.ndarray | None = None,
    refvi: np.ndarray | None = None,
    coords_zyx: np.ndarray | None = None,
    edge: np.ndarray | None = None,
    grid: Grid | None = None,
    attrs: dict[str, Any] | None = None,
    chunk_rows: int = VOXEL_CHUNK,
) -> Path:
    """Write a whole radiomics case from arrays (fixtures, benchmarks, imports): the layout the stage writes.

    Defaults: ids ``feature_<k>``, intensity = feature 0, refvi = 0, coords = voxels 0..N-1 along x on a
    1 x 1 x N grid of 2 mm, no edge sequences.
    """
    n_voxels, n_phases, n_features = features.shape
    feature_ids = feature_ids or [f"feature_{k}" for k in range(n_features)]
    if coords_zyx is None:
        coords_zyx = np.stack([np.zeros(n_voxels), np.zeros(n_voxels), np.arange(n_voxels)], axis=1)
    if grid is None:
        size = tuple(int(v) + 1 for v in np.asarray(coords_zyx).max(axis=0, initial=0)[::-1])
        grid = Grid(size, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    with h5py.File(path, "w") as handle:
        dataset = create_radiomics_case(
            handle, n_voxels, n_phases, feature_ids, feature_ids,
            {"case_id": Path(path).stem, **grid.to_attrs(), **(attrs or {})}, chunk_rows=chunk_rows,
        )
        dataset[...] = features.astype(np.float32)
        write_radiomics_voxel_data(
            handle,
            intensity_nt=features[:, :, 0] if intensity is None else intensity,
            labels=labels,
            refvi=np.zeros(n_voxels, np.float32) if refvi is None else refvi,
            coords_zyx=np.asarray(coords_zyx),
            edge_ntc=edge,
            chunk_rows=chunk_rows,
        )
    return Path(path)


def compact_radiomics_case(path: Path, keep: np.ndarray) -> None:
    """Rewrite a radiomics file in place keeping only the voxels where ``keep`` is True (streamed by chunks).

    Used when voxels are left out of the analysis after their features were written (``radiomics.empty_kernel``);
    the rewrite goes to a temporary file renamed over ``path``, so ``path`` is never half-written.
    """
    from vent.io.atomic import atomic_path

    keep = np.asarray(keep, dtype=bool)
    kept_index = np.flatnonzero(keep)
    with atomic_path(path) as tmp:
        with h5py.File(path, "r") as source, h5py.File(tmp, "w") as target:
            for key, value in source.attrs.items():
                target.attrs[key] = value
            for name in ("features", *_VOXEL_DATASETS):
                if name not in source:
                    continue
                data = source[name]
                chunks = (max(1, min(VOXEL_CHUNK, len(kept_index))),) + data.shape[1:]
                storage = _FEATURE_STORAGE if name in _UNCOMPRESSED else _COMPRESSION
                out = target.create_dataset(
                    name, shape=(len(kept_index),) + data.shape[1:], dtype=data.dtype, chunks=chunks, **storage
                )
                for key, value in data.attrs.items():
                    out.attrs[key] = value
                for lo in range(0, len(kept_index), VOXEL_CHUNK):
                    rows = kept_index[lo : lo + VOXEL_CHUNK]
                    block = data[int(rows[0]) : int(rows[-1]) + 1]
                    out[lo : lo + len(rows)] = block[rows - rows[0]]


@dataclass
class RadiomicsCase:
    """A ``radiomics/<case>.h5`` file, opened for reading: header facts now, arrays on request.

    Attributes:
        path: The file.
        case_id: Its case.
        feature_ids: The F axis of ``/features``.
        n_voxels: N analysed voxels (rows).
        n_phases: T.
        grid: The case's analysis grid.
        attrs: Every root attribute.
    """

    path: Path
    case_id: str
    feature_ids: list[str]
    n_voxels: int
    n_phases: int
    grid: Grid
    attrs: dict[str, Any]

    def _read(self, name: str) -> np.ndarray:
        with h5py.File(self.path, "r") as handle:
            if name not in handle:
                raise ArtifactError(f"{self.path} has no /{name} dataset; re-run the radiomics stage for this case")
            return handle[name][...]

    def coords(self) -> np.ndarray:
        """(N, 3) int32 (z, y, x) voxel indices on the analysis grid."""
        return self._read("coords")

    def labels(self) -> np.ndarray:
        """(N,) uint8 ground-truth defect."""
        return self._read("labels")

    def intensity(self) -> np.ndarray:
        """(N, T) float32 CT value of each voxel per phase."""
        return self._read("intensity")

    def refvi(self) -> np.ndarray:
        """(N,) float32 reference ventilation (RefVI on the analysis grid) of each voxel."""
        return self._read("refvi")

    def feature_blocks(self, rows: int = VOXEL_CHUNK) -> Iterator[tuple[int, np.ndarray]]:
        """(start row, (n, T, F) float32 block) over ``/features``, chunk-aligned, in bounded memory."""
        with h5py.File(self.path, "r") as handle:
            features = handle["features"]
            for start in range(0, self.n_voxels, rows):
                yield start, features[start : start + rows]


def open_radiomics_case(path: Path) -> RadiomicsCase:
    """Read a radiomics file's header; a missing file or dataset is an ArtifactError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"radiomics file {path} is missing; run the radiomics stage for this case")
    with h5py.File(path, "r") as handle:
        if "features" not in handle:
            raise ArtifactError(f"{path} has no /features dataset; re-run the radiomics stage for this case")
        attrs = _get_attrs(handle)
        check_format(path, attrs, RADIOMICS_FORMAT, "radiomics")
        n_voxels, n_phases, _ = handle["features"].shape
    return RadiomicsCase(
        path=path,
        case_id=str(attrs.get("case_id", path.stem)),
        feature_ids=list(attrs["feature_ids"]),
        n_voxels=int(n_voxels),
        n_phases=int(n_phases),
        grid=Grid.from_attrs(attrs),
        attrs=attrs,
    )


def string_list(values: Any) -> list[str]:
    """An HDF5 string-array attribute (bytes or str items) as a list of str."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_attrs(path: Path) -> dict[str, Any]:
    """All root attributes of an HDF5 artifact."""
    with h5py.File(path, "r") as handle:
        return _get_attrs(handle)


def read_csv_rows(path: Path, stage: str) -> list[dict[str, str]]:
    """The rows of a CSV artifact written by ``stage``; a missing file names the stage to re-run."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; run the {stage} stage (vent run CONFIG --from {stage})")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
