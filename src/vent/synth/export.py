"""Rewrite a VAMPIRE-layout cohort (e.g. a synthetic one) in another folder layout, listed in a manifest.

Real cohorts rarely come in the VAMPIRE layout: scanners export DICOM series, and research archives hold NIfTI files
under their own names. ``export_cohort`` writes the same voxels in two such layouts, with a manifest
(``vent.io.manifest``) that lists them, so tests (and demos) can check that every layout reads to the same
preprocessing output. Per case folder ``<out_dir>/<case>/`` (phase files numbered from 00 in breathing order; the
manifest keeps the VAMPIRE phase numbers)::

    layout "nifti"                                   layout "dicom"
    ct_phase_00.nii.gz ... ct_phase_NN.nii.gz        ct_phase_00/ ... ct_phase_NN/   DICOM CT series folders
    lung_phase_00.nii.gz ...                         lung_phase_00.nii.gz ...        (masks stay NIfTI)
    ct_average.nii.gz, lung_average.nii.gz           ct_average/, lung_average.nii.gz
    refvi.nii.gz, refvi_lung.nii.gz                  refvi.nii.gz, refvi_lung.nii.gz

and ``<out_dir>/manifest.csv`` (``write_manifest_csv``) or ``<out_dir>/manifest.yaml`` (the reader's ``cases:``
keys), with paths relative to ``out_dir``, so the exported cohort can be moved as one folder.

A DICOM series holds one file per slice (``slice_000.dcm`` ...): CT Image Storage, modality CT, int16 stored values
with RescaleSlope 1 and RescaleIntercept -1024 (as scanners write them; readers get HU back), ImagePositionPatient
per slice, ImageOrientationPatient from the first two columns of the direction matrix, PixelSpacing,
SliceThickness, one SeriesInstanceUID per series and one StudyInstanceUID and FrameOfReferenceUID per case. The UIDs
are derived from the case id and the series name (``2.25.<uuid5>``), so exporting again writes the same files.
DICOM holds integer HU only: CT values are rounded (the synthetic CTs are int16 already, so nothing changes there),
and positions, spacings and cosines are decimal strings of at most 16 characters (about 1e-12 mm here).
"""

from __future__ import annotations

import locale
import shutil
import uuid
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk
import yaml

from vent.errors import ConfigError, DataError
from vent.io.atomic import atomic_path, write_text
from vent.io.manifest import write_manifest_csv
from vent.io.vampire import SubjectFiles, discover_subjects, find_subject_files

__all__ = ["LAYOUTS", "export_cohort", "write_dicom_series"]

LAYOUTS = ("nifti", "dicom")
_MANIFESTS = ("csv", "yaml")
_UID_NAMESPACE = uuid.UUID("6f1c1d2e-3b8a-5c4e-9d7f-0a1b2c3d4e5f")
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_RESCALE_INTERCEPT = -1024
_INT16 = np.iinfo(np.int16)


