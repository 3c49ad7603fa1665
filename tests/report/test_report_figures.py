"""Report figures: one colour per method in every run and figure; the ROC figure labels rows by their Table 2 names."""

from __future__ import annotations

import numpy as np
from matplotlib import image as mpimg

from vent.models.registry import MODEL_NAMES
from vent.report.figures import method_style, roc_figure


def test_every_registered_method_has_its_own_colour_and_variants_share_it_dashed() -> None:
    colours = [method_style(name, name, name).color for name in MODEL_NAMES]
    assert len(set(colours)) == len(MODEL_NAMES)
    variant = method_style("lstm", "lstm@paper", "LSTM [paper]")
    assert variant.color == method_style("lstm", "lstm", "LSTM").color and variant.linestyle == "--"
    # the colour depends on the method alone, not on which rows a run has
    assert method_style("ctvi_hu", "ctvi_hu", "x").color == colours[MODEL_NAMES.index("ctvi_hu")]


def test_the_roc_figure_draws_each_row_in_its_colour(tmp_path) -> None:
    curve = (np.array([0.0, 0.3, 1.0]), np.array([0.0, 0.8, 1.0]), 0.75)
    rows = {name: curve for name in MODEL_NAMES}
    styles = {name: method_style(name, name, f"label of {name}") for name in MODEL_NAMES}
    path = roc_figure(rows, tmp_path / "roc.png", "lstm", styles)
    pixels = mpimg.imread(path)[..., :3]
    for name in ("lstm", "ctvi_jac", "densest_inhale"):  # each colour appears in the picture (legend and line)
        colour = np.array(styles[name].color)
        assert (np.abs(pixels - colour).max(axis=-1) < 0.02).sum() > 20, name
