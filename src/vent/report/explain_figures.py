"""Figures of the explanation (the study's Figs. 11-13 and the deletion check): arrays in, one figure out.

Every function writes its figure through ``vent.report.figures.save_figure`` (PNG at ``FIGURE_DPI`` and an SVG
beside it) and returns the PNG's path. Text is at least 7 pt at the written size; phases are labelled by breathing
state through a ``phase_labels`` list ("1 max exhale", "2", ..., "4 max inhale"); sequences by their feature ids.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from vent.report.figures import phase_tick_labels, save_figure  # noqa: E402

if TYPE_CHECKING:
    from vent.explain.key_sequences import KeySequences

__all__ = [
    "CLASS_ORDER",
    "LOG_X_DECADES",
    "HistogramLayout",
    "class_saliency_figure",
    "deletion_curve_figure",
    "importance_histogram_figure",
    "importance_histogram_layout",
    "label_rows",
    "trend_bands_figure",
]

CLASS_ORDER = ("all", "defect", "healthy")
"""Panel order of the class maps; other class names follow in the order given."""
CLASS_COLOURS = {"defect": "tab:red", "healthy": "tab:blue"}
SMALL = 7
"""Smallest font size (points) of any text, readable at print size."""
LOG_X_DECADES = 1.5
"""The importance histogram uses a log x-axis when the positive importances span more than this many decades
(max / min > 10**1.5 ~ 32): importance is a ratio to a uniform share, and on a linear axis such a spread crowds
the small ones into the first bin."""


def _ordered_classes(maps: dict[str, np.ndarray]) -> list[str]:
    return [c for c in CLASS_ORDER if c in maps] + [c for c in maps if c not in CLASS_ORDER]


def _wrap_phase(label: str) -> str:
    return label.replace(" ", "\n", 1)


def class_saliency_figure(
    maps: dict[str, np.ndarray],
    feature_ids: Sequence[str],
    path: Path,
    cohort: str,
    phase_labels: Sequence[str] | None = None,
    order: Sequence[int] | None = None,
    nan_reason: str = "no fold selected the sequence",
) -> Path:
    """Averaged temporal saliency per voxel class (the study's Fig. 11), one panel per class on one colour scale.

    Args:
        maps: Class name ("all", "defect", "healthy", ...) -> map of shape (T, N), as a saliency share (1.0 = a
            uniform share of a fold's cells); NaN cells are drawn grey.
        feature_ids: The N sequence ids, in map column order.
        path: The PNG to write (an SVG is written beside it).
        cohort: Cohort name for the title, e.g. "Galligas PET cohort".
        phase_labels: T labels by breathing state; None = "phase 1", ...
        order: Column order (indices); None = by decreasing mean over phases of the "all" map (else the first
            map), NaN columns last.
        nan_reason: Why a cell can be NaN, for the note under the colour bar.

    Returns:
        ``path``.
    """
    classes = _ordered_classes(maps)
    arrays = {c: np.asarray(maps[c], dtype=np.float64) for c in classes}
    n_phases, n_sequences = arrays[classes[0]].shape
    if order is None:
        reference = arrays["all" if "all" in arrays else classes[0]]
        with warnings.catch_warnings():  # an all-NaN column: its mean is NaN, and it goes last
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(reference, axis=0)
        order = np.argsort(-np.where(np.isnan(means), -np.inf, means), kind="stable")
        order_note = f"ordered by mean saliency over phases of the '{'all' if 'all' in arrays else classes[0]}' map"
    else:
        order_note = "ordered by overall importance"
    order = list(order)
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()])
    vmax = float(finite.max()) if finite.size else 1.0
    cmap = plt.get_cmap("magma").with_extremes(bad="0.75")
    width = max(6.0, 0.3 * n_sequences + 2.8)
    fig, axes = plt.subplots(
        len(classes), 1, figsize=(width, len(classes) * (0.28 * n_phases + 0.7) + 1.9), sharex=True, squeeze=False
    )
    image = None
    for ax, name in zip(axes[:, 0], classes):
        image = ax.imshow(
            np.ma.masked_invalid(arrays[name][:, order]), aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax,
            interpolation="nearest",
        )
        ax.set_yticks(range(n_phases), phase_tick_labels(n_phases, phase_labels), fontsize=SMALL)
        ax.set_ylabel("phase", fontsize=SMALL + 1)
        ax.set_title(f"{name} voxels" if name != "all" else "all explained voxels", fontsize=SMALL + 1, loc="left")
    axes[-1, 0].set_xticks(range(n_sequences), [feature_ids[j] for j in order], rotation=60, ha="right",
                           rotation_mode="anchor", fontsize=SMALL)
    axes[-1, 0].set_xlabel(f"radiomic sequence ({order_note})", fontsize=SMALL + 1)
    colorbar = fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.02)
    label = "saliency share (1 = uniform share of a fold's cells)"
    if any(np.isnan(a).any() for a in arrays.values()):
        label += f"\ngrey: no value ({nan_reason})"
    colorbar.set_label(label, fontsize=SMALL + 1)
    colorbar.ax.tick_params(labelsize=SMALL)
    fig.suptitle(f"Averaged temporal saliency by voxel class, {cohort}", fontsize=10)
    return save_figure(fig, path)


@dataclass(frozen=True)
class HistogramLayout:
    """What the importance histogram draws (computed before drawing, so a test can check it).

    Attributes:
        values: The importances on the axis (finite; positive ones only on a log axis), shape (M,).
        bins: Bin edges, shape (B + 1,).
        log_x: Whether the x-axis is logarithmic (``LOG_X_DECADES``).
        threshold: The rule's threshold line, or None if it is not finite (nothing to draw).
        markers: (importance, feature id) of each key sequence, by descending importance.
        notes: Sentences on what is not shown (NaN: not ranked; <= 0 on a log axis).
        n_ranked: Sequences with a finite importance.
    """

    values: np.ndarray
    bins: np.ndarray
    log_x: bool
    threshold: float | None
    markers: tuple[tuple[float, str], ...]
    notes: tuple[str, ...]
    n_ranked: int


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def importance_histogram_layout(
    importance: np.ndarray, feature_ids: Sequence[str], key: KeySequences
) -> HistogramLayout:
    """The histogram's values, bins (10 to 40: twice the square root of the count), scale, line and markers."""
    importance = np.asarray(importance, dtype=np.float64)
    finite = importance[np.isfinite(importance)]
    positive = finite[finite > 0]
    log_x = positive.size > 1 and positive.max() / positive.min() > 10**LOG_X_DECADES
    values = positive if log_x else finite
    notes = []
    if finite.size < importance.size:
        notes.append(f"Not shown: {_count(importance.size - finite.size, 'sequence')} without importance (not ranked).")
    if log_x and positive.size < finite.size:
        notes.append(f"Not shown on the log axis: {_count(finite.size - positive.size, 'sequence')} with importance "
                     "<= 0.")
    n_bins = int(np.clip(2 * np.ceil(np.sqrt(max(values.size, 1))), 10, 40))
    if values.size == 0:
        bins = np.linspace(0.0, 1.0, n_bins + 1)
    elif log_x:
        bins = np.geomspace(values.min() / 1.05, values.max() * 1.05, n_bins + 1)
    else:
        low, high = min(0.0, float(values.min())), float(values.max())
        high = high + 0.05 * (high - low) if high > low else low + 1.0  # a margin: the largest marker stays whole
        bins = np.linspace(low, high, n_bins + 1)
    threshold = float(key.threshold) if np.isfinite(key.threshold) else None
    markers = tuple((float(importance[i]), str(feature_ids[i])) for i in key.picked)
    return HistogramLayout(values, bins, bool(log_x), threshold, markers, tuple(notes), int(finite.size))


def label_rows(ax: plt.Axes, markers: Sequence[tuple[float, str]], pad_px: float = 4.0) -> list[tuple[float, str, int]]:
    """Rows for the key-sequence names above the histogram: no two names overlap and no leader line crosses a name.

    Each name is drawn right-aligned, ending at its marker's x, on row r (0 = lowest), with a vertical leader line
    from the marker up to it. Taking the markers by increasing x, each goes on the lowest row where (a) it overlaps
    no name on that row, (b) its line crosses no name on a lower row, and (c) it covers no line of a name on a
    higher row. A new top row always satisfies all three: every earlier name ends at or left of this x.

    Args:
        ax: The axes the names go on, its x scale and limits already set.
        markers: (x in data units, name) of each key sequence.
        pad_px: Least gap between names and between a name and a line, in display pixels.

    Returns:
        (x, name, row) of each marker, by increasing x.
    """
    renderer = ax.figure.canvas.get_renderer()
    placed: list[tuple[float, tuple[float, float], int]] = []  # (line x, name span, row), display pixels
    rows = []
    for x, name in sorted(markers):
        probe = ax.text(0.0, 0.0, f" {name} ", fontsize=SMALL)
        width = probe.get_window_extent(renderer).width
        probe.remove()
        x_px = float(ax.transData.transform((x, 0.0))[0])
        span = (x_px - width, x_px)

        def fits(row: int, x_px: float = x_px, span: tuple[float, float] = span) -> bool:
            for line, (start, end), other in placed:
                if other == row and start - pad_px < span[1] and span[0] < end + pad_px:
                    return False  # (a) the names overlap
                if other < row and start - pad_px < x_px < end - 1.0:
                    return False  # (b) this line would cross that name
                if other > row and span[0] - pad_px < line < span[1] - 1.0:
                    return False  # (c) this name would cover that line
            return True

        row = next(r for r in range(len(placed) + 1) if fits(r))
        placed.append((x_px, span, row))
        rows.append((x, name, row))
    return rows


def importance_histogram_figure(
    importance: np.ndarray, feature_ids: Sequence[str], key: KeySequences, path: Path
) -> Path:
    """Histogram of the sequences' importance (the study's Fig. 12) with the key-sequence rule's threshold.

    Above the histogram a rug shows every sequence on the axis (grey ticks) and the key ones (red triangles), each
    named on its own leader line (``label_rows``: no name overlaps another or crosses a line). The x-axis is
    logarithmic when the positive importances span more than ``LOG_X_DECADES`` decades. The rule's description is
    the subtitle; sequences not on the axis are counted there.

    Args:
        importance: Importance of each sequence, shape (N,) (1.0 = a uniform share; NaN = not ranked).
        feature_ids: The N sequence ids.
        key: The rule's pick (``vent.explain.key_sequences.pick_key_sequences``).
        path: The PNG to write (an SVG is written beside it).

    Returns:
        ``path``.
    """
    layout = importance_histogram_layout(importance, feature_ids, key)
    width, hist_height = 7.0, 2.6
    fig = plt.figure(figsize=(width, hist_height + 1.5))
    grid = fig.add_gridspec(2, 1, height_ratios=[1.0, hist_height], hspace=0.05)
    rug = fig.add_subplot(grid[0])
    hist = fig.add_subplot(grid[1], sharex=rug)
    hist.hist(layout.values, bins=layout.bins, color="tab:gray", edgecolor="white")
    if layout.log_x:
        hist.set_xscale("log")
        hist.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        hist.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        hist.xaxis.set_minor_formatter(NullFormatter())
    hist.set_xlim(layout.bins[0], layout.bins[-1])
    hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    hist.set_xlabel("importance (saliency share; 1 = uniform)", fontsize=SMALL + 1)
    hist.set_ylabel("radiomic sequences", fontsize=SMALL + 1)
    hist.tick_params(labelsize=SMALL)
    handles = [Patch(color="tab:gray", label="radiomic sequences (count per bin)"),
               Line2D([], [], color="tab:red", marker="v", ls="", label=f"key sequence ({len(layout.markers)})")]
    if layout.threshold is not None:
        for ax in (rug, hist):
            ax.axvline(layout.threshold, color="black", ls="--", lw=1.0, gid="key-threshold")
        handles.append(Line2D([], [], color="black", ls="--",
                              label=f"threshold {layout.threshold:.3g} ({key.rule} rule)"))
    counts, _ = np.histogram(layout.values, bins=layout.bins)
    hist.set_ylim(0, max(1, counts.max(initial=0)) * 1.4)  # headroom: the legend sits above the bars
    hist.legend(handles=handles, fontsize=SMALL, loc="upper right", framealpha=1.0, edgecolor="none")

    rows = label_rows(rug, layout.markers)
    n_rows = 1 + max((row for _, _, row in rows), default=0)
    rug_height = 0.35 + 0.17 * n_rows  # a 7 pt name is ~0.1 inch tall
    fig.set_size_inches(width, hist_height + rug_height + 0.9)  # the width, hence every x position, is unchanged
    grid.set_height_ratios([rug_height, hist_height])
    for ax in (rug, hist):  # axes keep the positions of their creation: re-read them from the new ratios
        ax.set_position(ax.get_subplotspec().get_position(fig))
    rug.plot(layout.values, np.zeros_like(layout.values), "|", color="tab:gray", ms=8)
    for x, name, row in rows:
        rug.plot([x, x], [0.0, row + 1.0], color="tab:red", lw=0.7)
        rug.plot([x], [0.0], "v", color="tab:red", ms=6)
        rug.text(x, row + 1.0, f" {name} ", ha="right", va="center", fontsize=SMALL, zorder=4,
                 bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3})
    rug.set_ylim(-0.3, n_rows + 0.6)
    rug.set_yticks([])
    for side in ("top", "right", "left"):
        rug.spines[side].set_visible(False)
    rug.tick_params(axis="x", which="both", bottom=False, labelbottom=False)
    subtitle = "\n".join(textwrap.wrap(" ".join((key.description, *layout.notes)), 115))
    below = rug.text(0.0, 1.04, subtitle, transform=rug.transAxes, fontsize=SMALL, va="bottom", ha="left",
                     color="0.25")
    rug.annotate(f"Importance of the {layout.n_ranked} ranked radiomic sequences and the key sequences", (0.0, 1.0),
                 xycoords=below, xytext=(0, 4), textcoords="offset points", fontsize=10, va="bottom", ha="left")
    return save_figure(fig, path)


def trend_bands_figure(
    bands: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]],
    path: Path,
    phase_labels: Sequence[str] | None,
    n_patients: int,
    band_reason: str = "fewer than two patients have voxels of the class",
) -> Path:
    """Feature value over the breathing phases in defect vs healthy voxels for each key sequence (Fig. 13).

    Args:
        bands: Feature id -> class ("defect", "healthy") -> (mean, low, high), each shape (T,): the mean over
            patients of the per-patient class means of the raw feature value and its 95% confidence interval
            over patients (NaN low/high = no band drawn there).
        path: The PNG to write (an SVG is written beside it).
        phase_labels: T labels by breathing state; None = "phase 1", ...
        n_patients: Patients the means are over (for the caption).
        band_reason: Why a band can be missing, for the caption.

    Returns:
        ``path``.
    """
    n = max(len(bands), 1)
    n_cols = min(n, 4)
    n_rows = int(np.ceil(n / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols + 0.6, 2.5 * n_rows + 1.0), squeeze=False)
    missing_band = False
    for index, (feature_id, classes) in enumerate(bands.items()):
        ax = axes[index // n_cols][index % n_cols]
        n_phases = 0
        for name, colour in CLASS_COLOURS.items():
            if name not in classes:
                continue
            mean, low, high = (np.asarray(a, dtype=np.float64) for a in classes[name])
            n_phases = len(mean)
            phases = np.arange(1, n_phases + 1)
            ax.plot(phases, mean, color=colour, marker="o", ms=3, lw=1.4)
            drawn = np.isfinite(low) & np.isfinite(high)
            missing_band |= not drawn.all()
            ax.fill_between(phases, np.where(drawn, low, np.nan), np.where(drawn, high, np.nan), color=colour,
                            alpha=0.18, lw=0)
        labels = [_wrap_phase(label) for label in phase_tick_labels(n_phases, phase_labels)]
        ax.set_xticks(np.arange(1, n_phases + 1), labels, fontsize=SMALL)
        ax.tick_params(axis="y", labelsize=SMALL)
        ax.set_title(feature_id, fontsize=SMALL + 1)
        if index % n_cols == 0:
            ax.set_ylabel("feature value (raw)", fontsize=SMALL + 1)
        if index // n_cols == n_rows - 1 or index + n_cols >= len(bands):
            ax.set_xlabel("phase (breathing state)", fontsize=SMALL + 1)
    for index in range(len(bands), n_rows * n_cols):
        axes[index // n_cols][index % n_cols].axis("off")
    handles = [Line2D([], [], color=c, marker="o", ms=3, label=f"{name} voxels") for name, c in CLASS_COLOURS.items()]
    handles.append(Patch(color="0.6", alpha=0.4, label="95% CI over patients"))
    caption = (f"Line: mean over {n_patients} patients of each patient's mean feature value in the class; band: 95% "
               "confidence interval of that mean over patients.")
    if missing_band:
        caption += f" No band where it is undefined ({band_reason})."
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    legend = fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=SMALL + 1, frameon=False,
                        bbox_to_anchor=(0.5, 1.0))  # above the panels: the saved figure's box grows to hold it
    axes[0][0].annotate("Key sequences over the breathing cycle, defect vs healthy", (0.5, 1.0), xycoords=legend,
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=10)
    fig.text(0.01, 0.0, "\n".join(textwrap.wrap(caption, int(38 * n_cols + 20))), fontsize=SMALL, va="bottom",
             color="0.25")
    return save_figure(fig, path)


def deletion_curve_figure(curves: Sequence[dict], path: Path) -> Path:
    """AUC of held-out voxels as sequences are zeroed: the top-ranked first vs random ones, per fold.

    Args:
        curves: One dict per fold: "fold" (its number), "ks" (sequences zeroed), "top_auc" (AUC with the k
            top-ranked sequences zeroed), "random_auc_mean", "random_auc_p5", "random_auc_p95" (over random
            subsets of k sequences), each list as long as "ks".
        path: The PNG to write (an SVG is written beside it).

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = plt.get_cmap("tab10").colors
    handles = []
    for index, curve in enumerate(curves):
        colour = colours[index % len(colours)]
        ks = np.asarray(curve["ks"], dtype=np.float64)
        ax.fill_between(ks, np.asarray(curve["random_auc_p5"], dtype=float),
                        np.asarray(curve["random_auc_p95"], dtype=float), color=colour, alpha=0.15, lw=0)
        ax.plot(ks, curve["random_auc_mean"], color=colour, ls="--", lw=1.2)
        ax.plot(ks, curve["top_auc"], color=colour, ls="-", lw=1.8, marker="o", ms=3)
        handles.append(Patch(color=colour, label=f"fold {curve['fold']}"))
    handles += [
        Line2D([], [], color="black", ls="-", marker="o", ms=3, label="top-ranked sequences zeroed"),
        Line2D([], [], color="black", ls="--", label="random sequences zeroed (mean)"),
        Patch(color="0.5", alpha=0.3, label="random: 5th-95th percentile"),
    ]
    ax.axhline(0.5, color="0.5", ls=":", lw=0.8)
    ax.text(ax.get_xlim()[1], 0.5, "chance ", ha="right", va="bottom", fontsize=SMALL, color="0.4")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("radiomic sequences zeroed (at every phase)", fontsize=SMALL + 1)
    ax.set_ylabel("AUC of held-out voxels", fontsize=SMALL + 1)
    ax.tick_params(labelsize=SMALL)
    ax.set_title("Deletion check: zeroing the most important sequences vs random ones", fontsize=10)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=SMALL, frameon=False)
    return save_figure(fig, path)
