"""The VAMPIRE layout reader: subject discovery and clear errors naming the file at fault."""

import pytest
import SimpleITK as sitk

from vent.errors import ConfigError, DataError
from vent.io.vampire import check_subject_headers, discover_subjects, find_subject_files


def test_discovery_glob_and_exclude(phantom_cohort):
    assert discover_subjects(phantom_cohort, None, {}) == ["Subject_01", "Subject_02", "Subject_03"]
    assert discover_subjects(phantom_cohort, "Subject_0[2]", {}) == ["Subject_02"]
    assert discover_subjects(phantom_cohort, None, {"Subject_01": "motion"}) == ["Subject_02", "Subject_03"]
    with pytest.raises(ConfigError, match="Subject_09"):
        discover_subjects(phantom_cohort, ["Subject_09"], {})
    with pytest.raises(ConfigError, match="exclude"):
        discover_subjects(phantom_cohort, None, {"Subject_7": "typo"})
    with pytest.raises(DataError, match="does not exist"):
        discover_subjects(phantom_cohort / "nope", None, {})


def test_files_in_phase_order(phantom_cohort):
    files = find_subject_files(phantom_cohort, "Subject_01")
    assert [p.name for p in files.phase_images] == ["PhaseImage_01.mha", "PhaseImage_02.mha", "PhaseImage_03.mha"]
    assert files.vent_image.name == "VentImage.mha" and files.average_mask.name == "AverageMask.mha"
    assert check_subject_headers(files, expected_phases=3) == []


def test_missing_phase_file_is_named(phantom_cohort):
    missing = phantom_cohort / "Subject_01" / "CT" / "PhaseImage_02.mha"
    missing.unlink()
    with pytest.raises(DataError, match="PhaseImage_02.mha"):
        find_subject_files(phantom_cohort, "Subject_01")


def test_missing_mask_and_refvi_are_named(phantom_cohort):
    (phantom_cohort / "Subject_01" / "CT" / "PhaseMask_03.mha").unlink()
    with pytest.raises(DataError, match="PhaseMask_03"):
        find_subject_files(phantom_cohort, "Subject_01")
    (phantom_cohort / "Subject_02" / "GT" / "VentImage.mha").unlink()
    with pytest.raises(DataError, match="VentImage"):
        find_subject_files(phantom_cohort, "Subject_02")


def test_geometry_mismatch_names_both_files(phantom_cohort):
    path = phantom_cohort / "Subject_01" / "CT" / "PhaseMask_02.mha"
    image = sitk.ReadImage(str(path))
    image.SetSpacing((1.0, 1.5, 3.0))
    sitk.WriteImage(image, str(path))
    files = find_subject_files(phantom_cohort, "Subject_01")
    with pytest.raises(DataError, match=r"PhaseMask_02.mha does not share the geometry of .*PhaseImage_01.mha"):
        check_subject_headers(files)


def test_phase_count_mismatch(phantom_cohort):
    files = find_subject_files(phantom_cohort, "Subject_01")
    with pytest.raises(DataError, match="3 phases but other subjects have 5"):
        check_subject_headers(files, expected_phases=5)


def test_truncated_file_is_named(phantom_cohort):
    path = phantom_cohort / "Subject_01" / "CT" / "PhaseImage_01.mha"
    path.write_bytes(path.read_bytes()[:200])
    files = find_subject_files(phantom_cohort, "Subject_01")
    with pytest.raises(DataError, match="PhaseImage_01.mha"):
        check_subject_headers(files)
