"""The explain stage's saliency store, ``explain/saliency.h5`` (``vent.io.layout.explain_file``)::

    /fold_<k>/mean_map           (T, N_k) float   mean normalised saliency of fold k's explained voxels
    /fold_<k>/mean_map_defect    (T, N_k)         the same over its defect voxels (when it has any)
    /fold_<k>/mean_map_healthy   (T, N_k)         and over its healthy voxels
        attrs: feature_ids (N_k), n_voxels, steps_max_used
    /pooled_map                  (T, N) float     pooled over folds (vent.explain.pooling), NaN where unselected
    /pooled_map_where_selected   (T, N)
    attrs: format_version, feature_ids (N), method, normalisation
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

__all__ = ["SALIENCY_FORMAT", "SaliencyStore", "saliency_store", "PooledSaliency", "read_pooled_saliency"]

SALIENCY_FORMAT = 1


def _strings(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=h5py.string_dtype())


class SaliencyStore:
    """An open ``saliency.h5`` being written (see :func:`saliency_store`)."""

    def __init__(self, handle: h5py.File) -> None:
        self._handle = handle

    def add_fold(
        self, index: int, mean_map: np.ndarray, class_maps: dict[str, np.ndarray], feature_ids: list[str],
        n_voxels: int, steps_max_used: int,
    ) -> None:
        """One fold's mean map and its per-class maps (``{"defect": ..., "healthy": ...}``)."""
        group = self._handle.create_group(f"fold_{int(index)}")
        group.create_dataset("mean_map", data=mean_map)
        for name, values in class_maps.items():
            group.create_dataset(f"mean_map_{name}", data=values)
        group.attrs["feature_ids"] = _strings(feature_ids)
        group.attrs["n_voxels"] = int(n_voxels)
        group.attrs["steps_max_used"] = int(steps_max_used)

    def set_pooled(
        self, pooled_map: np.ndarray, where_selected: np.ndarray, feature_ids: list[str], method: str,
        normalisation: str,
    ) -> None:
        """The maps pooled over folds, on the full sequence list ``feature_ids``."""
        self._handle.create_dataset("pooled_map", data=pooled_map)
        self._handle.create_dataset("pooled_map_where_selected", data=where_selected)
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
    """The pooled maps of a saliency store."""

    feature_ids: list[str]
    pooled_map: np.ndarray
    pooled_map_where_selected: np.ndarray
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
            method=method.decode() if isinstance(method, bytes) else str(method),
        )
