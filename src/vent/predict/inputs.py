"""What ``vent predict`` accepts as INPUT, turned into the cases to predict (``SubjectFiles``).

- a manifest (``.csv`` / ``.yaml``, ``vent.io.manifest``): every case it lists;
- a VAMPIRE subject folder (holds ``CT/``): that subject;
- a VAMPIRE study folder (holds ``Subject_XX/CT/``): every subject;
- a folder of phase images: its image files (any SimpleITK format), or its sub-folders that each hold one DICOM
  series, taken as the phases in natural name order (``phase_2`` before ``phase_10``); no masks (the lungs are
  segmented) and no RefVI. The case id is the folder's name.
"""

from __future__ import annotations

import re
from pathlib import Path

from vent.errors import DataError
from vent.io.manifest import is_manifest, read_manifest
from vent.io.vampire import SubjectFiles, discover_subjects, find_subject_files

__all__ = ["resolve_cases", "natural_key"]

_IMAGE_SUFFIXES = (".mha", ".mhd", ".nii", ".nii.gz", ".nrrd", ".nhdr")


def natural_key(name: str) -> list[object]:
    """Sort key that orders embedded numbers by value (``p2`` < ``p10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def resolve_cases(source: Path, case: list[str] | None = None) -> list[SubjectFiles]:
    """The cases ``source`` holds (module docstring), restricted to ``case`` ids when given.

    Raises:
        DataError: ``source`` is none of the accepted kinds, or a requested case is not in it.
    """
    source = Path(source)
    if is_manifest(source):
        found = list(read_manifest(source).values())
    elif source.is_dir() and Path(source, "CT").is_dir():
        found = [find_subject_files(source.parent, source.name)]
    elif source.is_dir() and any(Path(p, "CT").is_dir() for p in source.iterdir() if p.is_dir()):
        found = [find_subject_files(source, case_id) for case_id in discover_subjects(source, None, {})]
    elif source.is_dir():
        found = [_phase_folder(source)]
    else:
        raise DataError(
            f"{source} is neither a manifest (.csv/.yaml), a VAMPIRE subject or study folder, nor a folder of phase "
            "images; give one of those"
        )
    if case:
        missing = sorted(set(case) - {f.case_id for f in found})
        if missing:
            raise DataError(f"{source} holds no case {missing}; it holds {[f.case_id for f in found]}")
        found = [f for f in found if f.case_id in case]
    return found


def _phase_folder(folder: Path) -> SubjectFiles:
    """A folder of phase images (files, or sub-folders holding one DICOM series each) as one case."""
    entries = sorted(folder.iterdir(), key=lambda p: natural_key(p.name))
    files = [p for p in entries if p.is_file() and p.name.lower().endswith(_IMAGE_SUFFIXES)]
    series = [p for p in entries if p.is_dir()]
    if files and series:
        raise DataError(
            f"{folder} holds both image files ({files[0].name}, ...) and sub-folders ({series[0].name}, ...); give "
            "phase images one way, or list them in a manifest"
        )
    phases = tuple(files or series)
    if not phases:
        raise DataError(
            f"{folder} holds no phase images: expected image files (.mha, .nii.gz, ...) or one DICOM series per "
            "sub-folder, in breathing order by name"
        )
    return SubjectFiles(
        case_id=folder.name,
        folder=folder,
        phase_images=phases,
        phase_masks=(),
        average_image=None,
        average_mask=None,
        vent_image=None,
        vent_mask=None,
    )
