"""Reading images: a file cut short is refused with its name, whatever the format."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vent.errors import DataError
from vent.io.images import read_ct, read_image, read_lung_mask


def _write(path, array, compress=False):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 3.0))
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


@pytest.mark.parametrize("name", ["ct.mha", "ct.nii", "ct.nii.gz", "ct.nrrd"])
def test_truncated_file_is_named(tmp_path, name):
    path = _write(tmp_path / name, np.full((8, 16, 16), -800, np.int16))
    assert read_image(path).GetSize() == (16, 16, 8)
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(DataError, match=rf"{name}.*(truncated|could not be read)") as error:
        read_image(path, "phase image")
    assert "again" in str(error.value)


def test_read_ct_and_mask_apply_the_checks(tmp_path):
    lung = np.zeros((8, 16, 16), np.uint8)
    lung[2:6, 4:12, 4:12] = 1
    mask_path = _write(tmp_path / "mask.mha", lung)
    mask, warning = read_lung_mask(mask_path)
    assert warning is None
    ct = np.where(lung > 0, -850, 40).astype(np.int16)
    read_ct(_write(tmp_path / "ct.mha", ct), lung_mask=mask)
    with pytest.raises(DataError, match="hot.mha"):
        read_ct(_write(tmp_path / "hot.mha", np.full_like(ct, 5000)), lung_mask=mask)
    with pytest.raises(DataError, match="labels.mha"):
        read_lung_mask(_write(tmp_path / "labels.mha", (np.arange(lung.size).reshape(lung.shape) % 6).astype(np.uint8)))


# --- DICOM series folders -------------------------------------------------------------------------------------------


def _write_dicom_series(image: sitk.Image, folder: Path, series_uid: str, description: str) -> None:
    """Write ``image`` (int16 HU) as a CT DICOM series, one file per slice, with the position and orientation tags
    that place it in space (as a scanner export would)."""
    import locale

    folder.mkdir(parents=True, exist_ok=True)
    saved = locale.setlocale(locale.LC_ALL)  # GDCM's writer switches the process to the "C" locale
    try:
        _write_slices(image, folder, series_uid, description)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(image: sitk.Image, folder: Path, series_uid: str, description: str) -> None:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6],
                                                  direction[1], direction[4], direction[7]))
    for z in range(image.GetDepth()):
        piece = image[:, :, z]
        for tag, value in (
            ("0008|0060", "CT"), ("0020|000e", series_uid), ("0008|103e", description),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"), ("0010|0020", "PHANTOM"),
            ("0020|0037", orientation), ("0020|0013", str(z + 1)),
            ("0020|0032", "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, z)))),
            ("0018|0050", f"{image.GetSpacing()[2]:.6f}"), ("0028|1052", "0"), ("0028|1053", "1"),
            ("0008|0018", f"{series_uid}.{z + 1}"),
        ):
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{description}_{z:03d}.dcm"))
        writer.Execute(piece)


def _ct_volume() -> sitk.Image:
    values = np.random.default_rng(0).integers(-1000, 400, size=(6, 10, 12)).astype(np.int16)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-50.0, 20.0, 100.0))
    return image


def test_a_dicom_series_folder_reads_as_the_volume_it_holds(tmp_path) -> None:
    import locale

    image = _ct_volume()
    _write_dicom_series(image, tmp_path / "phase_01", "1.2.826.0.1.3680043.2.1125.2", "phase1")
    before = locale.setlocale(locale.LC_ALL)
    read = read_image(tmp_path / "phase_01", "phase image")
    assert locale.setlocale(locale.LC_ALL) == before  # GDCM's "C" locale does not leak into the process
    assert np.array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    assert np.allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-4)  # DICOM stores decimal strings
    assert np.allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)
    assert np.allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)


def test_a_folder_with_two_series_is_refused_listing_them(tmp_path) -> None:
    image = _ct_volume()
    _write_dicom_series(image, tmp_path / "mixed", "1.2.826.0.1.3680043.2.1125.3", "inhale")
    _write_dicom_series(image, tmp_path / "mixed", "1.2.826.0.1.3680043.2.1125.4", "exhale")
    with pytest.raises(DataError, match=r"holds 2 DICOM series .*'inhale' \(6 files\).*'exhale' \(6 files\)"):
        read_image(tmp_path / "mixed", "phase image")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder without a DICOM series"):
        read_image(tmp_path / "empty", "phase image")
