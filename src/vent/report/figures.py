"""Figures of the report (matplotlib, Agg backend; every function takes arrays and writes one PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vent.io.atomic import atomic_path  # noqa: E402

__all__ = [
    "FIGURE_DPI",
    "LineStyle",
    "save_figure",
    "method_style",
    "roc_figure",
    "importance_figure",
    "phase_tick_labels",
    "selection_figure",
]


FIGURE_DPI = 150
"""Resolution of the PNG figures: a 7-inch-wide figure is ~1000 pixels, sharp at print size."""


def save_figure(fig: plt.Figure, path: Path, tight: bool = True) -> Path:
    """Write ``fig`` as ``path`` (PNG, ``FIGURE_DPI``) and beside it as SVG (same name, ``.svg``), each atomically;
    closes the figure and returns ``path``. Every figure of the report goes through here, so every PNG has its SVG.
    ``tight`` crops to the drawn content (one extra draw per format); a figure that lays itself out passes False.
    The SVG carries no date and fixed element ids, so the same figure gives the same bytes."""
    path = Path(path)
    for target, fmt in ((path, "png"), (path.with_suffix(".svg"), "svg")):
        with atomic_path(target) as tmp, matplotlib.rc_context({"svg.hashsalt": "vent"}):  # fixed SVG element ids
            fig.savefig(tmp, dpi=FIGURE_DPI, bbox_inches="tight" if tight else None, format=fmt,
                        metadata={"Date": None} if fmt == "svg" else None)  # no date: a rerun writes the same bytes
    plt.close(fig)
    return path


@dataclass(frozen=True)
class LineStyle:
    """How one row of Table 2 is drawn in every figure: its label, colour and line style."""

    label: str
    color: tuple[float, float, float]
    linestyle: str = "-"


def method_style(model: str, row: str, label: str) -> LineStyle:
    """A row's style: the colour of its method's position in the registry (the same in every run and figure; 18
    distinct colours: matplotlib's tab20 without its greys, the dark shades first), dashed for a variant row of a
    method (``lstm@paper``)."""
    from vent.models.registry import MODEL_NAMES

    palette = plt.get_cmap("tab20").colors
    no_grey = [colour for i, colour in enumerate(palette) if i not in (14, 15)]  # grey is invisible over a CT
    ordered = no_grey[0::2] + no_grey[1::2]  # the dark shades first
    index = MODEL_NAMES.index(model) if model in MODEL_NAMES else len(MODEL_NAMES)
    return LineStyle(label, tuple(ordered[index % len(ordered)]), "--" if row != model else "-")


def roc_figure(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, reference: str,
    styles: dict[str, LineStyle] | None = None,
) -> Path:
    """Pooled ROC curves per row (the study's Fig. 10), each in its method's colour, labelled by its Table 2 name."""
    styles = styles or {}
    fig, ax = plt.subplots(figsize=(8.6, 5))
    for name, (fpr, tpr, auc) in curves.items():
        style = styles.get(name)
        ax.plot(fpr, tpr, lw=2.4 if name == reference else 1.4, label=f"{style.label if style else name} "
                f"(AUC {auc:.3f})", color=style.color if style else None,
                linestyle=style.linestyle if style else "-")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(
        xlabel="False positive rate",
        ylabel="True positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="ROC, held-out voxels pooled over patients",
    )
    ax.set_aspect("equal")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    return save_figure(fig, path)


def phase_tick_labels(n_phases: int, phase_labels: Sequence[str] | None) -> list[str]:
    """The given phase labels, or "phase 1" ... "phase T" when there are none."""
    return list(phase_labels) if phase_labels is not None else [f"phase {t + 1}" for t in range(n_phases)]


def importance_figure(feature_ids: Sequence[str], importance: np.ndarray, path: Path, n_key: int) -> Path:
    """Importance per radiomic sequence, sorted, the ``n_key`` key sequences (the most important) highlighted."""
    order = np.argsort(-importance)
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.22 * len(order) + 1)))
    colors = ["tab:red" if rank < n_key else "tab:gray" for rank in range(len(order))]
    ax.barh(range(len(order))[::-1], importance[order], color=colors)
    ax.set_yticks(range(len(order))[::-1], [feature_ids[i] for i in order], fontsize=7)
    ax.set_xlabel("importance (saliency share; 1 = uniform)")
    ax.set_title(f"Radiomic sequence importance (the {n_key} key sequence{'s' if n_key != 1 else ''} in red)",
                 fontsize=9)
    return save_figure(fig, path)


def selection_figure(sweep: Sequence[dict], path: Path, chosen_cutoff: float) -> Path:
    """Silhouette and number of clusters over the cut-off sweep, the chosen cut-off dashed."""
    fig, left = plt.subplots(figsize=(6.4, 3.6))
    cut = [s["cutoff"] for s in sweep if s["silhouette"] is not None]
    sil = [s["silhouette"] for s in sweep if s["silhouette"] is not None]
    ncl = [s["n_clusters"] for s in sweep if s["silhouette"] is not None]
    left.plot(cut, sil, "o-", ms=3, label="silhouette")
    left.axvline(chosen_cutoff, color="tab:red", ls="--", lw=1, label=f"chosen cut-off {chosen_cutoff:g}")
    outside = [s["cutoff"] for s in sweep if s["silhouette"] is not None and s.get("eligible") is False]
    if outside:  # cut-offs outside the guard band (select.min_clusters / max_clusters / max_cutoff)
        left.scatter(outside, [sil[cut.index(c)] for c in outside], s=14, color="lightgray", zorder=3,
                     label="outside the guard band")
    left.legend(fontsize=7, loc="upper right")
    left.set(xlabel="cut-off distance (1 - |r|)", ylabel="mean silhouette", title="Cut-off sweep (paper mode)")
    twin = left.twinx()
    twin.plot(cut, ncl, color="tab:gray", lw=1)
    twin.set_ylabel("number of clusters", color="tab:gray")
    fig.tight_layout()
    return save_figure(fig, path)
