"""Per-patient panels (the study's Figs. 4-9): the 4DCT phases, the RefVI, its ground-truth defects and every
method's binary prediction on the same coronal and axial slice.

Arrays are (z, y, x) on the case's analysis grid. A coronal slice is ``array[:, y, :]`` drawn with z upwards
(superior at the top for a grid whose z axis points to the head); an axial slice is ``array[z]`` drawn with y
downwards (anterior at the top for an LPS grid) and x to the right (the patient's left on the image's right: the
radiological convention).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from vent.report.figures import LineStyle, save_figure  # importing figures selects the Agg backend

__all__ = ["MethodSlice", "PatientPanels", "representative_slices", "patient_panel_figure", "CT_WINDOW_HU"]

CT_WINDOW_HU = (-1000.0, 200.0)
"""Grey-level window of the CT panels (lung window: air black, soft tissue white)."""

PANEL_COLUMNS = 7
"""Panels per figure row; a view (coronal or axial) starts on a new row."""


@dataclass(frozen=True)
class MethodSlice:
    """One method's binary prediction of the patient (0/1 on the analysis grid, NaN outside the analysed voxels)."""

    style: LineStyle
    defect_zyx: np.ndarray
    dice: float | None = None


@dataclass(frozen=True)
class PatientPanels:
    """What one patient's figure shows (everything on the analysis grid, (z, y, x))."""

    case: str
    ct_tzyx: np.ndarray
    phase_labels: Sequence[str]
    refvi_zyx: np.ndarray
    truth_zyx: np.ndarray
    lung_zyx: np.ndarray
    methods: Sequence[MethodSlice]
    title: str


def representative_slices(lung_zyx: np.ndarray, truth_zyx: np.ndarray) -> tuple[int, int]:
    """The (coronal y, axial z) slices shown for a patient.

    Among the slices whose lung cross-section is at least half the largest one (so the slice goes through both
    lungs, not their tips), the one holding the most ground-truth defect voxels inside the lung; ties (e.g. no
    defect) go to the larger lung cross-section.
    """
    lung = np.asarray(lung_zyx) > 0
    if not lung.any():
        raise ValueError("the lung mask is empty: no slice to show")
    defect = lung & (np.asarray(truth_zyx) > 0)

    def pick(axes: tuple[int, int]) -> int:
        area = lung.sum(axis=axes)
        defects = defect.sum(axis=axes)
        eligible = area >= 0.5 * area.max()
        score = np.where(eligible, defects * (area.max() + 1) + area, -1)
        return int(np.argmax(score))

    return pick((0, 2)), pick((1, 2))


def _view(array_zyx: np.ndarray, view: str, index: int) -> np.ndarray:
    return array_zyx[:, index, :] if view == "coronal" else array_zyx[index]


def _show_ct(ax: plt.Axes, ct_slice: np.ndarray, view: str) -> plt.AxesImage:
    return ax.imshow(ct_slice, cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1],
                     origin="lower" if view == "coronal" else "upper", interpolation="nearest")


def _outline(ax: plt.Axes, mask_slice: np.ndarray, view: str, color: str = "white") -> None:
    """The ground-truth defect outline (a contour at 0.5), drawn on a panel for comparison."""
    if mask_slice.any() and not mask_slice.all():
        ax.contour(mask_slice.astype(float), levels=[0.5], colors=color, linewidths=0.6,
                   origin="lower" if view == "coronal" else "upper")


def _overlay(ax: plt.Axes, values: np.ndarray, view: str, **kwargs) -> plt.AxesImage:
    return ax.imshow(np.ma.masked_invalid(values), origin="lower" if view == "coronal" else "upper",
                     interpolation="nearest", **kwargs)


def _method_panel(ax: plt.Axes, panels: PatientPanels, method: MethodSlice, view: str, index: int) -> None:
    """The CT with the method's predicted defects filled in its colour and the ground truth outlined in white."""
    from matplotlib.colors import ListedColormap

    _show_ct(ax, _view(panels.ct_tzyx[0], view, index), view)
    predicted = _view(method.defect_zyx, view, index)
    _overlay(ax, np.where(predicted > 0, 1.0, np.nan), view, cmap=ListedColormap([method.style.color]), alpha=0.85,
             vmin=0, vmax=1)
    _outline(ax, _view(panels.truth_zyx, view, index) > 0, view)
    dice = "" if method.dice is None or math.isnan(method.dice) else f"\nDice {method.dice:.2f}"
    ax.set_title(textwrap.fill(method.style.label, 24) + dice, fontsize=7)
    for spine in ax.spines.values():  # the method's colour, as in every figure of the report
        spine.set_edgecolor(method.style.color)
        spine.set_linewidth(3)


