"""The volume trainer (vent.models.volume): inputs, lung-centred patches, validation tiles, the lung-only loss, and one
fold end to end on a tiny synthetic cohort (predictions at the analysed voxels, a learnable signal, resume)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from vent.config import ExecutionConfig, GroundTruthConfig, TrainConfig
from vent.cv import Fold
from vent.io import layout
from vent.io.artifacts import PreprocessedCase, read_preprocessed_case, write_preprocessed_case
from vent.io.images import Grid
from vent.metrics import auc_roc
from vent.models import volume
from vent.models.jobs import FoldJob
from vent.models.training import MaskedLoss

SHAPE = (16, 32, 32)  # z, y, x
GRID = Grid((32, 32, 16), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
CASES = [f"P{k}" for k in range(5)]
FOLD = Fold(0, train=["P0", "P1"], val=["P2"], test=["P3", "P4"])
TINY_NET = {"features": [4, 4, 8, 8, 16], "patch_size": [16, 32, 32], "batch_size": 4, "patches_per_epoch": 8}


def _case(case: str, seed: int, shape: tuple[int, int, int] = SHAPE) -> PreprocessedCase:
    """An ellipsoid lung; smooth defect blobs (~30%) are 150 HU denser at phase 1 (learnable from the CT)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    lung = ((z / 0.8) ** 2 + (y / 0.8) ** 2 + (x / 0.8) ** 2 <= 1.0).astype(np.uint8)
    blobs = gaussian_filter(rng.normal(size=shape), 2.0)
    defect = ((blobs > np.quantile(blobs[lung > 0], 0.7)) & (lung > 0)).astype(np.uint8)
    ct = np.where(lung > 0, -800.0, 40.0) + rng.normal(0, 30, size=(2, *shape))
    ct[1] += 150.0 * defect
    return PreprocessedCase(case, ct.astype(np.float32), np.repeat(lung[None], 2, axis=0), lung,
                            np.ones(shape, np.float32), defect, GRID, {"phase_order": [1, 2]})


def _write_cohort(run_dir: Path) -> None:
    for number, case in enumerate(CASES):
        path = layout.case_file(run_dir, "preprocess", case)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_preprocessed_case(path, _case(case, number), fingerprint="test")


def _job(run_dir: Path, max_epochs: int = 2, **net: object) -> FoldJob:
    train = TrainConfig(models={"unet": {**TINY_NET, **net}}, reference_model="unet", lr=0.01, max_epochs=max_epochs,
                        patience=5, threshold="val_defect_fraction")
    layout.fold_dir(run_dir, "unet", FOLD.index).mkdir(parents=True, exist_ok=True)
    return FoldJob(run_dir, "unet", "unet", "none", FOLD, train, ExecutionConfig(device="cpu"), GroundTruthConfig())


class _Progress:
    """Records the tasks opened and how far each advanced."""

    def __init__(self) -> None:
        self.tasks: dict[str, list[float]] = {}

    @contextmanager
    def task(self, description: str, total: float | None):
        self.tasks[description] = [total, 0]
        record = self.tasks[description]

        class _Task:
            def advance(self, amount: float = 1) -> None:
                record[1] += amount

        yield _Task()


def test_hu_is_clipped_to_the_window_and_scaled_to_minus_one_one() -> None:
    hu = np.array([-3000.0, -1000.0, -250.0, 500.0, 2000.0], np.float32)
    np.testing.assert_allclose(volume.normalise_hu(hu), [-1.0, -1.0, 0.0, 1.0, 1.0], atol=1e-6)
    assert volume.normalise_hu(hu).dtype == np.float32


