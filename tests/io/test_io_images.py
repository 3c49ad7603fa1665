"""Reading images: a file cut short is refused with its name, whatever the format."""

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
