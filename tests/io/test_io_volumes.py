"""Volumes for viewers: written on the grid with their dtype; linked (same bytes) atomically; a missing source named."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from vent.errors import ArtifactError
from vent.io.images import Grid
from vent.io.seals import SEAL_SUFFIX
from vent.io.volumes import link_volume, write_volume

GRID = Grid((5, 4, 3), (2.0, 2.5, 3.0), (10.0, -5.0, 1.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def test_a_volume_keeps_its_values_dtype_and_grid(tmp_path) -> None:
    array = np.arange(60, dtype=np.int16).reshape(GRID.shape_zyx) - 1000
    path = write_volume(tmp_path / "case" / "case_ct.nii.gz", array, GRID)
    image = sitk.ReadImage(str(path))
    assert np.array_equal(sitk.GetArrayFromImage(image), array)
    assert image.GetPixelID() == sitk.sitkInt16
    assert image.GetSpacing() == GRID.spacing_mm_xyz and image.GetOrigin() == GRID.origin_mm_xyz
    # no temporary left
    assert [p.name for p in path.parent.iterdir() if not p.name.endswith(SEAL_SUFFIX)] == ["case_ct.nii.gz"]


def test_a_link_has_the_source_bytes_and_a_missing_source_is_named(tmp_path) -> None:
    source = write_volume(tmp_path / "a.nii.gz", np.ones(GRID.shape_zyx, np.uint8), GRID)
    assert link_volume(source, tmp_path / "out" / "b.nii.gz") in ("linked", "copied")
    assert (tmp_path / "out" / "b.nii.gz").read_bytes() == source.read_bytes()
    link_volume(source, tmp_path / "out" / "b.nii.gz")  # again: replaces, no error
    with pytest.raises(ArtifactError, match="missing.nii.gz is missing"):
        link_volume(tmp_path / "missing.nii.gz", tmp_path / "out" / "c.nii.gz")