def test_a_volume_case_crops_around_the_lung_and_marks_only_analysed_voxels() -> None:
    pre = _case("P0", 0, shape=(40, 48, 44))
    case = volume.volume_case(pre, [16, 32, 32])
    lung = np.argwhere(pre.lung_mask_zyx > 0)
    np.testing.assert_array_equal(case.coords_zyx, lung)
    z, y, x = case.local_coords.T
    assert np.isfinite(case.target_zyx).sum() == len(lung)  # finite exactly at the analysed voxels
    np.testing.assert_array_equal(case.target_zyx[z, y, x], pre.defect_zyx[tuple(lung.T)])
    np.testing.assert_array_equal(case.labels, pre.defect_zyx[tuple(lung.T)])
    assert case.image_tzyx.dtype == np.float16 and case.image_tzyx.shape[0] == 2
    assert all(s >= p for s, p in zip(case.target_zyx.shape, [16, 32, 32]))
    start = case.start_zyx
    expected = volume.normalise_hu(pre.ct_tzyx[:, start[0]:start[0] + 4, start[1]:start[1] + 4, start[2]:start[2] + 4])
    np.testing.assert_allclose(case.image_tzyx[:, :4, :4, :4], expected, atol=2e-3)


def test_a_crop_smaller_than_a_patch_is_padded_with_air_and_unscored_voxels() -> None:
    case = volume.volume_case(_case("P0", 0, shape=(10, 12, 12)), [16, 32, 32])
    assert case.target_zyx.shape == (16, 32, 32)
    assert np.all(case.image_tzyx[:, 10:] == volume.AIR) and np.isnan(case.target_zyx[10:]).all()


def test_patch_centres_lie_in_the_lung_and_the_same_seed_gives_the_same_patches() -> None:
    cases = [volume.volume_case(_case(c, k, shape=(40, 48, 44)), [16, 16, 16]) for k, c in enumerate(CASES[:2])]
    patches = volume.LungPatches(cases, [16, 16, 16], n_patches=40, batch_size=16, seed=3)
    draws = patches.draws(0)
    assert len(draws) == 40 and {k for k, _, _ in draws} == {0, 1}
    for k, centre, start in draws:
        assert np.isfinite(cases[k].target_zyx[tuple(centre)])  # an analysed lung voxel
        assert np.all(start <= centre) and np.all(centre < start + 16)  # the patch holds its centre
    again = volume.LungPatches(cases, [16, 16, 16], n_patches=40, batch_size=16, seed=3).draws(0)
    assert all(a[0] == b[0] and np.array_equal(a[2], b[2]) for a, b in zip(draws, again))
    assert any(not np.array_equal(a[2], b[2]) for a, b in zip(draws, patches.draws(1)))
    batches = list(patches)
    assert [x.shape[0] for x, _ in batches] == [16, 16, 8] and len(patches) == 3
    assert batches[0][0].shape == (16, 2, 16, 16, 16) and batches[0][1].shape == (16, 1, 16, 16, 16)
    negative, positive = patches.label_counts()
    assert positive == sum(int(c.labels.sum()) for c in cases)
    assert negative + positive == sum(len(c.labels) for c in cases)


def test_validation_tiles_score_every_analysed_voxel_exactly_once() -> None:
    cases = [volume.volume_case(_case(c, k, shape=(40, 48, 44)), [16, 32, 32]) for k, c in enumerate(CASES[:2])]
    tiles = volume.TilePatches(cases, [16, 32, 32], batch_size=3)
    scored = defects = 0
    for _, y in tiles:
        scored += int(torch.isfinite(y).sum())
        defects += int(torch.nansum(y))
    assert scored == sum(len(c.labels) for c in cases)
    assert defects == sum(int(c.labels.sum()) for c in cases)


def test_the_loss_is_taken_on_analysed_lung_voxels_only() -> None:
    """Changing the network's output outside the analysed lung of a training patch does not change the loss."""
    case = volume.volume_case(_case("P0", 0), [16, 32, 32])
    x, y = next(iter(volume.LungPatches([case], [16, 32, 32], n_patches=2, batch_size=2, seed=0)))
    outside = ~torch.isfinite(y)
    assert outside.any() and (~outside).any()
    logits = torch.randn(y.shape)
    loss = MaskedLoss("bce", 2.0, "mean", torch.device("cpu"))
    changed = torch.where(outside, logits + 100.0 * torch.randn(y.shape), logits)
    assert torch.equal(loss(changed, y), loss(logits, y))
    assert not torch.equal(loss(logits + 1.0, y), loss(logits, y))