def export_cohort(
    vampire_root: Path,
    out_dir: Path,
    layout: Literal["nifti", "dicom"],
    manifest: Literal["csv", "yaml"] = "csv",
    modality: str | None = None,
) -> Path:
    """Write every subject of the VAMPIRE-layout cohort ``vampire_root`` into ``out_dir`` in ``layout``.

    Args:
        vampire_root: a study folder in the VAMPIRE layout (``Subject_XX/CT``, ``Subject_XX/GT``).
        out_dir: where the case folders and the manifest go (created; files there are overwritten).
        layout: ``"nifti"`` (every image a ``.nii.gz``) or ``"dicom"`` (each phase CT and the average CT a DICOM
            series folder; masks and RefVI ``.nii.gz``); file names in the module docstring.
        manifest: ``"csv"`` (``manifest.csv``) or ``"yaml"`` (``manifest.yaml``).
        modality: the RefVI's modality written to the manifest (``"pet"``, ``"spect"``); the VAMPIRE layout does
            not record it, so None leaves it out.

    Returns:
        The manifest's path (give it as ``data.manifest``).

    Raises:
        ConfigError: an unknown layout or manifest format.
        DataError: the cohort cannot be read, or a CT cannot be stored as DICOM (values beyond int16, a sheared grid).
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if manifest not in _MANIFESTS:
        raise ConfigError(f"manifest must be one of {', '.join(_MANIFESTS)}, got {manifest!r}")
    vampire_root, out_dir = Path(vampire_root), Path(out_dir)
    subjects = [
        _export_subject(find_subject_files(vampire_root, case), Path(out_dir, case), layout, modality)
        for case in discover_subjects(vampire_root, None, {})
    ]
    if manifest == "csv":
        return write_manifest_csv(Path(out_dir, "manifest.csv"), subjects)
    return _write_manifest_yaml(Path(out_dir, "manifest.yaml"), subjects)


def _export_subject(files: SubjectFiles, folder: Path, layout: str, modality: str | None) -> SubjectFiles:
    """Write one subject's files into ``folder`` (names in the module docstring); its files there."""

    def ct(source: Path | None, name: str, series_number: int) -> Path | None:
        if source is None:
            return None
        if layout == "nifti":
            return _write_nifti(source, Path(folder, f"ct_{name}.nii.gz"))
        image = sitk.ReadImage(str(source))
        return write_dicom_series(image, Path(folder, f"ct_{name}"), files.case_id, name, series_number)

    def nifti(source: Path | None, name: str) -> Path | None:
        return None if source is None else _write_nifti(source, Path(folder, f"{name}.nii.gz"))

    n = len(files.phase_images)
    return SubjectFiles(
        case_id=files.case_id,
        folder=folder,
        phase_images=tuple(ct(p, f"phase_{i:02d}", i + 1) for i, p in enumerate(files.phase_images)),
        phase_masks=tuple(nifti(p, f"lung_phase_{i:02d}") for i, p in enumerate(files.phase_masks)),
        average_image=ct(files.average_image, "average", n + 1),
        average_mask=nifti(files.average_mask, "lung_average"),
        vent_image=nifti(files.vent_image, "refvi"),
        vent_mask=nifti(files.vent_mask, "refvi_lung"),
        phase_numbers=files.phase_numbers,
        modality=modality,
    )


def _write_nifti(source: Path, target: Path) -> Path:
    """Copy an image file into NIfTI (voxels and pixel type kept; NIfTI stores the geometry as float32)."""
    image = sitk.ReadImage(str(source))
    with atomic_path(target, seal=False) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=True)
    return target


def _write_manifest_yaml(path: Path, subjects: list[SubjectFiles]) -> Path:
    """A YAML manifest (``cases:`` with the reader's keys), paths relative to its folder; phases in file order."""
    base = path.parent.resolve()

    def shown(file: Path) -> str:
        file = Path(file).resolve()
        return file.relative_to(base).as_posix() if file.is_relative_to(base) else str(file)

    cases = []
    for files in subjects:
        entry: dict[str, object] = {"id": files.case_id}
        if files.modality:
            entry["modality"] = files.modality
        entry["phases"] = [shown(p) for p in files.phase_images]
        if files.phase_masks:
            entry["phase_masks"] = [shown(p) for p in files.phase_masks]
        for key, file in (
            ("average_image", files.average_image),
            ("average_mask", files.average_mask),
            ("refvi", files.vent_image),
            ("refvi_mask", files.vent_mask),
        ):
            if file is not None:
                entry[key] = shown(file)
        cases.append(entry)
    write_text(path, yaml.safe_dump({"cases": cases}, sort_keys=False), seal=False)
    return path


