"""Explanation figures (Figs. 11-13, deletion): each writes PNG + SVG, draws what it says, handles NaN, names things."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.image import AxesImage

from vent.explain.key_sequences import pick_key_sequences
from vent.report import explain_figures
from vent.report.explain_figures import (
    class_saliency_figure,
    deletion_curve_figure,
    importance_histogram_figure,
    importance_histogram_layout,
    trend_bands_figure,
)

PHASES = ["1 max exhale", "2", "3", "4 max inhale"]
IDS = [f"wavelet-LLH_glcm_{name}" for name in ("JointEntropy", "Contrast", "Idm", "Correlation", "ClusterShade",
                                               "Autocorrelation", "DifferenceVariance", "MCC")]


@pytest.fixture
def captured(monkeypatch):
    """The figures the module saved (still inspectable after save_figure closed them)."""
    figures = []
    real = explain_figures.save_figure

    def capture(fig, path):
        figures.append(fig)
        return real(fig, path)

    monkeypatch.setattr(explain_figures, "save_figure", capture)
    return figures


def _importance() -> np.ndarray:
    return np.array([0.3, 4.0, 0.5, 0.2, 2.5, 0.45, 0.6, 0.35])


def _maps() -> dict[str, np.ndarray]:
    base = np.outer(np.linspace(0.8, 1.2, len(PHASES)), _importance())
    healthy = base * 0.9
    healthy[:, 6] = np.nan  # e.g. no fold selected it among healthy voxels' folds
    return {"healthy": healthy, "all": base, "defect": base * 1.1}


def _bands(nan_band: bool = False) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(0)
    bands = {}
    for feature_id in (IDS[1], IDS[4], IDS[0], IDS[6], IDS[2]):
        classes = {}
        for name, offset in (("defect", 1.0), ("healthy", 0.0)):
            mean = offset + rng.normal(0, 0.2, len(PHASES))
            classes[name] = (mean, mean - 0.3, mean + 0.3)
        bands[feature_id] = classes
    if nan_band:
        mean, low, high = bands[IDS[1]]["defect"]
        bands[IDS[1]]["defect"] = (mean, np.full_like(low, np.nan), np.full_like(high, np.nan))
    return bands


def _curves() -> list[dict]:
    ks = [0, 1, 2, 3]
    return [{"fold": fold, "ks": ks, "top_auc": [0.9, 0.8, 0.7, 0.6], "random_auc_mean": [0.9, 0.89, 0.88, 0.87],
             "random_auc_p5": [0.9, 0.86, 0.85, 0.84], "random_auc_p95": [0.9, 0.9, 0.9, 0.89]} for fold in (0, 1)]


FIGURES = {
    "class_saliency": lambda path: class_saliency_figure(_maps(), IDS, path, "Galligas PET cohort", PHASES),
    "importance_histogram": lambda path: importance_histogram_figure(
        _importance(), IDS, pick_key_sequences(_importance()), path),
    "trend_bands": lambda path: trend_bands_figure(_bands(nan_band=True), path, PHASES, n_patients=6),
    "deletion_curve": lambda path: deletion_curve_figure(_curves(), path),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_each_figure_writes_a_png_and_an_svg(tmp_path, name) -> None:
    path = FIGURES[name](tmp_path / f"{name}.png")
    assert path == tmp_path / f"{name}.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    svg = path.with_suffix(".svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg


def _svg_text(path) -> str:
    return path.with_suffix(".svg").read_text()  # matplotlib keeps each text as a <!-- text --> comment


def test_feature_names_appear_in_the_figures(tmp_path) -> None:
    key = pick_key_sequences(_importance())
    svgs = {name: _svg_text(FIGURES[name](tmp_path / f"{name}.png")) for name in FIGURES}
    assert all(feature_id in svgs["class_saliency"] for feature_id in IDS)
    assert all(IDS[i] in svgs["importance_histogram"] for i in key.picked)
    assert all(feature_id in svgs["trend_bands"] for feature_id in _bands())
    assert "Galligas PET cohort" in svgs["class_saliency"]
    assert "1 max exhale" in svgs["class_saliency"] and "max inhale" in svgs["trend_bands"]
    for name, label in (("class_saliency", "uniform share of a fold"), ("importance_histogram", "radiomic sequences"),
                        ("trend_bands", "feature value (raw)"), ("deletion_curve", "AUC of held-out voxels")):
        assert label in svgs[name], name


def test_the_class_saliency_figure_shares_one_scale_orders_by_importance_and_greys_nan(tmp_path, captured) -> None:
    class_saliency_figure(_maps(), IDS, tmp_path / "fig11.png", "Galligas PET cohort", PHASES)
    fig = captured[0]
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title(loc="left") for ax in panels] == ["all explained voxels", "defect voxels", "healthy voxels"]
    images = [ax.images[0] for ax in panels]
    assert len({image.get_clim() for image in images}) == 1  # one colour scale
    order = list(np.argsort(-_importance()))
    assert [t.get_text() for t in panels[-1].get_xticklabels()] == [IDS[j] for j in order]
    healthy: AxesImage = images[2]
    masked = np.ma.getmaskarray(healthy.get_array())
    assert masked[:, order.index(6)].all() and masked.sum() == len(PHASES)
    assert healthy.get_cmap().get_bad()[:3] == pytest.approx((0.75, 0.75, 0.75))
    colorbar_labels = [ax.get_ylabel() for ax in fig.axes if not ax.images]
    assert any("grey: no value" in label for label in colorbar_labels)


def test_the_histogram_draws_the_rules_threshold_and_marks_the_key_sequences(tmp_path, captured) -> None:
    importance = _importance()
    for rule in ("largest_gap", "top_k", "above_uniform"):
        key = pick_key_sequences(importance, rule=rule, top_k=3)
        importance_histogram_figure(importance, IDS, key, tmp_path / f"{rule}.png")
        fig = captured[-1]
        lines = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == "key-threshold"]
        assert lines and all(line.get_xdata()[0] == pytest.approx(key.threshold) for line in lines), rule
        names = {text.get_text().strip() for ax in fig.axes for text in ax.texts}
        assert {IDS[i] for i in key.picked} <= names, rule
        assert any(key.description[:40] in text.get_text().replace("\n", " ") for text in fig.axes[0].texts)
    assert pick_key_sequences(importance).picked == (1, 4)


def test_the_histogram_goes_log_beyond_one_and_a_half_decades() -> None:
    wide = _importance()  # 0.2 .. 4.0: 1.3 decades
    assert not importance_histogram_layout(wide, IDS, pick_key_sequences(wide)).log_x
    wider = wide.copy()
    wider[3] = 0.1  # 0.1 .. 4.0: 1.6 decades
    layout = importance_histogram_layout(wider, IDS, pick_key_sequences(wider))
    assert layout.log_x and layout.bins[0] < 0.1 and layout.bins[-1] > 4.0 and np.all(np.diff(np.log(layout.bins)) > 0)


def test_the_histogram_says_what_it_leaves_out(tmp_path, captured) -> None:
    importance = np.array([0.01, 3.0, np.nan, 0.0, 2.0, 0.5, 0.4, 0.3])  # log axis; one NaN and one zero left out
    key = pick_key_sequences(importance)
    layout = importance_histogram_layout(importance, IDS, key)
    assert layout.log_x and layout.values.size == 6 and layout.n_ranked == 7
    assert layout.notes == ("Not shown: 1 sequence without importance (not ranked).",
                            "Not shown on the log axis: 1 sequence with importance <= 0.")
    importance_histogram_figure(importance, IDS, key, tmp_path / "gaps.png")
    assert "Not shown on the log axis" in _svg_text(tmp_path / "gaps.png")
    nothing = pick_key_sequences(np.zeros(8))
    importance_histogram_figure(np.zeros(8), IDS, nothing, tmp_path / "nothing.png")  # no line, no marker: no error
    assert not [line for ax in captured[-1].axes for line in ax.get_lines() if line.get_gid() == "key-threshold"]


def test_the_key_sequence_names_never_overlap(tmp_path, captured) -> None:
    importance = np.linspace(2.0, 2.3, 8)  # eight names crowded on a narrow range
    key = pick_key_sequences(importance, rule="top_k", top_k=8)
    importance_histogram_figure(importance, IDS, key, tmp_path / "crowded.png")
    fig = captured[-1]
    renderer = FigureCanvasAgg(fig).get_renderer()  # save_figure closed it: give it a canvas again
    rug = fig.axes[0]
    names = [text for text in rug.texts if text.get_text().strip() in IDS]
    assert len(names) == 8
    boxes = [text.get_window_extent(renderer) for text in names]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    leaders = [line for line in rug.get_lines() if len(line.get_xdata()) == 2 and line.get_color() == "tab:red"]
    for line in leaders:  # a leader line crosses no name below its own
        x_px, top_px = rug.transData.transform((line.get_xdata()[0], line.get_ydata()[1]))
        for box in boxes:
            assert not (box.x0 + 1 < x_px < box.x1 - 1 and box.y1 < top_px), "a leader line crosses a name"


def test_the_trend_bands_skip_nan_and_say_why(tmp_path, captured) -> None:
    trend_bands_figure(_bands(nan_band=True), tmp_path / "fig13.png", PHASES, n_patients=1)
    fig = captured[0]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(_bands())
    assert len([ax for ax in fig.axes if ax.axison]) == 5  # 5 panels in rows of 4; the 3 spare axes hidden
    first = panels[0]
    bands = [c for c in first.collections if isinstance(c, PolyCollection)]
    defect_band = [c for c in bands if np.allclose(c.get_facecolor()[0][:3], (0.839, 0.153, 0.157), atol=0.01)]
    assert all(len(path.vertices) == 0 for c in defect_band for path in c.get_paths())  # the NaN band: not drawn
    assert [line.get_color() for line in first.get_lines()] == ["tab:red", "tab:blue"]
    texts = " ".join(t.get_text().replace("\n", " ") for t in fig.texts)
    assert "mean over 1 patients" in texts and "No band where it is undefined" in texts
    assert [t.get_text() for t in first.get_xticklabels()] == ["1\nmax exhale", "2", "3", "4\nmax inhale"]
    assert len(fig.legends) == 1


def test_the_deletion_figure_draws_top_and_random_per_fold(tmp_path, captured) -> None:
    deletion_curve_figure(_curves(), tmp_path / "deletion.png")
    ax = captured[0].axes[0]
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata()) == 4]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(solid) == 2 and len(dashed) == 2
    assert list(solid[0].get_ydata()) == _curves()[0]["top_auc"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["fold 0", "fold 1", "top-ranked sequences zeroed", "random sequences zeroed (mean)",
                      "random: 5th-95th percentile"]
    assert ax.get_ylabel() == "AUC of held-out voxels"
