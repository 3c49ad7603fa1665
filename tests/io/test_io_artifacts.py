"""The per-case HDF5 layouts: written and read by vent.io.artifacts only, with a format_version."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from vent.errors import ArtifactError
from vent.io.artifacts import (
    RADIOMICS_FORMAT,
    create_radiomics_case,
    open_radiomics_case,
    write_radiomics_voxel_data,
)
from vent.io.images import Grid

GRID = Grid((4, 3, 2), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _radiomics_file(path: Path, n_voxels: int = 10, n_phases: int = 3, ids: tuple[str, ...] = ("a", "b")) -> np.ndarray:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n_voxels, n_phases, len(ids))).astype(np.float32)
    coords = np.argwhere(np.ones(GRID.shape_zyx, bool))[:n_voxels].astype(np.int32)
    with h5py.File(path, "w") as handle:
        features = create_radiomics_case(handle, n_voxels, n_phases, list(ids), list(ids),
                                         {"case_id": "c1", **GRID.to_attrs()})
        features[...] = values
        write_radiomics_voxel_data(handle, values[:, :, 0], np.arange(n_voxels) % 2, values[:, 0, 1], coords)
    return values


def test_radiomics_case_reads_back_what_the_writers_wrote(tmp_path: Path) -> None:
    path = tmp_path / "c1.h5"
    values = _radiomics_file(path)
    case = open_radiomics_case(path)
    assert (case.case_id, case.feature_ids, case.n_voxels, case.n_phases) == ("c1", ["a", "b"], 10, 3)
    assert case.grid == GRID and case.attrs["format_version"] == RADIOMICS_FORMAT
    np.testing.assert_array_equal(case.labels(), np.arange(10) % 2)
    np.testing.assert_array_equal(case.intensity(), values[:, :, 0])
    assert case.coords().shape == (10, 3)
    blocks = list(case.feature_blocks(rows=4))
    assert [start for start, _ in blocks] == [0, 4, 8]
    np.testing.assert_array_equal(np.concatenate([block for _, block in blocks]), values)


def test_a_file_of_another_format_is_refused_with_the_stage_to_rerun(tmp_path: Path) -> None:
    path = tmp_path / "c1.h5"
    _radiomics_file(path)
    with h5py.File(path, "a") as handle:
        del handle.attrs["format_version"]
    with pytest.raises(ArtifactError, match=r"no format_version.*--from radiomics"):
        open_radiomics_case(path)
    with pytest.raises(ArtifactError, match="is missing"):
        open_radiomics_case(tmp_path / "absent.h5")
