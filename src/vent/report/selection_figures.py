"""Fig. 3 of the study: the averaged feature correlation matrix ordered by its dendrogram (matplotlib, Agg backend).

The dendrogram is the one the select stage cut (``linkage_matrix`` of a selection file, average linkage on
d = 1 - |r| by default); rows and columns of the heatmap follow its leaves (scipy's ``dendrogram`` leaf order), so
each cluster is a block on the diagonal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.cluster import hierarchy  # noqa: E402

from vent.errors import DataError  # noqa: E402
from vent.report.figures import save_figure  # noqa: E402

__all__ = ["SELECTED_COLOR", "correlation_dendrogram_figure", "selection_dendrogram_inputs"]

SELECTED_COLOR = "#b2182b"
"""Colour of the selected representatives' tick labels (dark red, drawn bold)."""

_LEAF_SPACING = 10.0  # scipy's dendrogram puts leaf i at 10 i + 5
_FIGURE_IN = 12.0
# Panel rectangles in inches (left, bottom, width, height) on a 12 x 12 in figure: the heatmap is 7 in square, the
# left and top dendrograms 1.5 in deep, 2.2 in below and right of the heatmap hold the 6 pt feature names (44
# characters at most), the top-right corner holds the colour bar and the top-left corner the note.
_HEATMAP_IN = (1.75, 2.3, 7.0, 7.0)
_LEFT_TREE_IN = (0.15, 2.3, 1.5, 7.0)
_TOP_TREE_IN = (1.75, 9.35, 7.0, 1.5)
_COLORBAR_IN = (9.3, 10.75, 2.3, 0.16)
_TICK_FONT_PT = 6


