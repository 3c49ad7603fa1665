"""The explain stage's saliency store, ``explain/saliency.h5`` (``vent.io.layout.explain_file``)::

    /fold_<k>/mean_map           (T, N_k) float   mean normalised saliency of fold k's explained voxels
    /fold_<k>/mean_map_defect    (T, N_k)         the same over its defect voxels (when it has any)
    /fold_<k>/mean_map_healthy   (T, N_k)         and over its healthy voxels
        attrs: feature_ids (N_k), n_voxels, n_voxels_defect, n_voxels_healthy (the class maps' voxels, their
               weights in the pooled class maps; 0 = no map), steps_max_used
    /pooled_map                  (T, F) float     pooled over folds (vent.explain.pooling), NaN where unselected
    /pooled_map_where_selected   (T, F)           the same over the folds that selected each sequence
    /pooled_map_defect           (T, F)           as pooled_map, from each fold's mean_map_defect weighted by its
                                                  defect voxels; all NaN if no fold has defect voxels
    /pooled_map_healthy          (T, F)           and from mean_map_healthy, weighted by healthy voxels
    attrs: format_version, feature_ids (F), method, normalisation

T phases, N_k the sequences fold k selected, F all candidate sequences (the radiomic features, then the lung-edge
inputs). Format 2 added ``pooled_map_defect``, ``pooled_map_healthy`` and the per-class voxel counts of each fold.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from vent.errors import ArtifactError
from vent.io.artifacts import check_format
from vent.io.atomic import atomic_path

__all__ = [
    "SALIENCY_CLASSES",
    "SALIENCY_FORMAT",
    "SaliencyStore",
    "saliency_store",
    "PooledSaliency",
    "read_pooled_saliency",
]

SALIENCY_FORMAT = 2

SALIENCY_CLASSES = ("healthy", "defect")
"""Class names of the per-class maps, indexed by the voxel label (0 healthy, 1 defect)."""


def _strings(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=h5py.string_dtype())


class SaliencyStore:
    """An open ``saliency.h5`` being written (see :func:`saliency_store`)."""

    def __init__(self, handle: h5py.File) -> None:
        self._handle = handle

    def add_fold(
        self, index: int, mean_map: np.ndarray, class_maps: dict[str, tuple[np.ndarray, int]],
        feature_ids: list[str], n_voxels: int, steps_max_used: int,
    ) -> None:
        """One fold's mean map and its per-class maps with their voxel counts (``{"defect": (map, n), ...}``; a
        class the fold has no voxels of is left out)."""
        unknown = sorted(set(class_maps) - set(SALIENCY_CLASSES))
        if unknown:
            raise ArtifactError(f"class maps must be among {SALIENCY_CLASSES}; got {unknown}.")
        group = self._handle.create_group(f"fold_{int(index)}")
        group.create_dataset("mean_map", data=mean_map)
        for name, (values, _) in class_maps.items():
            group.create_dataset(f"mean_map_{name}", data=values)
        group.attrs["feature_ids"] = _strings(feature_ids)
        group.attrs["n_voxels"] = int(n_voxels)
        for name in SALIENCY_CLASSES:
            group.attrs[f"n_voxels_{name}"] = int(class_maps[name][1]) if name in class_maps else 0
        group.attrs["steps_max_used"] = int(steps_max_used)

    def set_pooled(
        self, pooled_map: np.ndarray, where_selected: np.ndarray, class_maps: dict[str, np.ndarray],
        feature_ids: list[str], method: str, normalisation: str,
    ) -> None:
        """The maps pooled over folds, on the full sequence list ``feature_ids``; ``class_maps`` holds the pooled
        map of every class in ``SALIENCY_CLASSES``."""
        if sorted(class_maps) != sorted(SALIENCY_CLASSES):
            raise ArtifactError(f"pooled class maps must be {SALIENCY_CLASSES}; got {sorted(class_maps)}.")
        self._handle.create_dataset("pooled_map", data=pooled_map)
        self._handle.create_dataset("pooled_map_where_selected", data=where_selected)
        for name in SALIENCY_CLASSES:
            self._handle.create_dataset(f"pooled_map_{name}", data=class_maps[name])
        self._handle.attrs["format_version"] = SALIENCY_FORMAT
        self._handle.attrs["feature_ids"] = _strings(feature_ids)
        self._handle.attrs["method"] = method
        self._handle.attrs["normalisation"] = normalisation


@contextmanager
def saliency_store(path: Path) -> Iterator[SaliencyStore]:
    """Write ``saliency.h5`` atomically: nothing appears under ``path`` unless the block finishes."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        yield SaliencyStore(handle)


@dataclass
class PooledSaliency:
    """The pooled maps of a saliency store, each of shape (T, F) with columns in ``feature_ids`` order.

    Attributes:
        feature_ids: All F candidate sequence ids.
        pooled_map: Pooled over every fold (a fold that did not select a sequence counts 0); NaN if none did.
        pooled_map_where_selected: Pooled over the folds that selected each sequence.
        class_maps: ``pooled_map`` from each class's voxels only, for each name in ``SALIENCY_CLASSES``.
        method: The saliency method (``explain.method``).
    """

    feature_ids: list[str]
    pooled_map: np.ndarray
    pooled_map_where_selected: np.ndarray
    class_maps: dict[str, np.ndarray]
    method: str


def read_pooled_saliency(path: Path) -> PooledSaliency:
    """Read the pooled maps; a missing file or another format names the stage to re-run."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; run the explain stage (vent run CONFIG --from explain)")
    with h5py.File(path, "r") as handle:
        check_format(path, handle.attrs, SALIENCY_FORMAT, "explain")
        ids = [v.decode() if isinstance(v, bytes) else str(v) for v in handle.attrs["feature_ids"]]
        method = handle.attrs["method"]
        return PooledSaliency(
            feature_ids=ids,
            pooled_map=handle["pooled_map"][...],
            pooled_map_where_selected=handle["pooled_map_where_selected"][...],
            class_maps={name: handle[f"pooled_map_{name}"][...] for name in SALIENCY_CLASSES},
            method=method.decode() if isinstance(method, bytes) else str(method),
        )
