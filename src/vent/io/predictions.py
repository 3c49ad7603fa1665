"""The prediction contract: what every method (trained or not) hands to the evaluate stage.

``train/predictions/<row>/<case>.h5`` (``vent.io.layout.prediction_file``), one file per held-out patient::

    /probability   (N,) float32   defect probability (or a score in [0, 1]) at each analysed lung voxel
    /defect        (N,) uint8     the binary prediction, probability >= threshold
    /continuous    (N,) float32   optional: the method's continuous ventilation map (high = ventilated)
    /coords        (N, 3) int32   (z, y, x) voxel indices on the case's analysis grid
    attrs: format_version, case_id, row, fold, threshold, grid (vent.io.images.Grid), continuous_name

The ground truth is not part of the contract: the evaluate stage reads it from ``preprocess/<case>.h5`` at
``coords``, so every method is scored against the same labels. Beside each file, ``<case>_probability.nii.gz`` and
``<case>_defect.nii.gz`` (and ``<case>_ventilation.nii.gz`` for a continuous map) hold the same prediction as
volumes, 0 outside the analysed voxels (SimpleITK's NIfTI writer stores NaN as 0, so NaN is not used; the
preprocessed lung mask tells the analysed voxels apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from vent.errors import ArtifactError
from vent.io.artifacts import check_format
from vent.io.atomic import atomic_path
from vent.io.images import Grid

__all__ = ["PREDICTION_FORMAT", "Prediction", "write_prediction", "read_prediction", "prediction_volume"]

PREDICTION_FORMAT = 1


@dataclass
class Prediction:
    """One method's prediction for one held-out patient (module docstring)."""

    case_id: str
    row: str
    fold: int
    probability: np.ndarray
    threshold: float
    coords_zyx: np.ndarray
    grid: Grid
    continuous: np.ndarray | None = None
    continuous_name: str | None = None

    def __post_init__(self) -> None:
        n = len(self.coords_zyx)
        if self.probability.shape != (n,):
            raise ArtifactError(
                f"prediction {self.row}/{self.case_id}: {self.probability.shape} probabilities for {n} voxels"
            )
        if self.continuous is not None and self.continuous.shape != (n,):
            raise ArtifactError(
                f"prediction {self.row}/{self.case_id}: continuous map of shape {self.continuous.shape} for {n} voxels"
            )

    @property
    def defect(self) -> np.ndarray:
        """The binary prediction: probability >= threshold."""
        return (self.probability >= self.threshold).astype(np.uint8)


def prediction_volume(values: np.ndarray, coords_zyx: np.ndarray, grid: Grid, fill: float = np.nan) -> np.ndarray:
    """Scatter per-voxel values onto the case's grid (z, y, x); ``fill`` elsewhere."""
    volume = np.full(grid.shape_zyx, fill, dtype=np.float32)
    volume[tuple(np.asarray(coords_zyx).T)] = values
    return volume


def write_prediction(path: Path, prediction: Prediction, volumes: bool = True) -> None:
    """Write the contract file atomically and, with ``volumes``, the NIfTI probability and defect maps beside it."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("probability", data=prediction.probability.astype(np.float32), compression="gzip")
        handle.create_dataset("defect", data=prediction.defect, compression="gzip")
        handle.create_dataset("coords", data=prediction.coords_zyx.astype(np.int32), compression="gzip")
        if prediction.continuous is not None:
            handle.create_dataset("continuous", data=prediction.continuous.astype(np.float32), compression="gzip")
            handle.attrs["continuous_name"] = prediction.continuous_name or "continuous"
        handle.attrs["format_version"] = PREDICTION_FORMAT
        handle.attrs["case_id"] = prediction.case_id
        handle.attrs["row"] = prediction.row
        handle.attrs["fold"] = int(prediction.fold)
        handle.attrs["threshold"] = float(prediction.threshold)
        for key, value in prediction.grid.to_attrs().items():
            handle.attrs[key] = value
    if volumes:
        _write_volumes(Path(path), prediction)


def _write_volumes(path: Path, prediction: Prediction) -> None:
    """``<case>_probability.nii.gz`` (float32), ``<case>_defect.nii.gz`` (uint8) and, with a continuous map,
    ``<case>_ventilation.nii.gz`` (float32), 0 outside the analysed voxels."""
    import SimpleITK as sitk

    from vent.io.images import image_from_array

    maps = {
        "probability": prediction_volume(prediction.probability, prediction.coords_zyx, prediction.grid),
        "defect": prediction_volume(prediction.defect, prediction.coords_zyx, prediction.grid, 0).astype(np.uint8),
    }
    if prediction.continuous is not None:
        maps["ventilation"] = prediction_volume(prediction.continuous, prediction.coords_zyx, prediction.grid, 0.0)
    for kind, array in maps.items():
        with atomic_path(path.with_name(f"{prediction.case_id}_{kind}.nii.gz")) as tmp:
            sitk.WriteImage(image_from_array(array, prediction.grid), str(tmp))


def read_prediction(path: Path) -> Prediction:
    """Read a contract file; a missing file, an older format or a missing dataset is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"prediction {path} is missing; re-run the train stage (vent run CONFIG --from train)")
    with h5py.File(path, "r") as handle:
        check_format(path, handle.attrs, PREDICTION_FORMAT, "train")
        continuous = handle["continuous"][...] if "continuous" in handle else None
        name = handle.attrs.get("continuous_name")
        return Prediction(
            case_id=_text(handle.attrs["case_id"]),
            row=_text(handle.attrs["row"]),
            fold=int(handle.attrs["fold"]),
            probability=handle["probability"][...],
            threshold=float(handle.attrs["threshold"]),
            coords_zyx=handle["coords"][...],
            grid=Grid.from_attrs(dict(handle.attrs)),
            continuous=continuous,
            continuous_name=_text(name) if name is not None else None,
        )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
