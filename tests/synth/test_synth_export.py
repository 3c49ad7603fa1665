"""One synthetic cohort written three ways (VAMPIRE layout, NIfTI + manifest, DICOM series + manifest) preprocesses to
the same case; a DICOM series keeps its grid (rotated, flipped or left-handed) and carries the CT tags."""

from __future__ import annotations

import locale
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vent.config import config_from_dict
from vent.errors import ConfigError, DataError
from vent.io.artifacts import PreprocessedCase
from vent.io.images import read_image
from vent.stages.preprocess import check_cohort, cohort_subjects, preprocess_subject
from vent.synth import write_synthetic_cohort
from vent.synth.export import export_cohort, write_dicom_series

LAYOUTS = {"nifti_csv": ("nifti", "csv"), "nifti_yaml": ("nifti", "yaml"), "dicom_csv": ("dicom", "csv")}
PATH_ATTRS = {"phase_files", "source_folder", "modality"}
"""Attributes that name where the files were (or the modality, which only a manifest records): they differ."""

CT_ATOL_HU = 1e-3
"""DICOM stores positions, spacings and cosines as decimal strings of at most 16 characters, so the DICOM CT's grid
sits up to ~1e-11 mm off the MetaImage one; linear resampling turns an offset dx into at most |grad HU| * dx, far
below 1e-6 HU for CT gradients under 1000 HU/mm. 1e-3 HU leaves room for float32 rounding (1 ulp at 1000 HU is
6e-5) and is still a thousandth of DICOM's 1 HU storage step. Masks and defects are thresholded: they must be equal."""

GRID_ATOL_MM = 1e-3


def _snap_inputs(root: Path) -> None:
    """Make the VAMPIRE cohort's values representable in every layout, so identical inputs go in.

    CTs are rounded to integer HU (DICOM stores integers; the synthetic CTs are int16 already, so this changes
    nothing unless the generator does), and origins and spacings are rounded to float32 (NIfTI stores its geometry
    as float32). Without the latter, a NIfTI mask beside a DICOM CT sits up to ~1e-5 mm off the CT's grid; the
    mask resampling (linear, then >= 0.5) meets exact 0.5 ties wherever a 2 mm plane falls midway between two 5 mm
    slices, and that offset flips them (about 200 of a case's phase-mask voxels): a test of layouts, not of ties.
    """
    for path in sorted(root.glob("Subject_*/[CG]T/*.mha")):
        image = sitk.ReadImage(str(path))
        if path.name.startswith(("PhaseImage", "AverageImage")):
            rounded = sitk.GetImageFromArray(np.rint(sitk.GetArrayFromImage(image)).astype(np.int16))
            rounded.CopyInformation(image)
            image = rounded
        image.SetOrigin([float(np.float32(v)) for v in image.GetOrigin()])
        image.SetSpacing([float(np.float32(v)) for v in image.GetSpacing()])
        sitk.WriteImage(image, str(path), useCompression=True)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    """``{layout: data.root or data.manifest}``: a 2-case tiny PET cohort and its three exports."""
    base = tmp_path_factory.mktemp("layouts")
    vampire = base / "vampire"
    write_synthetic_cohort(vampire, n_cases=2, modality="pet", size="tiny", seed=0)
    _snap_inputs(vampire)
    exported = {
        name: export_cohort(vampire, base / name, layout, manifest, modality="pet")
        for name, (layout, manifest) in LAYOUTS.items()
    }
    return {"vampire": vampire, **exported}


def _config(source: Path, tmp_path: Path):
    data = {"root": str(source)} if source.is_dir() else {"manifest": str(source)}
    return config_from_dict({"run_dir": str(tmp_path / "run"), "data": data}, tmp_path)


@pytest.fixture(scope="module")
def preprocessed(cohorts, tmp_path_factory) -> dict[str, dict[str, PreprocessedCase]]:
    """``{layout: {case: PreprocessedCase}}`` through ``cohort_subjects`` and ``preprocess_subject``."""
    out = {}
    for name, source in cohorts.items():
        config = _config(source, tmp_path_factory.mktemp(name))
        out[name] = {case: preprocess_subject(files, config) for case, files in cohort_subjects(config).items()}
    return out


def test_every_layout_lists_the_same_cases_and_phases(cohorts, tmp_path) -> None:
    reference = cohort_subjects(_config(cohorts["vampire"], tmp_path))
    for name in LAYOUTS:
        subjects = cohort_subjects(_config(cohorts[name], tmp_path))
        assert list(subjects) == list(reference) == ["Subject_01", "Subject_02"]
        for case, files in subjects.items():
            assert files.phase_numbers == reference[case].phase_numbers == (1, 2, 3, 4, 5)
            assert files.has_masks and files.vent_mask is not None and files.average_mask is not None
            assert files.modality == "pet" and files.source == cohorts[name]
            assert all(p.is_dir() == name.startswith("dicom") for p in [*files.phase_images, files.average_image])
            assert not any(p.is_relative_to(cohorts["vampire"]) for p in files.all_files())
        assert check_cohort(subjects) == check_cohort(reference) == []  # headers, one grid, no duplicates