def _colour_bar(fig: plt.Figure, ax: plt.Axes, image: plt.AxesImage, label: str) -> None:
    """A horizontal colour bar just below the panel (so the panel keeps its size)."""
    bar = fig.colorbar(image, cax=ax.inset_axes([0.08, -0.11, 0.84, 0.05]), orientation="horizontal")
    bar.ax.tick_params(labelsize=6)
    bar.set_label(label, fontsize=6, labelpad=1)


def _view_panels(fig: plt.Figure, axes: list[plt.Axes], panels: PatientPanels, view: str, index: int) -> None:
    """One view's panels in order: the phases, the RefVI, the ground truth, then every method."""
    n_phases = panels.ct_tzyx.shape[0]
    lung = _view(panels.lung_zyx, view, index) > 0
    for t in range(n_phases):
        image = _show_ct(axes[t], _view(panels.ct_tzyx[t], view, index), view)
        axes[t].set_title(f"CT phase {panels.phase_labels[t]}", fontsize=7)
    _colour_bar(fig, axes[n_phases - 1], image, "HU")
    refvi = axes[n_phases]
    _show_ct(refvi, _view(panels.ct_tzyx[0], view, index), view)
    values = np.where(lung, _view(panels.refvi_zyx, view, index), np.nan)
    finite = panels.refvi_zyx[(panels.lung_zyx > 0) & np.isfinite(panels.refvi_zyx)]
    high = float(np.percentile(finite, 99)) if finite.size else 1.0
    shown = _overlay(refvi, values, view, cmap="inferno", vmin=0.0, vmax=high or 1.0)
    refvi.set_title("RefVI (reference\nventilation image)", fontsize=7)
    _colour_bar(fig, refvi, shown, "RefVI (scanner units)")
    truth = axes[n_phases + 1]
    _show_ct(truth, _view(panels.ct_tzyx[0], view, index), view)
    _overlay(truth, np.where(lung & (_view(panels.truth_zyx, view, index) > 0), 1.0, np.nan), view,
             cmap="autumn", alpha=0.85, vmin=0, vmax=1)
    truth.set_title("ground-truth defects\n(white outline elsewhere)", fontsize=7)
    for ax, method in zip(axes[n_phases + 2 :], panels.methods):
        _method_panel(ax, panels, method, view, index)


def patient_panel_figure(panels: PatientPanels, path) -> tuple[int, int]:
    """Write one patient's panels (coronal rows, then axial rows); returns the (coronal y, axial z) slices shown."""
    y, z = representative_slices(panels.lung_zyx, panels.truth_zyx)
    per_view = panels.ct_tzyx.shape[0] + 2 + len(panels.methods)
    rows_per_view = math.ceil(per_view / PANEL_COLUMNS)
    depth, height, width = panels.lung_zyx.shape
    coronal_aspect, axial_aspect = depth / width, height / width
    row_heights = [coronal_aspect] * rows_per_view + [axial_aspect] * rows_per_view
    panel_width = 1.5
    title_space = 1.0  # inches above each panel row: a title of up to three lines, or a colour bar below
    fig = plt.figure(figsize=(panel_width * PANEL_COLUMNS, sum(panel_width * h + title_space for h in row_heights)))
    mean_height = panel_width * float(np.mean(row_heights))
    grid = fig.add_gridspec(2 * rows_per_view, PANEL_COLUMNS, height_ratios=row_heights,
                            hspace=title_space / mean_height, wspace=0.08, left=0.03, right=0.99, bottom=0.01,
                            top=1 - 0.5 / fig.get_figheight())
    for v, (view, index) in enumerate((("coronal", y), ("axial", z))):
        axes = [fig.add_subplot(grid[v * rows_per_view + i // PANEL_COLUMNS, i % PANEL_COLUMNS])
                for i in range(per_view)]
        _view_panels(fig, axes, panels, view, index)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].set_ylabel(f"{view}\n{'y' if view == 'coronal' else 'z'} = {index}", fontsize=8)
        for i in range(per_view, rows_per_view * PANEL_COLUMNS):
            fig.add_subplot(grid[v * rows_per_view + i // PANEL_COLUMNS, i % PANEL_COLUMNS]).axis("off")
    fig.suptitle(panels.title, fontsize=9, y=1 - 0.12 / fig.get_figheight(), va="top")
    save_figure(fig, path, tight=False)  # the grid above places every panel
    return y, z