def write_dicom_series(image: sitk.Image, folder: Path, patient_id: str, name: str, series_number: int = 1) -> Path:
    """Write a CT volume (HU) as a DICOM CT series folder, one file per slice, replacing what ``folder`` held.

    The tags are those of the module docstring. A left-handed direction matrix (DICOM's slice normal is always the
    cross product of the row and column directions) is written with the slices in reverse order: the same voxels at
    the same physical points, read back with the third direction column negated. GDCM switches the process's C
    locale to "C" while it writes; the locale is put back as it was (as ``vent.io.images.read_dicom_series`` does).

    Args:
        image: a 3D scalar image in HU (any pixel type; rounded to integers).
        folder: the series folder (created; an existing one is replaced).
        patient_id: the case id (PatientID; it also seeds the study and frame-of-reference UIDs).
        name: the series' name (SeriesDescription; with the case id it seeds the SeriesInstanceUID).
        series_number: SeriesNumber.

    Returns:
        ``folder``.

    Raises:
        DataError: HU beyond int16 after the rescale intercept, or a direction DICOM cannot hold (not orthonormal).
    """
    image = _right_handed(image, folder)
    hu = np.rint(sitk.GetArrayFromImage(image).astype(np.float64))
    if hu.min() < _INT16.min or hu.max() - _RESCALE_INTERCEPT > _INT16.max:
        raise DataError(
            f"{folder}: HU range {hu.min():.0f}..{hu.max():.0f} does not fit int16 storage with RescaleIntercept "
            f"{_RESCALE_INTERCEPT} ({_INT16.min}..{_INT16.max + _RESCALE_INTERCEPT} HU)"
        )
    volume = sitk.GetImageFromArray(hu.astype(np.int16))
    volume.CopyInformation(image)
    temporary = folder.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{folder.name}")
    temporary.mkdir(parents=True)
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(volume, temporary, patient_id, name, series_number)
        shutil.rmtree(folder, ignore_errors=True)
        temporary.rename(folder)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def _right_handed(image: sitk.Image, folder: Path) -> sitk.Image:
    """``image`` with a direction DICOM can hold: orthonormal, third column = row x column (slices flipped if not)."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        raise DataError(f"{folder}: direction {image.GetDirection()} is not orthonormal; DICOM cannot store it")
    normal = np.cross(direction[:, 0], direction[:, 1])
    if float(normal @ direction[:, 2]) > 0:
        return image
    return sitk.Flip(image, [False, False, True])


def _uid(*parts: object) -> str:
    """A deterministic DICOM UID (``2.25.<decimal uuid5>``, at most 44 characters) for ``parts``."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '/'.join(str(p) for p in parts)).int}"


def _ds(value: float) -> str:
    """``value`` as a DICOM decimal string: the most digits that fit its 16 characters."""
    for digits in range(16, 0, -1):
        text = f"{float(value):.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value!r} does not fit a DICOM decimal string")


def _write_slices(volume: sitk.Image, folder: Path, patient_id: str, name: str, series_number: int) -> None:
    """One DICOM file per z slice of ``volume`` (HU) in ``folder``, with the tags of the module docstring.

    GDCM writes PixelSpacing itself from the slice's spacing (row spacing = y, then column spacing = x, as 16-character
    decimal strings) and stores ``HU - RescaleIntercept`` from the intercept and slope set here.
    """
    direction, spacing = volume.GetDirection(), volume.GetSpacing()
    series_uid = _uid(patient_id, name)
    shared = {
        "0008|0016": _CT_IMAGE_STORAGE,
        "0008|0060": "CT",
        "0008|103e": name,
        "0010|0010": patient_id,
        "0010|0020": patient_id,
        "0020|000d": _uid(patient_id, "study"),
        "0020|000e": series_uid,
        "0020|0052": _uid(patient_id, "frame of reference"),
        "0020|0011": str(series_number),
        "0020|0037": "\\".join(_ds(direction[i]) for i in (0, 3, 6, 1, 4, 7)),
        "0018|0050": _ds(spacing[2]),
        "0028|1052": str(_RESCALE_INTERCEPT),
        "0028|1053": "1",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(volume.GetDepth()):
        piece = volume[:, :, z]
        position = volume.TransformIndexToPhysicalPoint((0, 0, z))
        per_slice = {
            "0008|0018": f"{series_uid}.{z + 1}",
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(_ds(v) for v in position),
        }
        for tag, value in {**shared, **per_slice}.items():
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(Path(folder, f"slice_{z:03d}.dcm")))
        writer.Execute(piece)
