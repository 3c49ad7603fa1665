"""The VAMPIRE layout reader: subject discovery and clear errors naming the file at fault."""

import shutil

import pytest
import SimpleITK as sitk

from vent.errors import ConfigError, DataError
from vent.io.hashing import file_sha256
from vent.io.vampire import (
    MIN_PHASES,
    check_duplicate_subjects,
    check_subject_headers,
    discover_subjects,
    find_subject_files,
)
from vent.stages.preprocess import check_cohort


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
    files = find_subject_files(phantom_cohort, "Subject_02")  # a case without a RefVI is found (vent predict) ...
    assert files.vent_image is None
    with pytest.raises(DataError, match="VentImage"):  # ... but training refuses it, naming the expected file
        check_cohort({"Subject_02": files})
    assert check_cohort({"Subject_02": files}, require_reference=False) == []


def test_a_subject_without_any_mask_is_found_for_segmentation(phantom_cohort):
    for path in (phantom_cohort / "Subject_01" / "CT").glob("PhaseMask_*.mha"):
        path.unlink()
    files = find_subject_files(phantom_cohort, "Subject_01")
    assert not files.has_masks and len(files.phase_images) == 3
    assert any("segmented" in w for w in check_subject_headers(files, expected_phases=3))


def test_every_header_problem_is_listed_in_one_pass(phantom_cohort):
    """Two bad files in one subject: both are named in one error, not only the first."""
    for name, spacing in (("PhaseMask_02.mha", (1.0, 1.5, 3.0)), ("PhaseImage_03.mha", (2.0, 2.0, 9.0))):
        path = phantom_cohort / "Subject_01" / "CT" / name
        image = sitk.ReadImage(str(path))
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(path))
    files = find_subject_files(phantom_cohort, "Subject_01")
    with pytest.raises(DataError, match=r"2 problems:(.|\n)*PhaseImage_03.mha(.|\n)*PhaseMask_02.mha"):
        check_subject_headers(files)


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


def test_flipped_direction_is_named(phantom_cohort):
    path = phantom_cohort / "Subject_01" / "CT" / "PhaseImage_03.mha"
    image = sitk.ReadImage(str(path))
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(path))
    files = find_subject_files(phantom_cohort, "Subject_01")
    with pytest.raises(DataError, match=r"PhaseImage_03.mha does not share the geometry .*direction \(-1.0") as error:
        check_subject_headers(files)
    assert "export the file again" in str(error.value)


@pytest.mark.parametrize("n_phases", [1, 2])
def test_fewer_than_three_phases_is_an_error(tmp_path, n_phases):
    from phantoms import write_phantom_subject

    write_phantom_subject(tmp_path / "Subject_01", n_phases=n_phases)
    files = find_subject_files(tmp_path, "Subject_01")
    with pytest.raises(DataError, match=f"holds {n_phases} phase image.*at least {MIN_PHASES}"):
        check_subject_headers(files)


def _cohort(root):
    return {case: find_subject_files(root, case) for case in discover_subjects(root, None, {})}


def test_distinct_subjects_are_not_duplicates(phantom_cohort):
    check_duplicate_subjects(_cohort(phantom_cohort))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda root: (root / "Subject_04").symlink_to(root / "Subject_01"), "resolve to the same folder"),
        (lambda root: shutil.copytree(root / "Subject_01", root / "subject_01"), "differ only by case"),
        (lambda root: shutil.copytree(root / "Subject_01", root / "Subject_04"), "identical first phase images"),
    ],
)
def test_duplicate_subjects_name_both_folders(phantom_cohort, make, reason):
    make(phantom_cohort)
    hashed = []

    def sha256(path):
        hashed.append(path)
        return file_sha256(path)

    with pytest.raises(DataError, match=reason) as error:
        check_duplicate_subjects(_cohort(phantom_cohort), sha256)
    message = str(error.value)
    assert "Subject_01 and " in message and "data.exclude" in message
    assert ("Subject_04" in message) or ("subject_01" in message)
    assert all(p.name == "PhaseImage_01.mha" for p in hashed)  # only the first phase is hashed
