"""The manifest reader: CSV and YAML cases in any layout, and one error that names the manifest and every problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vent.errors import DataError
from vent.io.images import read_image
from vent.io.manifest import read_manifest, write_manifest_csv
from vent.synth.export import write_dicom_series

HEADER = "case_id,kind,phase,image,mask,modality"


def _files(folder: Path, *names: str) -> None:
    """Empty files under ``folder`` (the reader checks that paths exist; it reads no voxels)."""
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _manifest(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def _p01_files(folder: Path) -> None:
    _files(folder, *[f"P01/ct_{t}0.nii.gz" for t in range(3)], *[f"P01/lung_{t}0.nii.gz" for t in range(3)])
    _files(folder, "P01/ct_avg.nii.gz", "P01/spect.nii.gz", "P01/spect_lung.nii.gz")
    _files(folder, *[f"P02/ct_{t}.nii.gz" for t in range(3)])


CSV = f"""
{HEADER}
P01,phase,3,P01/ct_20.nii.gz,P01/lung_20.nii.gz,spect
P01,phase,1,P01/ct_00.nii.gz,P01/lung_00.nii.gz,spect
P01,average,,P01/ct_avg.nii.gz,,
P01,phase,2,P01/ct_10.nii.gz,P01/lung_10.nii.gz,
P01,refvi,,P01/spect.nii.gz,P01/spect_lung.nii.gz,
P02,phase,5,P02/ct_0.nii.gz,,
P02,phase,6,P02/ct_1.nii.gz,,
P02,phase,7,P02/ct_2.nii.gz,,
"""


def test_csv_cases_in_phase_order_with_paths_beside_the_manifest(tmp_path, monkeypatch) -> None:
    data = tmp_path / "data"
    _p01_files(data)
    manifest = _manifest(data, "cases.csv", CSV)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative paths follow the manifest, not the working folder
    subjects = read_manifest(Path("..", "data", "cases.csv"))
    assert list(subjects) == ["P01", "P02"]
    p01, p02 = subjects["P01"], subjects["P02"]
    assert p01.phase_images == tuple(data / f"P01/ct_{t}0.nii.gz" for t in range(3))  # by the phase column
    assert p01.phase_masks == tuple(data / f"P01/lung_{t}0.nii.gz" for t in range(3))
    assert p01.phase_numbers == (1, 2, 3) and p01.modality == "spect"
    assert (p01.average_image, p01.average_mask) == (data / "P01/ct_avg.nii.gz", None)
    assert (p01.vent_image, p01.vent_mask) == (data / "P01/spect.nii.gz", data / "P01/spect_lung.nii.gz")
    assert p01.source.resolve() == manifest and p01.origin == p01.source
    assert p02.phase_numbers == (5, 6, 7) and p02.phase_masks == () and not p02.has_masks
    assert (p02.average_image, p02.vent_image, p02.vent_mask, p02.modality) == (None, None, None, None)


def test_csv_without_a_kind_column_lists_phases(tmp_path) -> None:
    _files(tmp_path, "a.nii.gz", "b.nii.gz", "c.nii.gz")
    manifest = _manifest(tmp_path, "m.csv", "case_id,phase,image\nP1,2,b.nii.gz\nP1,1,a.nii.gz\nP1,3,c.nii.gz")
    files = read_manifest(manifest)["P1"]
    assert [p.name for p in files.phase_images] == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]


def test_written_csv_reads_back_the_same_subjects_even_with_a_comma_in_a_path(tmp_path) -> None:
    data = tmp_path / "data, 2024"
    _p01_files(data)
    subjects = read_manifest(_manifest(data, "cases.csv", CSV))
    again = read_manifest(write_manifest_csv(tmp_path / "copy.csv", list(subjects.values())))
    for case, files in subjects.items():
        assert again[case].phase_images == files.phase_images and again[case].phase_masks == files.phase_masks
        assert again[case].phase_numbers == files.phase_numbers and again[case].modality == files.modality
        assert (again[case].average_image, again[case].vent_image) == (files.average_image, files.vent_image)


YAML = """
cases:
  - id: P01
    modality: pet
    phases: [P01/ct_00/, P01/ct_10/, P01/ct_20/]
    phase_masks: [P01/lung_00.nii.gz, P01/lung_10.nii.gz, P01/lung_20.nii.gz]
    average_image: P01/ct_avg.nii.gz
    refvi: P01/spect.nii.gz
    refvi_mask: P01/spect_lung.nii.gz
  - id: P02
    phases: [P02/ct_0.nii.gz, P02/ct_1.nii.gz, P02/ct_2.nii.gz]
