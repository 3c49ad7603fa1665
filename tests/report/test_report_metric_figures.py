"""The per-patient metrics figure: every patient of every row a dot in its method's colour, the mean a black tick."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib import image as mpimg

from vent.errors import DataError
from vent.report.figures import method_style
from vent.report.metric_figures import PANEL_METRICS, draw_per_patient_metrics, per_patient_metrics_figure

ROWS = [("lstm", "lstm"), ("ctvi_jac", "ctvi_jac"), ("lstm@paper", "lstm"), ("densest_inhale", "densest_inhale")]
CASES = [f"Subject_{i:02d}" for i in range(1, 6)]


def _styled_rows():
    return [(row, method_style(model, row, f"label of {row}")) for row, model in ROWS]


def _records() -> list[dict]:
    rng = np.random.default_rng(3)
    records = [
        {"model": row, "case": case, "fold": k % 2, **{m: float(rng.uniform(0.3, 0.9)) for m, _ in PANEL_METRICS}}
        for row, _ in ROWS
        for k, case in enumerate(CASES)
    ]
    records[1]["auc"] = float("nan")  # lstm, Subject_02: undefined AUC
    records[12]["dice"] = None  # lstm@paper, Subject_03
    return records


def test_each_rows_patients_are_drawn_in_its_colour_with_the_mean_tick():
    records, rows = _records(), _styled_rows()
    fig = draw_per_patient_metrics(records, rows, "lstm")
    try:
        assert len(fig.axes) == len(PANEL_METRICS)
        for ax, (metric, title) in zip(fig.axes, PANEL_METRICS):
            dots = {c.get_gid(): c for c in ax.collections if (c.get_gid() or "").startswith("patients:")}
            means = {line.get_gid(): line for line in ax.lines if (line.get_gid() or "").startswith("mean:")}
            for position, (row, style) in enumerate(rows):
                values = np.array([np.nan if r[metric] is None else r[metric] for r in records if r["model"] == row])
                collection = dots[f"patients:{row}"]
                xy = collection.get_offsets()
                assert len(xy) == np.isfinite(values).sum()  # NaN skipped
                np.testing.assert_allclose(sorted(xy[:, 0]), sorted(values[np.isfinite(values)]))
                assert np.all(np.abs(xy[:, 1] - position) < 0.5)  # jittered within the row
                np.testing.assert_allclose(collection.get_edgecolors()[:, :3], [style.color])
                if style.linestyle == "-":
                    np.testing.assert_allclose(collection.get_facecolors()[:, :3], [style.color])
                else:  # a variant row (lstm@paper): hollow dots in its method's colour
                    assert len(collection.get_facecolors()) == 0 or collection.get_facecolors()[:, 3].max() == 0
                mean = means[f"mean:{row}"]
                assert mean.get_color() == "k"
                np.testing.assert_allclose(mean.get_xdata(), [np.nanmean(values)] * 2)
            assert ax.get_xlim() == pytest.approx((-0.02, 1.02)) and ax.get_xlabel()
        assert fig.axes[0].get_title() == "Dice  (1 NaN skipped)" and fig.axes[1].get_title() == "AUC  (1 NaN skipped)"
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [s.label for _, s in rows]  # Table 2 order
        assert "2 NaN values skipped" in "\n".join(t.get_text() for t in fig.texts)
    finally:
        plt.close(fig)


def test_the_jitter_is_deterministic_and_follows_the_patient():
    rows = _styled_rows()
    first = draw_per_patient_metrics(_records(), rows, "lstm")
    second = draw_per_patient_metrics(list(reversed(_records())), rows, "lstm")
    try:
        for a, b in zip(first.axes[3].collections, second.axes[3].collections):
            assert sorted(map(tuple, a.get_offsets())) == sorted(map(tuple, b.get_offsets()))
    finally:
        plt.close(first)
        plt.close(second)


def test_the_written_figure_shows_each_methods_colour(tmp_path):
    rows = _styled_rows()
    path = per_patient_metrics_figure(_records(), rows, tmp_path / "per_patient.png", "lstm")
    assert path.with_suffix(".svg").stat().st_size > 0
    pixels = mpimg.imread(path)[..., :3]
    for row, style in rows:
        close = (np.abs(pixels - np.array(style.color)).max(axis=-1) < 0.02).sum()
        assert close > 20, row


def test_records_of_a_row_the_figure_is_not_given_are_an_error():
    with pytest.raises(DataError, match="unet"):
        draw_per_patient_metrics([{**_records()[0], "model": "unet"}], _styled_rows(), "lstm")
