"""The explain stage's saliency store (vent.io.saliency): format 2 carries the pooled map of each class."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from vent.errors import ArtifactError
from vent.io import layout
from vent.io.saliency import SALIENCY_CLASSES, SALIENCY_FORMAT, read_pooled_saliency, saliency_store

IDS = ["glcm_a", "glcm_b", "edge_distance"]


def _write(path: Path, class_maps: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    maps = {"pooled": rng.random((4, 3)), "where": rng.random((4, 3))}
    class_maps = class_maps or {name: rng.random((4, 3)) for name in SALIENCY_CLASSES}
    with saliency_store(path) as store:
        store.add_fold(0, np.full((4, 2), 1 / 8), {"defect": (np.full((4, 2), 1 / 8), 12)}, IDS[:2], 12, 16)
        store.set_pooled(maps["pooled"], maps["where"], class_maps, IDS, "study", "sum to 1")
    return {**maps, **class_maps}


def test_round_trip_with_class_maps(tmp_path: Path) -> None:
    path = layout.explain_file(tmp_path, "saliency.h5")
    written = _write(path)
    pooled = read_pooled_saliency(path)
    assert SALIENCY_FORMAT == 2 and pooled.feature_ids == IDS and pooled.method == "study"
    np.testing.assert_array_equal(pooled.pooled_map, written["pooled"])
    np.testing.assert_array_equal(pooled.pooled_map_where_selected, written["where"])
    assert sorted(pooled.class_maps) == ["defect", "healthy"]
    for name in SALIENCY_CLASSES:
        np.testing.assert_array_equal(pooled.class_maps[name], written[name])
    with h5py.File(path, "r") as handle:
        assert sorted(handle) == ["fold_0", "pooled_map", "pooled_map_defect", "pooled_map_healthy",
                                  "pooled_map_where_selected"]
        fold = handle["fold_0"]
        assert sorted(fold) == ["mean_map", "mean_map_defect"]  # a fold without healthy voxels
        assert (fold.attrs["n_voxels"], fold.attrs["n_voxels_defect"], fold.attrs["n_voxels_healthy"]) == (12, 12, 0)


def test_an_absent_class_is_stored_as_nan(tmp_path: Path) -> None:
    path = layout.explain_file(tmp_path, "saliency.h5")
    nan = np.full((4, 3), np.nan)
    _write(path, {"defect": np.ones((4, 3)), "healthy": nan})
    assert np.isnan(read_pooled_saliency(path).class_maps["healthy"]).all()


def test_missing_or_unknown_class_maps_are_refused_when_writing(tmp_path: Path) -> None:
    path = layout.explain_file(tmp_path, "saliency.h5")
    with pytest.raises(ArtifactError, match="class maps"):
        _write(path, {"defect": np.ones((4, 3))})
    assert not path.exists()  # written atomically: nothing left behind
    with pytest.raises(ArtifactError, match="class maps"), saliency_store(path) as store:
        store.add_fold(0, np.ones((4, 2)), {"lesion": (np.ones((4, 2)), 3)}, IDS[:2], 3, 8)


def test_missing_file_and_older_format_name_the_stage(tmp_path: Path) -> None:
    path = layout.explain_file(tmp_path, "saliency.h5")
    with pytest.raises(ArtifactError, match="run the explain stage"):
        read_pooled_saliency(path)
    _write(path)
    with h5py.File(path, "a") as handle:
        handle.attrs["format_version"] = 1
    with pytest.raises(ArtifactError, match="format_version 1.*--from explain"):
        read_pooled_saliency(path)