"""


def test_yaml_cases_with_dicom_folders_in_breathing_order(tmp_path) -> None:
    _p01_files(tmp_path)
    for t in range(3):
        (tmp_path / f"P01/ct_{t}0").mkdir()
    subjects = read_manifest(_manifest(tmp_path, "cases.yaml", YAML))
    p01, p02 = subjects["P01"], subjects["P02"]
    assert p01.phase_images == tuple(tmp_path / f"P01/ct_{t}0" for t in range(3))
    assert p01.phase_masks == tuple(tmp_path / f"P01/lung_{t}0.nii.gz" for t in range(3))
    assert p01.phase_numbers == (1, 2, 3) and p01.modality == "pet" and p01.average_mask is None
    assert p01.vent_mask == tmp_path / "P01/spect_lung.nii.gz"
    assert p02.phase_masks == () and p02.vent_image is None and p02.modality is None


CSV_ERRORS = {
    "missing_column": ("case_id,kind,image\nP1,phase,a.nii.gz", r"missing column\(s\) phase"),
    "unknown_column": (f"{HEADER},maks\nP1,phase,1,a.nii.gz,,,", r"unknown column\(s\) maks"),
    "unknown_kind": (f"{HEADER}\nP1,averge,,a.nii.gz,,", r"row 2: kind 'averge' is not one of phase, average"),
    "phase_not_a_number": (f"{HEADER}\nP1,phase,1.5,a.nii.gz,,", r"row 2: phase '1\.5' of case P1 is not a whole"),
    "row_after_a_blank_line": (f"{HEADER}\nP1,phase,1,a.nii.gz,,\n\nP1,phase,x,b.nii.gz,,", r"row 4: phase 'x'"),
    "duplicate_phase": (
        f"{HEADER}\nP1,phase,1,a.nii.gz,,\nP1,phase,2,b.nii.gz,,\nP1,phase,2,c.nii.gz,,",
        r"case P1: phase number\(s\) \[2\] listed twice",
    ),
    "masks_for_some_phases": (
        f"{HEADER}\nP1,phase,1,a.nii.gz,a.nii.gz,\nP1,phase,2,b.nii.gz,,\nP1,phase,3,c.nii.gz,c.nii.gz,",
        r"case P1: 2 phase mask\(s\) for 3 phases; give a mask for every phase or for none",
    ),
    "path_does_not_exist": (
        f"{HEADER}\nP1,phase,1,a.nii.gz,,\nP1,phase,2,gone.nii.gz,,",
        r"gone\.nii\.gz does not exist",
    ),
    "unquoted_comma": (f"{HEADER}\nP1,phase,1,a.nii.gz,,pet,extra", r"row 2: 1 value\(s\) more than the 6 columns"),
    "case_id_with_a_slash": (f"{HEADER}\nP/1,phase,1,a.nii.gz,,", r"case id 'P/1' names the case's output files"),
}


@pytest.mark.parametrize("text, problem", list(CSV_ERRORS.values()), ids=list(CSV_ERRORS))
def test_csv_problems_name_the_manifest_and_the_problem(tmp_path, text, problem) -> None:
    _files(tmp_path, "a.nii.gz", "b.nii.gz", "c.nii.gz")
    manifest = _manifest(tmp_path, "cases.csv", text)
    with pytest.raises(DataError, match=problem) as error:
        read_manifest(manifest)
    assert f"manifest {manifest}" in str(error.value)


def test_every_problem_is_reported_at_once(tmp_path) -> None:
    _files(tmp_path, "a.nii.gz")
    manifest = _manifest(tmp_path, "cases.csv", f"{HEADER}\nP1,phase,1,a.nii.gz,,\nP1,phase,2,gone.nii.gz,,\nP1,x,,a")
    with pytest.raises(DataError, match=r"has 2 problem\(s\):\n  - row 4: kind 'x'.*\n  - .*gone\.nii\.gz does not"):
        read_manifest(manifest)


YAML_ERRORS = {
    "duplicate_case_id": (
        "cases:\n- {id: P1, phases: [a.nii.gz]}\n- {id: P1, phases: [b.nii.gz]}",
        r"case #2: case id 'P1' is listed twice",
    ),
    "repeated_key": (
        "cases:\n- id: P1\n  phases: [a.nii.gz]\n  phases: [b.nii.gz]",
        r"is not valid YAML: .*key 'phases' is given twice \(lines 3 and 4\)",
    ),
    "unknown_case_key": (
        "cases:\n- {id: P1, phases: [a.nii.gz], mask: a.nii.gz}",
        r"case #1 \(P1\): unknown key\(s\) mask",
    ),
    "unknown_top_level_key": (
        "cases:\n- {id: P1, phases: [a.nii.gz]}\ncohort: x",
        r"unknown top-level key\(s\) cohort",
    ),
    "phases_not_a_list": ("cases:\n- {id: P1, phases: a.nii.gz}", r"case P1: phases must be a list of paths"),
    "no_cases_list": ("case:\n- {id: P1}", r"expected a top-level 'cases:' list"),
}


@pytest.mark.parametrize("text, problem", list(YAML_ERRORS.values()), ids=list(YAML_ERRORS))
def test_yaml_problems_name_the_manifest_and_the_problem(tmp_path, text, problem) -> None:
    _files(tmp_path, "a.nii.gz", "b.nii.gz")
    manifest = _manifest(tmp_path, "cases.yaml", text)
    with pytest.raises(DataError, match=problem) as error:
        read_manifest(manifest)
    assert f"manifest {manifest}" in str(error.value)


def test_a_missing_manifest_or_another_suffix_is_named(tmp_path) -> None:
    with pytest.raises(DataError, match=r"manifest .*absent\.csv does not exist; set data\.manifest"):
        read_manifest(tmp_path / "absent.csv")
    with pytest.raises(DataError, match=r"cases\.txt: use a \.csv or \.yaml file"):
        read_manifest(_manifest(tmp_path, "cases.txt", HEADER))


def test_a_phase_folder_with_two_dicom_series_lists_both_when_read(tmp_path) -> None:
    """The manifest only checks that the folder exists; reading it (``vent validate``, preprocessing) names both
    series, so the user can split them into one folder each."""
    image = sitk.GetImageFromArray(np.full((4, 5, 6), -800, np.int16))
    mixed = tmp_path / "P1" / "ct_00"
    mixed.mkdir(parents=True)
    for name in ("inhale", "exhale"):
        for path in write_dicom_series(image, tmp_path / name, "P1", name).iterdir():
            shutil.move(path, mixed / f"{name}_{path.name}")
    _files(tmp_path, "P1/ct_10.nii.gz", "P1/ct_20.nii.gz")
    manifest = _manifest(
        tmp_path, "cases.yaml", "cases:\n- {id: P1, phases: [P1/ct_00, P1/ct_10.nii.gz, P1/ct_20.nii.gz]}"
    )
    files = read_manifest(manifest)["P1"]
    with pytest.raises(DataError, match=r"ct_00 holds 2 DICOM series .*'inhale' \(4 files\).*'exhale' \(4 files\)"):
        read_image(files.phase_images[0], "phase image")