def _without_paths(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if k not in PATH_ATTRS}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_preprocesses_to_the_same_case(preprocessed, name) -> None:
    assert list(preprocessed[name]) == list(preprocessed["vampire"])
    for case, expected in preprocessed["vampire"].items():
        got = preprocessed[name][case]
        np.testing.assert_array_equal(got.phase_masks_tzyx, expected.phase_masks_tzyx)
        np.testing.assert_array_equal(got.lung_mask_zyx, expected.lung_mask_zyx)
        np.testing.assert_array_equal(got.defect_zyx, expected.defect_zyx)
        np.testing.assert_allclose(got.ct_tzyx, expected.ct_tzyx, rtol=0, atol=CT_ATOL_HU)
        np.testing.assert_allclose(got.refvi_zyx, expected.refvi_zyx, rtol=1e-5, atol=1e-4)  # same grid, same file
        assert got.grid.size_xyz == expected.grid.size_xyz
        for field in ("spacing_mm_xyz", "origin_mm_xyz", "direction"):
            np.testing.assert_allclose(getattr(got.grid, field), getattr(expected.grid, field), atol=GRID_ATOL_MM)
        for key in ("phase_order", "inhale_phase", "exhale_phase", "n_lung_voxels", "crop_start_zyx"):
            assert got.attrs[key] == expected.attrs[key], key
        assert got.attrs["modality"] == "pet" and expected.attrs["modality"] is None
        got_attrs, expected_attrs = _without_paths(got.attrs), _without_paths(expected.attrs)
        assert set(got_attrs) == set(expected_attrs)
        for key, value in expected_attrs.items():  # thresholds, volumes, source spacing: equal up to the grid's offset
            assert got_attrs[key] == (pytest.approx(value, rel=1e-6, abs=1e-9) if _numeric(value) else value), key


def _numeric(value) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _tags(path: Path) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {key: reader.GetMetaData(key).strip() for key in reader.GetMetaDataKeys()}


def test_dicom_series_carry_ct_tags_and_one_uid_per_series(cohorts) -> None:
    case = cohorts["dicom_csv"].parent / "Subject_01"
    series = [case / f"ct_phase_{i:02d}" for i in range(5)] + [case / "ct_average"]
    depth = sitk.ReadImage(str(cohorts["vampire"] / "Subject_01" / "CT" / "PhaseImage_01.mha")).GetDepth()
    uids, studies, frames = set(), set(), set()
    for folder in series:
        slices = sorted(folder.glob("*.dcm"))
        assert len(slices) == depth
        tags = [_tags(path) for path in (slices[0], slices[-1])]
        assert tags[0]["0020|000e"] == tags[1]["0020|000e"] and tags[0]["0008|0018"] != tags[1]["0008|0018"]
        first = tags[0]
        assert (first["0008|0060"], first["0008|0016"]) == ("CT", "1.2.840.10008.5.1.4.1.1.2")
        assert (first["0028|0100"], first["0028|0103"]) == ("16", "1")  # 16 bits allocated, signed
        assert (float(first["0028|1053"]), float(first["0028|1052"])) == (1.0, -1024.0)
        assert first["0010|0020"] == "Subject_01" and float(first["0018|0050"]) == pytest.approx(5.0)
        uids.add(first["0020|000e"])
        studies.add(first["0020|000d"])
        frames.add(first["0020|0052"])
    assert len(uids) == len(series) and len(studies) == 1 and len(frames) == 1


def _volume(direction: tuple[float, ...]) -> sitk.Image:
    values = np.random.default_rng(1).integers(-1000, 1500, size=(5, 7, 9)).astype(np.int16)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.8, 0.9, 2.5))  # x != y, so swapped PixelSpacing entries would show
    image.SetOrigin((-29.036389290431273, 18.565619002481, -232.66522719345454))
    image.SetDirection(direction)
    return image


def _rotation(degrees_z: float, degrees_x: float) -> tuple[float, ...]:
    cz, sz = np.cos(np.radians(degrees_z)), np.sin(np.radians(degrees_z))
    cx, sx = np.cos(np.radians(degrees_x)), np.sin(np.radians(degrees_x))
    about_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return tuple(float(v) for v in (about_z @ about_x).ravel())


@pytest.mark.parametrize(
    "direction",
    [(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0), _rotation(30.0, -20.0)],
    ids=["flipped_x_and_y", "oblique"],
)
def test_a_dicom_series_reads_back_on_the_grid_it_was_written_on(tmp_path, direction) -> None:
    image = _volume(direction)
    before = locale.setlocale(locale.LC_ALL)
    folder = write_dicom_series(image, tmp_path / "series", "P01", "phase_00")
    assert locale.setlocale(locale.LC_ALL) == before  # GDCM's "C" locale is put back
    read = read_image(folder, "phase image")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-9)  # 16-character decimal strings
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-9)
    pixel_spacing = _tags(sorted(folder.glob("*.dcm"))[0])["0028|0030"].split("\\")
    assert [float(v) for v in pixel_spacing] == pytest.approx([0.9, 0.8])  # row spacing (y), column spacing (x)


def test_a_left_handed_grid_is_written_with_its_slices_reversed(tmp_path) -> None:
    """DICOM's slice normal is row x column, so a left-handed grid cannot be stored as it is: the same voxels at the
    same physical points come back with the third direction column negated."""
    image = _volume((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    read = read_image(write_dicom_series(image, tmp_path / "series", "P01", "phase_00"), "phase image")
    np.testing.assert_allclose(read.GetDirection(), (-1, 0, 0, 0, 1, 0, 0, 0, -1), atol=1e-9)
    back = sitk.Resample(read, image, sitk.Transform(), sitk.sitkNearestNeighbor, -2000)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_dicom_ct_values_are_rounded_and_bounded(tmp_path) -> None:
    image = sitk.Cast(_volume((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)), sitk.sitkFloat32) + 0.4
    read = read_image(write_dicom_series(image, tmp_path / "series", "P01", "ct"), "CT")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), np.rint(sitk.GetArrayFromImage(image)))
    with pytest.raises(DataError, match=r"hot: HU range .* does not fit int16"):
        write_dicom_series(image * 0 + 40000, tmp_path / "hot", "P01", "hot")
    with pytest.raises(ConfigError, match="layout must be one of nifti, dicom"):
        export_cohort(tmp_path, tmp_path / "out", "nrrd")
