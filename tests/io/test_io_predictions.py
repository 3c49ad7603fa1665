"""The prediction contract every method hands to evaluate (vent.io.predictions)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from vent.errors import ArtifactError
from vent.io import layout
from vent.io.images import Grid
from vent.io.predictions import Prediction, read_prediction, write_prediction

GRID = Grid((4, 3, 2), (2.0, 2.0, 2.0), (10.0, -5.0, 3.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _prediction(continuous: bool = False) -> Prediction:
    coords = np.array([[0, 0, 0], [1, 2, 3], [0, 1, 2]], dtype=np.int32)
    probability = np.array([0.1, 0.7, 0.5], dtype=np.float32)
    extra = {"continuous": np.array([1.0, 0.2, 0.4], np.float32), "continuous_name": "jacobian"} if continuous else {}
    return Prediction("Subject_01", "lstm", 2, probability, 0.5, coords, GRID, **extra)


def test_round_trip_and_volumes(tmp_path: Path) -> None:
    path = layout.prediction_file(tmp_path, "lstm", "Subject_01")
    write_prediction(path, _prediction(continuous=True))
    back = read_prediction(path)
    assert (back.case_id, back.row, back.fold, back.threshold, back.grid) == ("Subject_01", "lstm", 2, 0.5, GRID)
    np.testing.assert_array_equal(back.defect, [0, 1, 1])
    np.testing.assert_array_equal(back.continuous, np.array([1.0, 0.2, 0.4], np.float32))
    assert back.continuous_name == "jacobian"
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(layout.prediction_map_file(tmp_path, "lstm", "Subject_01",
                                                                                  "probability"))))
    assert volume.shape == GRID.shape_zyx and volume[1, 2, 3] == pytest.approx(0.7)
    assert np.count_nonzero(volume) == 3  # 0 outside the analysed voxels
    defect = sitk.ReadImage(str(layout.prediction_map_file(tmp_path, "lstm", "Subject_01", "defect")))
    assert defect.GetOrigin() == GRID.origin_mm_xyz and sitk.GetArrayFromImage(defect).sum() == 2
    ventilation = sitk.GetArrayFromImage(sitk.ReadImage(str(layout.prediction_map_file(tmp_path, "lstm", "Subject_01",
                                                                                       "ventilation"))))
    assert ventilation[0, 1, 2] == pytest.approx(0.4) and ventilation.sum() == pytest.approx(1.6)


def test_bad_contracts_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="probabilities for 3 voxels"):
        Prediction("c", "r", 0, np.zeros(2, np.float32), 0.5, np.zeros((3, 3), np.int32), GRID)
    path = tmp_path / "p.h5"
    write_prediction(path, _prediction(), volumes=False)
    with h5py.File(path, "a") as handle:
        handle.attrs["format_version"] = 99
    with pytest.raises(ArtifactError, match="format_version 99"):
        read_prediction(path)
    with pytest.raises(ArtifactError, match="--from train"):
        read_prediction(tmp_path / "absent.h5")
