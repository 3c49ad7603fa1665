"""``vent features`` (write_feature_maps and the Typer command): success and failure."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from vent.cli import app
from vent.errors import DataError
from vent.radiomics import FEATURE_IDS, FEATURES, FilterSettings, compute_voxel_features, discretise
from vent.radiomics.maps import write_feature_maps


@pytest.fixture()
def image_and_mask(tmp_path):
    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 50.0, size=(8, 9, 10))
    mask = np.zeros(image.shape, np.uint8)
    mask[2:6, 2:7, 2:8] = 1
    image_path, mask_path = tmp_path / "image.nii.gz", tmp_path / "mask.nii.gz"
    for array, path in ((image, image_path), (mask, mask_path)):
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing((2.0, 2.0, 2.0))
        sitk.WriteImage(itk, str(path))
    return image, mask.astype(bool), image_path, mask_path


def test_write_feature_maps_h5_and_nifti(image_and_mask, tmp_path):
    image, mask, image_path, mask_path = image_and_mask
    ids = ["intensity_mean", "glcm_joint_entropy", "glrlm_run_entropy"]
    out = write_feature_maps(
        image_path,
        mask_path,
        tmp_path / "maps.h5",
        kernel_mm=6.0,
        bin_count=8,
        feature_ids=ids,
        nifti_dir=tmp_path / "nii",
        backend="numba",
    )
    grey, n_grey = discretise(image, mask, bin_count=8)
    expected = compute_voxel_features(
        image, grey, mask, np.argwhere(mask), n_grey, FilterSettings(kernel_voxels=3, backend="numba"), ids
    )
    with h5py.File(out) as handle:
        assert set(handle["maps"]) == set(ids)
        for col, fid in enumerate(ids):
            volume = handle["maps"][fid][()]
            assert volume.dtype == np.float32 and volume.shape == image.shape
            assert np.isnan(volume[~mask]).all()
            np.testing.assert_array_equal(volume[mask], expected[:, col])
            assert handle["maps"][fid].attrs["ibsi_id"] == next(f.ibsi_id for f in FEATURES if f.id == fid)
    nifti = sitk.ReadImage(str(tmp_path / "nii" / "glcm_joint_entropy.nii.gz"))
    assert nifti.GetSpacing() == (2.0, 2.0, 2.0)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_roi_csv(image_and_mask, tmp_path):
    _, _, image_path, mask_path = image_and_mask
    out = write_feature_maps(image_path, mask_path, tmp_path / "roi.csv", roi=True)
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["feature_id"] for r in rows] == list(FEATURE_IDS)
    assert rows[0]["ibsi_id"] == "Q4LE" and np.isfinite(float(rows[0]["value"]))


def test_cli_success_and_failure(image_and_mask, tmp_path):
    _, _, image_path, mask_path = image_and_mask
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "features",
            str(image_path),
            str(mask_path),
            "-o",
            str(tmp_path / "f.h5"),
            "--kernel-mm",
            "6",
            "--features",
            "intensity_mean,glcm_contrast",
            "--backend",
            "numba",
        ],
    )
    assert ok.exit_code == 0, ok.output
    missing = runner.invoke(
        app, ["features", str(tmp_path / "nope.nii.gz"), str(mask_path), "-o", str(tmp_path / "g.h5")]
    )
    assert missing.exit_code == DataError.exit_code and "does not exist" in missing.output
    bad = runner.invoke(
        app, ["features", str(image_path), str(mask_path), "-o", str(tmp_path / "g.h5"), "--features", "glcm_x"]
    )
    assert bad.exit_code == 2 and "Unknown feature id" in bad.output
