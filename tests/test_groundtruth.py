"""Ground-truth defects: the iterative clipping and both defect readings, against direct numpy computations."""

import numpy as np
import pytest

from vent.errors import DataError
from vent.groundtruth import defect_threshold, derive_defects, iterative_outlier_clip


def test_clip_converges_and_removes_hot_spots():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(100, 10, 20000), [1e4, 2e4, 5e4]])
    clip = iterative_outlier_clip(values, n_sd=4, tolerance=0.01)
    assert clip.n_outliers >= 3
    assert 100 + 3 * 10 < clip.upper < 100 + 5 * 10  # band back near mean + 4 SD of the clean data
    # one more iteration from the final band moves the upper threshold by < 1%
    kept = values[(values >= clip.lower) & (values <= clip.upper)]
    assert abs(kept.mean() + 4 * kept.std() - clip.upper) < 0.01 * clip.upper


def test_volume_threshold_is_quantile():
    values = np.arange(1.0, 101.0)
    assert defect_threshold(values, 0.3, "volume") == pytest.approx(np.quantile(values, 0.3))


def test_cumulative_threshold_holds_fraction_of_total():
    rng = np.random.default_rng(1)
    values = rng.gamma(2.0, 1.0, 5000)
    threshold = defect_threshold(values, 0.3, "cumulative")
    share = values[values <= threshold].sum() / values.sum()
    assert share <= 0.3 + 1e-12
    next_value = np.sort(values)[np.searchsorted(np.sort(values), threshold, side="right")]
    assert values[values <= next_value].sum() / values.sum() > 0.3
    # cumulative selects more voxels than volume on a right-skewed map
    assert (values <= threshold).mean() > 0.3


def test_derive_defects_volume_fraction_and_mask():
    rng = np.random.default_rng(2)
    refvi = rng.normal(1.0, 0.2, (10, 12, 14))
    mask = np.zeros_like(refvi, dtype=bool)
    mask[2:8, 2:10, 3:12] = True
    result = derive_defects(refvi, mask, fraction=0.3, method="volume")
    assert result.defect_zyx[~mask].sum() == 0
    assert result.defect_fraction == pytest.approx(0.3, abs=2 / mask.sum())
    chosen = refvi[mask][result.defect_zyx[mask] == 1]
    others = refvi[mask][result.defect_zyx[mask] == 0]
    assert chosen.max() <= others.min()


def test_derive_defects_errors():
    with pytest.raises(DataError, match="empty"):
        derive_defects(np.ones((3, 3, 3)), np.zeros((3, 3, 3)), case_id="S1")
    with pytest.raises(DataError, match="constant"):
        derive_defects(np.ones((3, 3, 3)), np.ones((3, 3, 3)), case_id="S1")
    bad = np.ones((3, 3, 3))
    bad[1, 1, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        derive_defects(bad, np.ones((3, 3, 3)), case_id="S1")


@pytest.mark.parametrize("method", ["volume", "cumulative"])
def test_a_ventilation_estimate_is_called_by_the_ground_truth_definition(method) -> None:
    """The lowest fraction of an estimate (after the same outlier clip) is its defect call, as derive_defects calls
    the RefVI's; the score falls with ventilation and score >= threshold reproduces the call, ties included."""
    from vent.groundtruth import call_low_ventilation

    rng = np.random.default_rng(3)
    ventilation = np.round(rng.gamma(2.0, 1.0, 4000), 2)  # many ties
    ventilation[:5] = 80.0  # outliers, clipped as the ground truth clips the RefVI
    score, threshold = call_low_ventilation(ventilation, fraction=0.3, method=method)
    mask = np.ones((1, 1, len(ventilation)), np.uint8)
    truth = derive_defects(ventilation[None, None, :], mask, fraction=0.3, method=method).defect_zyx.ravel()
    np.testing.assert_array_equal(score >= threshold, truth.astype(bool))
    order = np.argsort(ventilation)
    assert np.all(np.diff(score[order]) <= 0)
    assert score.dtype == np.float32 and 0.0 <= score.min() and score.max() == 1.0