def test_a_fold_predicts_each_test_patients_analysed_voxels(tmp_path: Path) -> None:
    _write_cohort(tmp_path)
    progress = _Progress()
    outcome = volume.train_volume_fold(_job(tmp_path, max_epochs=3, patches_per_epoch=16), progress)
    assert progress.tasks == {"unet fold 0 (epochs)": [3, 3]}
    assert [p.case_id for p in outcome.predictions] == ["P3", "P4"]
    aucs = []
    for prediction in outcome.predictions:
        pre = read_preprocessed_case(layout.case_file(tmp_path, "preprocess", prediction.case_id))
        np.testing.assert_array_equal(prediction.coords_zyx, np.argwhere(pre.lung_mask_zyx > 0))
        assert prediction.probability.dtype == np.float32
        assert np.all((prediction.probability >= 0) & (prediction.probability <= 1))
        assert prediction.row == "unet" and prediction.fold == 0 and prediction.grid == GRID
        aucs.append(auc_roc(pre.defect_zyx[tuple(prediction.coords_zyx.T)], prediction.probability))
    assert min(aucs) > 0.5, f"the planted density signal was not learnt (AUCs {aucs})"
    assert outcome.threshold["validation_cases"] == ["P2"] and outcome.threshold["rule"] == "val_defect_fraction"
    record = outcome.record
    assert record["epochs_run"] == 3 and record["device"] == "cpu" and record["patches_per_epoch"] == 16
    assert record["training_seconds"] > 0 and record["inference_seconds"] > 0 and len(record["history"]) == 3

    model, payload = volume.load_volume_model(layout.model_file(tmp_path, "unet", 0))
    assert payload["normalisation"]["hu_window"] == list(volume.HU_WINDOW)
    again = volume.predict_preprocessed_case(model, payload, read_preprocessed_case(
        layout.case_file(tmp_path, "preprocess", "P3")), device="cpu")
    np.testing.assert_allclose(again, outcome.predictions[0].probability, atol=1e-6)


def test_a_longer_training_resumes_from_the_checkpoint_and_equals_a_fresh_one(tmp_path: Path) -> None:
    resumed, fresh = tmp_path / "resumed", tmp_path / "fresh"
    for run_dir in (resumed, fresh):
        _write_cohort(run_dir)
    volume.train_volume_fold(_job(resumed, max_epochs=1), _Progress())
    longer = volume.train_volume_fold(_job(resumed, max_epochs=2), _Progress())
    assert longer.record["resumed_from_epoch"] == 1 and longer.record["epochs_run"] == 2
    straight = volume.train_volume_fold(_job(fresh, max_epochs=2), _Progress())
    assert [h["val_loss"] for h in longer.record["history"]] == [h["val_loss"] for h in straight.record["history"]]
    for a, b in zip(longer.predictions, straight.predictions):
        np.testing.assert_array_equal(a.probability, b.probability)


def test_a_model_file_of_another_family_is_refused(tmp_path: Path) -> None:
    from vent.errors import ArtifactError
    from vent.io.atomic import atomic_path
    from vent.models import build_model

    model = build_model("lstm", 1, 2, hidden=[2])
    path = tmp_path / "model.pt"
    with atomic_path(path) as tmp:  # sealed, as vent writes a model: only its family is wrong
        torch.save({"spec": model.spec, "state_dict": model.state_dict(), "input_kind": "raw"}, tmp)
    with pytest.raises(ArtifactError, match="not a volume network"):
        volume.load_volume_model(path)
