"""Grey-level discretisation over the ROI (IBSI section 2.7), with pyradiomics semantics."""

from __future__ import annotations

import numpy as np

from vent.errors import ConfigError, DataError


def fixed_bin_number_edges(low: float, high: float, bin_count: int) -> np.ndarray:
    """Bin edges for a fixed bin number (IBSI FBN), as pyradiomics computes them.

    edges = numpy.histogram_bin_edges over [low, high] with ``bin_count`` bins, last edge + 1 so that the maximum
    falls in bin ``bin_count`` under half-open bins [e_k, e_k+1). Equivalent to the IBSI formula
    X_d = floor(N_g (X - X_min) / (X_max - X_min)) + 1, with X_max mapped to N_g.

    Args:
        low: Lowest value of the scale (ROI minimum for scope "phase").
        high: Highest value of the scale.
        bin_count: Number of bins N_g.

    Returns:
        Edges, shape (bin_count + 1,).
    """
    edges = np.histogram_bin_edges(np.array([low, high], dtype=np.float64), bins=bin_count)
    edges[-1] += 1.0
    return edges


def fixed_bin_width_edges(low: float, high: float, bin_width: float) -> np.ndarray:
    """Bin edges for a fixed bin width (IBSI FBS), as pyradiomics computes them (edges at multiples of the width).

    edges = arange(low - (low mod w), high + 2 w, w); grey level = index of the half-open bin.

    Args:
        low: Lowest value of the scale.
        high: Highest value of the scale.
        bin_width: Bin width w in image units.

    Returns:
        Edges, shape (n + 1,).
    """
    lower = low - (low % bin_width)
    edges = np.arange(lower, high + 2 * bin_width, bin_width, dtype=np.float64)
    if len(edges) == 1:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def discretise(
    image: np.ndarray,
    mask: np.ndarray,
    bin_count: int | None = 64,
    bin_width: float | None = None,
    value_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, int]:
    """Discretise an image into grey levels 1..Ng inside the mask (0 outside).

    Fixed bin number (``bin_count``) takes precedence over fixed bin width (``bin_width``); with both None the image
    must already hold integer grey levels >= 1 inside the mask (e.g. the IBSI digital phantom) and is used as is.

    Args:
        image: Image, any shape, float or int.
        mask: Boolean mask, same shape as ``image``; the ROI.
        bin_count: Fixed bin number N_g, or None.
        bin_width: Fixed bin width in image units, or None.
        value_range: (low, high) of the scale. None = min and max inside the mask (scope "phase", pyradiomics);
            pass one range for all phases of a patient for scope "case". Values outside the range are clipped
            to the first/last bin.

    Returns:
        (grey, n_grey): grey levels as int32 with the image's shape (1..Ng inside mask, 0 outside), and Ng, the
        ROI-wide number of grey levels used by the normalised GLCM features (pyradiomics: max grey level present).

    Raises:
        DataError: Shapes differ, the mask is empty, or values inside the mask are not finite / not grey levels.
        ConfigError: A non-positive bin count or width.
    """
    image = np.asarray(image)
    mask = np.asarray(mask, dtype=bool)
    if image.shape != mask.shape:
        raise DataError(f"image shape {image.shape} and mask shape {mask.shape} differ; resample the mask first.")
    if not mask.any():
        raise DataError("The mask is empty: no voxel to discretise. Check the mask file and its label.")
    values = image[mask].astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise DataError("The image holds NaN or infinite values inside the mask; fill or mask them first.")
    grey = np.zeros(image.shape, dtype=np.int32)
    if bin_count is None and bin_width is None:
        if np.any(values != np.round(values)) or values.min() < 1:
            raise DataError(
                "With no discretisation (bins none) the image must hold integer grey levels >= 1 inside the mask; "
                "use a bin count or bin width instead."
            )
        grey[mask] = values.astype(np.int32)
        return grey, int(values.max())
    low, high = (float(values.min()), float(values.max())) if value_range is None else map(float, value_range)
    if not high >= low:
        raise ConfigError(f"value_range must satisfy low <= high, got ({low}, {high}).")
    if bin_count is not None:
        if bin_count < 1:
            raise ConfigError(f"bin_count must be >= 1, got {bin_count}.")
        edges = fixed_bin_number_edges(low, high, bin_count)
    else:
        if not bin_width > 0:  # type: ignore[operator]
            raise ConfigError(f"bin_width must be > 0, got {bin_width}.")
        edges = fixed_bin_width_edges(low, high, float(bin_width))  # type: ignore[arg-type]
    n_bins = len(edges) - 1
    levels = np.clip(np.digitize(values, edges), 1, n_bins).astype(np.int32)
    grey[mask] = levels
    n_grey = int(levels.max()) if value_range is None else n_bins
    return grey, n_grey
