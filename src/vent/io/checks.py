"""Voxel-level plausibility checks of CT images and lung masks (pure functions on arrays; no file is opened).

The readers in ``vent.io.vampire`` call these on every file they read, for ``vent validate`` and ``vent run`` alike.
Each check names the file it is told about and says what to do.

Bounds (chosen so that real lung CT passes with a wide margin; measured on NSCLC-Radiomics LUNG1-001, 512x512x134,
with its left and right lung masks: image 1st/99th percentiles -1024/243 HU, maximum 3034 HU; lung median -850 HU,
left -834, right -861; the lung covers 5.2% of the image):

- the image's 99th percentile is at most ``HU_UPPER`` (4000 HU: above bone, only metal is brighter, and metal never
  fills 1% of a chest CT);
- the image's 1st percentile is at least ``HU_LOWER`` (-1100 HU: air is -1000, scanners store it down to -1024).
  Voxels equal to the image minimum are left out when that minimum is below ``HU_LOWER``: this is the constant
  padding some scanners write outside the circular field of view (-2048, -3024);
- the median inside the lung mask lies in ``LUNG_MEDIAN_HU`` (-1050 to -150 HU: lung is air plus a little tissue,
  median about -850 at inhale, about -700 at exhale; a CT without its rescale intercept has lung near +150).

Lung masks: values {0, 1} are a binary mask. Values {0, 1, 2} are read as left/right lung labels, lung = label > 0,
and reported as a warning. Any other value set (more labels, fractions, negative values) is an error, and so is a
mask that is empty or covers more than ``MAX_MASK_FRACTION`` (60%) of its image: lungs fill at most about 45% even
of their own bounding box.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from vent.errors import DataError

__all__ = [
    "HU_LOWER",
    "HU_UPPER",
    "LUNG_MEDIAN_HU",
    "MAX_MASK_FRACTION",
    "check_ct_intensities",
    "check_lung_mask",
    "Findings",
]

T = TypeVar("T")

HU_LOWER = -1100.0
HU_UPPER = 4000.0
LUNG_MEDIAN_HU = (-1050.0, -150.0)
MAX_MASK_FRACTION = 0.6

_HINT = (
    "vent needs CT in Hounsfield units (air -1000, lung about -850, soft tissue 0 to 100); check the file's "
    "rescale slope and intercept, or leave the subject out with data.exclude and a reason"
)


def check_ct_intensities(ct_zyx: np.ndarray, path: Path, lung_zyx: np.ndarray | None = None) -> None:
    """Raise DataError when a CT image's values are not plausible Hounsfield units (bounds in the module docstring).

    Args:
        ct_zyx: the image's voxels, any shape and numeric dtype.
        path: the file, for the message.
        lung_zyx: the lung mask on the same grid (nonzero = lung), or None to check the whole-image range only.

    Raises:
        DataError: naming ``path``, the measured value and the bound.
    """
    values = np.asarray(ct_zyx)
    lowest = float(values.min())
    kept = values[values != lowest] if lowest < HU_LOWER else values.ravel()
    if kept.size == 0:
        raise DataError(f"CT image {path} holds the single value {lowest:g} everywhere; {_HINT}")
    p1, p99 = (float(v) for v in np.percentile(kept, [1, 99]))
    if p99 > HU_UPPER:
        raise DataError(
            f"CT image {path}: its 99th percentile is {p99:.0f} HU, above the plausible {HU_UPPER:.0f} HU; {_HINT}"
        )
    if p1 < HU_LOWER:
        raise DataError(
            f"CT image {path}: its 1st percentile is {p1:.0f} HU, below the plausible {HU_LOWER:.0f} HU (air); {_HINT}"
        )
    if lung_zyx is None:
        return
    lung = np.asarray(lung_zyx) > 0
    if lung.shape != values.shape or not lung.any():
        return  # the geometry and empty-mask checks name those problems
    median = float(np.median(values[lung]))
    low, high = LUNG_MEDIAN_HU
    if not low <= median <= high:
        raise DataError(
            f"CT image {path}: the median inside its lung mask is {median:.0f} HU, outside the plausible "
            f"{low:.0f} to {high:.0f} HU for lung; is the mask the one of this image? {_HINT}"
        )


def check_lung_mask(mask_zyx: np.ndarray, path: Path) -> str | None:
    """Check a lung mask against the mask rule (module docstring): lung = value > 0 for {0, 1} or {0, 1, 2}.

    Args:
        mask_zyx: the mask's voxels, any shape and numeric dtype.
        path: the file, for the message.

    Returns:
        A warning when the mask holds left/right labels {0, 1, 2}; None for a binary mask.

    Raises:
        DataError: naming ``path`` for other values, an empty mask, or one that covers too much of the image.
    """
    values = np.asarray(mask_zyx)
    lowest, highest = values.min(), values.max()
    labels = lowest >= 0 and highest <= 2
    if labels and values.dtype.kind == "f":
        labels = bool(np.all(values == np.round(values)))
    if not labels:
        found = np.unique(values)
        shown = ", ".join(f"{v:g}" for v in found[:8]) + (", ..." if found.size > 8 else "")
        raise DataError(
            f"lung mask {path} holds the values {shown}; vent accepts a binary mask (0 background, 1 lung) or "
            "left/right lung labels (0, 1, 2). Write the lung as a 0/1 mask, or leave the subject out with "
            "data.exclude and a reason"
        )
    lung = values > 0
    n_lung = int(lung.sum())
    if n_lung == 0:
        raise DataError(
            f"lung mask {path} is empty (no voxel > 0); check the file, or leave the subject out with data.exclude and "
            "a reason"
        )
    fraction = n_lung / values.size
    if fraction > MAX_MASK_FRACTION:
        raise DataError(
            f"lung mask {path} covers {fraction:.0%} of its image, more than the plausible "
            f"{MAX_MASK_FRACTION:.0%} for lungs; is it a body mask or inverted? Write the lung as a 0/1 mask, or "
            "leave the subject out with data.exclude and a reason"
        )
    if highest == 2:
        return f"lung mask {path} holds labels 0/1/2 (left/right lung); read as lung = label > 0"
    return None


class Findings:
    """Problems collected over a whole check instead of stopping at the first: ``errors`` (fatal) and ``warnings``.

    ``vent validate`` passes one through every check of a dataset and lists them all; ``vent run`` raises the
    errors of a check together (``raise_errors``).
    """

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, message: str) -> None:
        self.errors.append(message)

    def warn(self, message: str | None) -> None:
        if message:
            self.warnings.append(message)

    def attempt(self, check: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``check(*args, **kwargs)``, or None with its DataError recorded as an error."""
        try:
            return check(*args, **kwargs)
        except DataError as error:
            self.errors.append(str(error))
            return None

    def raise_errors(self) -> None:
        """Raise one DataError holding every error (one error: its message alone)."""
        if len(self.errors) == 1:
            raise DataError(self.errors[0])
        if self.errors:
            listed = "\n".join(f"  - {e}" for e in self.errors)
            raise DataError(f"{len(self.errors)} problems:\n{listed}")
