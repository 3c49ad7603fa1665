"""Fig. 3: the averaged correlation heatmap ordered by the select stage's dendrogram, its leaves in scipy's order."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgb
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

import vent.report.selection_figures as selection_figures
from vent.errors import DataError
from vent.report.selection_figures import (
    SELECTED_COLOR,
    correlation_dendrogram_figure,
    selection_dendrogram_inputs,
)
from vent.selection import correlation_distance

GROUPS = 3
PER_GROUP = 4


@pytest.fixture()
def planted() -> tuple[np.ndarray, np.ndarray, list[str], dict[str, int]]:
    """12 features in 3 correlated groups (one member sign-flipped), columns shuffled: (r, Z, ids, group of id)."""
    rng = np.random.default_rng(7)
    factors = rng.normal(size=(2000, GROUPS))
    columns, groups = [], []
    for g in range(GROUPS):
        for k in range(PER_GROUP):
            sign = -1.0 if k == 1 else 1.0
            columns.append(sign * factors[:, g] + (0.2 + 0.1 * k) * rng.normal(size=2000))
            groups.append(g)
    order = rng.permutation(len(columns))
    data = np.stack(columns, axis=1)[:, order]
    ids = [f"feature_{g}_{i:02d}" for i, g in enumerate(np.array(groups)[order])]
    correlation = np.corrcoef(data, rowvar=False)
    linkage_matrix = hierarchy.linkage(squareform(correlation_distance(correlation), checks=False), "average")
    return correlation, linkage_matrix, ids, {f: int(g) for f, g in zip(ids, np.array(groups)[order])}


def test_the_fig3_ordering_equals_scipys_dendrogram_leaf_order(planted, tmp_path):
    correlation, linkage_matrix, ids, group = planted
    path = tmp_path / "fig3.png"
    drawn = correlation_dendrogram_figure(correlation, linkage_matrix, ids, path, 0.3, [ids[0], ids[5]])
    leaves = hierarchy.dendrogram(linkage_matrix, no_plot=True)["leaves"]
    assert drawn == [ids[i] for i in leaves]
    assert drawn != ids  # the shuffle is undone, so the test would see a figure drawn in input order
    positions = {g: [i for i, f in enumerate(drawn) if group[f] == g] for g in range(GROUPS)}
    for g, where in positions.items():  # every planted block is contiguous along the axis
        assert where == list(range(where[0], where[0] + PER_GROUP)), g
    assert path.stat().st_size > 0 and path.with_suffix(".svg").stat().st_size > 0


def test_the_selected_representatives_are_the_bold_red_names(planted, tmp_path, monkeypatch):
    correlation, linkage_matrix, ids, _ = planted
    seen = {}

    def keep(fig, path):
        heat = next(ax for ax in fig.axes if len(ax.get_xticklabels()) == len(ids))
        labels = [*heat.get_xticklabels(), *heat.get_yticklabels()]
        seen["marked"] = {t.get_text() for t in labels if t.get_fontweight() == "bold"}
        seen["red"] = {t.get_text() for t in labels if to_rgb(t.get_color()) == to_rgb(SELECTED_COLOR)}
        seen["y"] = [t.get_text() for t in heat.get_yticklabels()]
        seen["colorbar"] = [ax.get_xlabel() for ax in fig.axes]
        plt.close(fig)
        return path

    monkeypatch.setattr(selection_figures, "save_figure", keep)
    selected = [ids[3], ids[8], ids[10]]
    drawn = correlation_dendrogram_figure(correlation, linkage_matrix, ids, tmp_path / "f.png", 0.3, selected)
    assert seen["marked"] == seen["red"] == set(selected)
    assert seen["y"] == drawn  # rows in the same leaf order as the columns
    assert "Pearson r, averaged over phases" in seen["colorbar"]


def test_fig3_rejects_inputs_that_do_not_match(planted, tmp_path):
    correlation, linkage_matrix, ids, _ = planted
    with pytest.raises(DataError, match="not among"):
        correlation_dendrogram_figure(correlation, linkage_matrix, ids, tmp_path / "f.png", 0.3, ["nope"])
    with pytest.raises(DataError, match="linkage matrix"):
        correlation_dendrogram_figure(correlation, linkage_matrix[:-1], ids, tmp_path / "f.png", 0.3, [])
    with pytest.raises(DataError, match="correlation"):
        correlation_dendrogram_figure(correlation[:-1, :-1], linkage_matrix, ids, tmp_path / "f.png", 0.3, [])


def test_the_inputs_from_a_selection_file_leave_out_constant_features(planted):
    correlation, linkage_matrix, ids, _ = planted
    full = np.zeros((len(ids) + 1, len(ids) + 1))  # a constant feature in second place: row and column 0
    kept = [0, *range(2, len(ids) + 1)]
    full[np.ix_(kept, kept)] = correlation
    selection = {
        "feature_ids": [ids[0], "constant", *ids[1:]],
        "correlation": full.tolist(),
        "linkage_matrix": linkage_matrix.tolist(),
        "linkage_feature_ids": ids,
    }
    got_correlation, got_linkage, got_ids = selection_dendrogram_inputs(selection)
    np.testing.assert_array_equal(got_correlation, correlation)
    np.testing.assert_array_equal(got_linkage, linkage_matrix)
    assert got_ids == ids
    with pytest.raises(DataError, match="re-run the select stage"):
        selection_dendrogram_inputs({k: v for k, v in selection.items() if k != "linkage_matrix"})
