"""The overview PNG of ``vent predict``: one case's CT with its defect probability, binary map and uncertainty.

The volumes are reoriented to LPS first (``sitk.DICOMOrient``), whatever the file's direction matrix, so that every
overview reads the same way: axial slices with anterior at the top and the patient's right on the image's left (the
radiological convention), coronal slices with superior at the top. Pixels are drawn at their physical aspect ratio.
The slices go through the lung's centre of mass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk

from vent.report.figures import save_figure  # importing figures selects the Agg backend
from vent.report.patient_figures import CT_WINDOW_HU

__all__ = ["to_lps", "prediction_overview_figure"]


def to_lps(image: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The image's voxels as a (z, y, x) array on LPS axes (x to the patient's left, y posterior, z superior), and
    its spacing (x, y, z)."""
    oriented = sitk.DICOMOrient(image, "LPS")
    return sitk.GetArrayFromImage(oriented), tuple(float(s) for s in oriented.GetSpacing())


def _centre(lung_zyx: np.ndarray) -> tuple[int, int]:
    """(axial z, coronal y) through the lung's centre of mass."""
    points = np.argwhere(lung_zyx > 0)
    z, y, _ = np.round(points.mean(axis=0)).astype(int) if len(points) else np.array(lung_zyx.shape) // 2
    return int(z), int(y)


def prediction_overview_figure(
    ct: sitk.Image, maps: dict[str, sitk.Image], threshold: float, path: Path, title: str,
    notes: Sequence[str] = (),
) -> Path:
    """Axial and coronal rows; columns CT, probability (with the defect outline), binary defect map, uncertainty.

    Args:
        ct: the case's reference CT on the original grid (HU).
        maps: ``probability``, ``defect``, ``uncertainty`` and ``lung`` images on the same grid.
        threshold: the binary threshold (named in the title of the binary panel).
        path: the PNG (an SVG is written beside it).
        title: the figure title (case and model).
        notes: lines printed under the figure (warnings, metrics).
    """
    ct_zyx, spacing = to_lps(ct)
    arrays = {name: to_lps(image)[0] for name, image in maps.items()}
    z, y = _centre(arrays["lung"])
    fig, axes = plt.subplots(2, 4, figsize=(15, 8), squeeze=False)
    for row, view in enumerate(("axial", "coronal")):
        def cut(volume: np.ndarray) -> np.ndarray:
            return volume[z] if view == "axial" else volume[:, y, :]

        origin = "upper" if view == "axial" else "lower"
        aspect = spacing[1] / spacing[0] if view == "axial" else spacing[2] / spacing[0]
        lung = cut(arrays["lung"]) > 0
        panels = (
            ("CT (lung outlined)", None, None, (None, None)),
            ("defect probability", cut(arrays["probability"]), "magma", (0.0, 1.0)),
            (f"defect (p >= {threshold:.2f})", cut(arrays["defect"]).astype(float), "Reds", (0.0, 1.0)),
            ("uncertainty (fold SD)", cut(arrays["uncertainty"]), "viridis", (0.0, None)),
        )
        for column, (label, values, cmap, (low, high)) in enumerate(panels):
            ax = axes[row][column]
            ax.imshow(cut(ct_zyx), cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], origin=origin,
                      aspect=aspect, interpolation="nearest")
            if values is None:
                if lung.any() and not lung.all():
                    ax.contour(lung.astype(float), levels=[0.5], colors="cyan", linewidths=0.6, origin=origin)
            else:
                hidden = ~lung if column != 2 else ~lung | (values < 0.5)  # the binary panel shows defects only
                shown = np.ma.masked_where(hidden, values)
                top = high if high is not None else max(float(values[lung].max()) if lung.any() else 0.0, 1e-6)
                image = ax.imshow(shown, cmap=cmap, vmin=low, vmax=top, origin=origin, aspect=aspect,
                                  interpolation="nearest", alpha=0.85)
                fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            ax.set_title(f"{view}: {label}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel("R  <-  image left (radiological)" if view == "axial" else "superior up", fontsize=8)
    fig.suptitle(title, fontsize=11)
    if notes:
        fig.text(0.01, 0.005, "\n".join(notes), fontsize=7, va="bottom", ha="left", family="monospace")
    return save_figure(fig, path)