def selection_dendrogram_inputs(selection: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The arguments of ``correlation_dendrogram_figure`` from a selection file (``select/paper.json`` or
    ``select/nested_fold<k>.json``).

    The file's ``correlation`` covers all ``feature_ids`` (constant ones too), its ``linkage_matrix`` only the
    ``linkage_feature_ids`` that were clustered; this returns the correlation of those, in that order.

    Args:
        selection: The parsed selection file.

    Returns:
        (correlation (F_c, F_c), linkage matrix (F_c - 1, 4), the F_c clustered feature ids in leaf-index order).

    Raises:
        DataError: The file predates the dendrogram keys (select stage version < 4) or its keys disagree.
    """
    if "linkage_matrix" not in selection or "linkage_feature_ids" not in selection:
        raise DataError(
            "the selection file has no linkage_matrix / linkage_feature_ids (written by an older vent); re-run the "
            "select stage: `vent run CONFIG --from select`."
        )
    feature_ids = list(selection["feature_ids"])
    clustered = list(selection["linkage_feature_ids"])
    missing = [f for f in clustered if f not in feature_ids]
    if missing:
        raise DataError(f"linkage_feature_ids lists features that feature_ids does not: {missing[:3]}")
    rows = [feature_ids.index(f) for f in clustered]
    correlation = np.asarray(selection["correlation"], dtype=np.float64)[np.ix_(rows, rows)]
    return correlation, np.asarray(selection["linkage_matrix"], dtype=np.float64), clustered


def _check_inputs(correlation: np.ndarray, linkage_matrix: np.ndarray, feature_ids: Sequence[str]) -> None:
    n_features = len(feature_ids)
    if correlation.shape != (n_features, n_features):
        raise DataError(f"the correlation matrix must be ({n_features}, {n_features}) like feature_ids; "
                        f"got {correlation.shape}.")
    if linkage_matrix.shape != (n_features - 1, 4):
        raise DataError(f"the linkage matrix of {n_features} features must be ({n_features - 1}, 4); "
                        f"got {linkage_matrix.shape}.")


def _axes_at(fig: plt.Figure, rect_in: tuple[float, float, float, float]) -> plt.Axes:
    left, bottom, width, height = rect_in
    return fig.add_axes((left / _FIGURE_IN, bottom / _FIGURE_IN, width / _FIGURE_IN, height / _FIGURE_IN))


def _distance_ticks(cutoff: float, height: float) -> list[float]:
    """Ticks of the square-root distance axis up to ``height``: 0, the cut-off, and round distances not drawn
    on top of the cut-off's label."""
    round_ticks = [t for t in (0.1, 0.2, 0.4, 0.6, 0.8, 1.0) if t <= height]
    apart = [t for t in round_ticks if abs(np.sqrt(t) - np.sqrt(cutoff)) > 0.06 * np.sqrt(height)]
    return sorted({0.0, float(cutoff), *apart})


def _draw_trees(fig: plt.Figure, linkage_matrix: np.ndarray, cutoff: float, extent: float) -> list[int]:
    """The top and left dendrograms with the cut-off dashed on both; returns the leaf order.

    The distance axes are on a square-root scale: with cut-offs of a few hundredths (the study's 0.02) the merges
    below the cut would otherwise be flattened onto the leaves; lines stay horizontal and vertical, and tick values
    are distances 1 - |r|.
    """
    style = dict(color_threshold=cutoff, above_threshold_color="0.45", no_labels=True)
    height = max(float(linkage_matrix[:, 2].max()), cutoff) * 1.04
    ticks = _distance_ticks(cutoff, height)
    scale = dict(functions=(np.sqrt, np.square))
    top = _axes_at(fig, _TOP_TREE_IN)
    leaves = hierarchy.dendrogram(linkage_matrix, ax=top, orientation="top", **style)["leaves"]
    top.set_yscale("function", **scale)
    top.set_ylim(0, height)
    top.set_yticks(ticks, [f"{t:g}" for t in ticks])
    top.axhline(cutoff, color="k", ls="--", lw=0.9)
    top.set_xlim(0, extent)
    top.set_xticks([])
    top.set_ylabel("1 - |r|  (square-root scale)", fontsize=7.5)
    left = _axes_at(fig, _LEFT_TREE_IN)
    hierarchy.dendrogram(linkage_matrix, ax=left, orientation="left", **style)
    left.set_xscale("function", **scale)
    left.set_xlim(height, 0)
    left.set_xticks(ticks, [f"{t:g}" for t in ticks], rotation=90)
    left.axvline(cutoff, color="k", ls="--", lw=0.9)
    left.set_ylim(extent, 0)  # leaf 0 at the top, as the heatmap's first row
    left.set_yticks([])
    left.set_xlabel("1 - |r|  (square-root scale)", fontsize=7.5)
    for ax in (top, left):
        ax.tick_params(labelsize=7)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    left.spines["left"].set_visible(False)
    return list(leaves)


def _mark_selected(labels: Sequence[plt.Text], selected: set[str]) -> None:
    for label in labels:
        if label.get_text() in selected:
            label.set_color(SELECTED_COLOR)
            label.set_fontweight("bold")


def _draw_note(fig: plt.Figure, cutoff: float, n_clusters: int, n_features: int, n_selected: int) -> None:
    """The key, under the colour bar: what the dashed line, the coloured links and the red names mean."""
    x, y = _COLORBAR_IN[0] / _FIGURE_IN, 10.22 / _FIGURE_IN
    style = dict(fontsize=7.5, va="top", ha="left", linespacing=1.4)
    fig.text(x, y, f"dashed: the cut-off 1 - |r| = {cutoff:g}, giving\n{n_clusters} clusters of {n_features} "
             "features (coloured links:\nmerges below the cut)", **style)
    fig.text(x, y - 0.5 / _FIGURE_IN, f"bold red names: the {n_selected} representatives\nkept, one per cluster "
             "(best |Spearman|)", color=SELECTED_COLOR, fontweight="bold", **style)


def correlation_dendrogram_figure(
    correlation: np.ndarray,
    linkage_matrix: np.ndarray,
    feature_ids: Sequence[str],
    path: Path,
    cutoff: float,
    selected: list[str],
) -> list[str]:
    """Fig. 3: the phase-averaged Pearson correlation of the clustered features, rows and columns in the
    dendrogram's leaf order, with the dendrogram on top and on the left, the cut-off dashed on both and the
    selected representatives' names in bold dark red. Writes ``path`` (PNG) and its SVG.

    Args:
        correlation: Pearson r averaged over phases, shape (F, F), rows and columns in ``feature_ids`` order.
        linkage_matrix: scipy linkage matrix over the same F features (leaf i = ``feature_ids[i]``), (F - 1, 4).
        feature_ids: The F feature ids (a selection file's ``linkage_feature_ids``).
        path: The PNG to write.
        cutoff: The cut-off distance 1 - |r| the clusters were cut at.
        selected: The representatives kept (ids among ``feature_ids``).

    Returns:
        The feature ids in the order drawn along the heatmap's x axis (read back from its tick labels), which is
        scipy's ``dendrogram(linkage_matrix)["leaves"]`` order.

    Raises:
        DataError: Shapes that do not match ``feature_ids``, or a selected id that is not among them.
    """
    correlation = np.asarray(correlation, dtype=np.float64)
    linkage_matrix = np.asarray(linkage_matrix, dtype=np.float64)
    _check_inputs(correlation, linkage_matrix, feature_ids)
    unknown = sorted(set(selected) - set(feature_ids))
    if unknown:
        raise DataError(f"selected features {unknown[:3]} are not among the clustered feature ids.")
    n_features = len(feature_ids)
    extent = _LEAF_SPACING * n_features
    fig = plt.figure(figsize=(_FIGURE_IN, _FIGURE_IN))
    leaves = _draw_trees(fig, linkage_matrix, cutoff, extent)
    ordered = [feature_ids[i] for i in leaves]
    heat = _axes_at(fig, _HEATMAP_IN)
    image = heat.imshow(correlation[np.ix_(leaves, leaves)], cmap="RdBu_r", vmin=-1, vmax=1,
                        extent=(0, extent, extent, 0), aspect="auto", interpolation="nearest")
    centres = _LEAF_SPACING * np.arange(n_features) + _LEAF_SPACING / 2
    heat.set_xticks(centres, ordered, rotation=90, fontsize=_TICK_FONT_PT)
    heat.set_yticks(centres, ordered, fontsize=_TICK_FONT_PT)
    heat.yaxis.tick_right()
    heat.tick_params(length=1.5, pad=1.5)
    _mark_selected([*heat.get_xticklabels(), *heat.get_yticklabels()], set(selected))
    colorbar = fig.colorbar(image, cax=_axes_at(fig, _COLORBAR_IN), orientation="horizontal")
    colorbar.set_label("Pearson r, averaged over phases", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    n_clusters = len(np.unique(hierarchy.fcluster(linkage_matrix, cutoff, criterion="distance")))
    _draw_note(fig, cutoff, n_clusters, n_features, len(selected))
    fig.text(_HEATMAP_IN[0] / _FIGURE_IN, 11.3 / _FIGURE_IN,
             "Fig. 3: feature correlation, ordered by the dendrogram of d = 1 - |r|", fontsize=11, ha="left")
    drawn = [label.get_text() for label in heat.get_xticklabels()]
    save_figure(fig, path)
    return drawn
