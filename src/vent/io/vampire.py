"""The VAMPIRE folder layout: finding subjects and their files, and checking them from headers and hashes.

Layout (one study folder, e.g. ``VAMPIRE_FullDatabase_MHA/Study01_Galligas-PET``)::

    Subject_XX/CT/PhaseImage_01.mha ... PhaseImage_NN.mha   4DCT phases (HU)
    Subject_XX/CT/PhaseMask_01.mha  ... PhaseMask_NN.mha    lung mask per phase
    Subject_XX/CT/AverageImage.mha, AverageMask.mha         time-averaged CT and its lung mask (optional)
    Subject_XX/GT/VentImage.mha                             reference ventilation image (RefVI)
    Subject_XX/GT/VentMask.mha                              lung mask on the RefVI grid

Any extension SimpleITK reads is accepted (``.mha``, ``.mhd``, ``.nii``, ``.nii.gz``, ``.nrrd``).

Checks made here, before any voxel is read (``vent validate`` and ``vent run`` alike): at least ``MIN_PHASES``
phases, one phase count for the cohort, one grid (size, spacing, origin, direction) for every phase and mask of a
subject, and no subject twice (``check_duplicate_subjects``). The voxel checks are in ``vent.io.checks``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from vent.errors import ConfigError, DataError
from vent.io.hashing import file_sha256

__all__ = [
    "MIN_PHASES",
    "SubjectFiles",
    "discover_subjects",
    "find_subject_files",
    "check_subject_headers",
    "check_duplicate_subjects",
]

MIN_PHASES = 3
"""Fewest phases a subject may have: a radiomic *sequence* over fewer than 3 breathing phases carries no trend."""

_EXTENSIONS = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd")
_PHASE_RE = re.compile(r"^PhaseImage_(\d+)$")


@dataclass(frozen=True)
class SubjectFiles:
    """The files of one subject; ``phase_images[i]`` pairs with ``phase_masks[i]`` (file order)."""

    case_id: str
    folder: Path
    phase_images: tuple[Path, ...]
    phase_masks: tuple[Path, ...]
    average_image: Path | None
    average_mask: Path | None
    vent_image: Path
    vent_mask: Path | None
    phase_numbers: tuple[int, ...] = field(default=())

    def all_files(self) -> list[Path]:
        files = [*self.phase_images, *self.phase_masks, self.vent_image]
        files += [p for p in (self.average_image, self.average_mask, self.vent_mask) if p is not None]
        return files


def _strip_ext(name: str) -> str:
    for ext in _EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _find(folder: Path, stem: str) -> Path | None:
    for ext in _EXTENSIONS:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def discover_subjects(root: Path, subjects: list[str] | str | None, exclude: dict[str, str]) -> list[str]:
    """The subject ids to use, sorted, after applying the subject list or glob and the exclusions.

    Raises:
        DataError: the root does not exist or holds no subject folders.
        ConfigError: a listed or excluded subject does not exist (typo guard).
    """
    if not root.is_dir():
        raise DataError(
            f"data root {root} does not exist; set data.root in the config to a study folder in the VAMPIRE layout "
            "(the folder holding Subject_01, Subject_02, ...)"
        )
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "CT").is_dir())
    if not present:
        raise DataError(
            f"data root {root} holds no subject folders with a CT/ subfolder; expected Subject_XX/CT/PhaseImage_NN.mha"
        )
    if subjects is None:
        chosen = present
    elif isinstance(subjects, str):
        chosen = [s for s in present if fnmatch.fnmatch(s, subjects)]
        if not chosen:
            raise ConfigError(
                f"data.subjects pattern {subjects!r} matches no subject in {root} (found: {present[:5]}...)"
            )
    else:
        missing = [s for s in subjects if s not in present]
        if missing:
            raise ConfigError(f"data.subjects lists {missing} which are not folders with CT/ data in {root}")
        chosen = sorted(subjects)
    unknown = [s for s in exclude if s not in present]
    if unknown:
        raise ConfigError(f"data.exclude names {unknown} which are not subjects in {root}")
    chosen = [s for s in chosen if s not in exclude]
    if not chosen:
        raise ConfigError(f"no subjects left in {root} after data.subjects and data.exclude")
    return chosen


def find_subject_files(root: Path, case_id: str) -> SubjectFiles:
    """Locate one subject's files; raise DataError naming the first missing one."""
    folder = root / case_id
    ct_dir, gt_dir = folder / "CT", folder / "GT"
    phases: dict[int, Path] = {}
    if ct_dir.is_dir():
        for path in ct_dir.iterdir():
            match = _PHASE_RE.match(_strip_ext(path.name))
            if match and path.is_file():
                phases[int(match.group(1))] = path
    if not phases:
        raise DataError(f"{ct_dir} holds no PhaseImage_NN file; expected {ct_dir}/PhaseImage_01.mha and so on")
    numbers = sorted(phases)
    expected = list(range(numbers[0], numbers[0] + len(numbers)))
    if numbers != expected:
        gaps = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        missing = ", ".join(str(ct_dir / f"PhaseImage_{g:02d}.mha") for g in gaps)
        raise DataError(f"phase file(s) missing for {case_id}: {missing} (found phases {numbers})")
    masks = []
    for number in numbers:
        width = len(re.match(r"^PhaseImage_(\d+)", _strip_ext(phases[number].name)).group(1))
        mask_stem = f"PhaseMask_{number:0{width}d}"
        mask = _find(ct_dir, mask_stem)
        if mask is None:
            raise DataError(f"lung mask for phase {number} of {case_id} is missing: expected {ct_dir}/{mask_stem}.mha")
        masks.append(mask)
    vent_image = _find(gt_dir, "VentImage")
    if vent_image is None:
        raise DataError(f"reference ventilation image missing for {case_id}: expected {gt_dir}/VentImage.mha")
    return SubjectFiles(
        case_id=case_id,
        folder=folder,
        phase_images=tuple(phases[n] for n in numbers),
        phase_masks=tuple(masks),
        average_image=_find(ct_dir, "AverageImage"),
        average_mask=_find(ct_dir, "AverageMask"),
        vent_image=vent_image,
        vent_mask=_find(gt_dir, "VentMask"),
        phase_numbers=tuple(numbers),
    )


def _header(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DataError(
            f"{path} could not be read by SimpleITK: it is corrupt or not in a supported format (.mha, .mhd, .nii, "
            ".nii.gz, .nrrd). Copy or export the file again, or leave the subject out with data.exclude"
        ) from None
    return reader


def _rounded(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(float(v), 4) + 0.0 for v in values)


def check_subject_headers(files: SubjectFiles, expected_phases: int | None = None) -> list[str]:
    """Check a subject from file headers only (no voxels): phase count, 3D, one geometry for all phases and masks.

    The geometry is size, spacing (1e-3 mm), origin (1e-2 mm) and direction cosines (1e-3), each compared with the
    first phase image's.

    Returns:
        Warnings (not errors) worth showing to the user.
    Raises:
        DataError: naming the file at fault.
    """
    warnings = []
    if len(files.phase_images) < MIN_PHASES:
        raise DataError(
            f"{files.folder / 'CT'} holds {len(files.phase_images)} phase image(s) ({files.phase_images[0].name}...); "
            f"vent models each voxel as a sequence over the breathing cycle, which needs at least {MIN_PHASES} "
            "phases. Add the missing PhaseImage_NN/PhaseMask_NN files or leave the subject out with data.exclude"
        )
    if expected_phases is not None and len(files.phase_images) != expected_phases:
        raise DataError(
            f"{files.case_id} has {len(files.phase_images)} phases but other subjects have {expected_phases}; "
            f"a cohort must share one phase count (exclude the subject in data.exclude with a reason)"
        )
    reference_path = files.phase_images[0]
    reference = _header(reference_path)
    for path in [*files.phase_images[1:], *files.phase_masks, files.average_image, files.average_mask]:
        if path is None:
            continue
        other = _header(path)
        if other.GetDimension() != 3:
            raise DataError(f"{path} is {other.GetDimension()}D; expected a 3D volume")
        problems = []
        if other.GetSize() != reference.GetSize():
            problems.append(f"size {other.GetSize()} vs {reference.GetSize()}")
        if any(abs(a - b) > 1e-3 for a, b in zip(other.GetSpacing(), reference.GetSpacing())):
            problems.append(f"spacing {other.GetSpacing()} vs {reference.GetSpacing()}")
        if any(abs(a - b) > 1e-2 for a, b in zip(other.GetOrigin(), reference.GetOrigin())):
            problems.append(f"origin {other.GetOrigin()} vs {reference.GetOrigin()}")
        if any(abs(a - b) > 1e-3 for a, b in zip(other.GetDirection(), reference.GetDirection())):
            problems.append(f"direction {_rounded(other.GetDirection())} vs {_rounded(reference.GetDirection())}")
        if problems:
            raise DataError(
                f"{path} does not share the geometry of {reference_path}: {'; '.join(problems)}. All phases and "
                "masks of a subject must lie on one grid: export the file again on the grid of the first phase, "
                "or leave the subject out with data.exclude and a reason"
            )
    vent = _header(files.vent_image)
    if files.vent_mask is not None:
        vent_mask = _header(files.vent_mask)
        if vent_mask.GetSize() != vent.GetSize():
            raise DataError(
                f"{files.vent_mask} has size {vent_mask.GetSize()} but {files.vent_image} has {vent.GetSize()}"
            )
    else:
        warnings.append(f"{files.case_id}: no GT/VentMask; the CT lung mask alone defines the analysed voxels")
    if files.average_image is None:
        warnings.append(f"{files.case_id}: no CT/AverageImage; the first phase's grid is the subject's reference grid")
    return warnings


def check_duplicate_subjects(
    subjects: Mapping[str, SubjectFiles], sha256: Callable[[Path], str] = file_sha256
) -> None:
    """Raise DataError when one patient appears under two subject folders, naming both folders.

    Two folders are the same subject when they resolve to the same path (a symlink), when their names differ only
    by case (``Subject_01``, ``subject_01``), or when their first phase images have the same SHA-256 (a copy).
    Otherwise the patient would be counted twice and could land on both sides of a cross-validation split.

    Args:
        subjects: ``{case_id: files}`` of the cohort (after ``data.subjects`` and ``data.exclude``).
        sha256: the content hash of a file; pass the run's cached hasher (``RunContext.hashes().sha256``) so that
            files already hashed for the fingerprints are not read again.

    Raises:
        DataError: naming both folders and saying to remove one or to list one in ``data.exclude``.
    """
    checks: tuple[tuple[str, Callable[[SubjectFiles], object]], ...] = (
        ("resolve to the same folder", lambda files: files.folder.resolve()),
        ("have names that differ only by case", lambda files: files.case_id.casefold()),
        ("hold identical first phase images (same SHA-256)", lambda files: sha256(files.phase_images[0])),
    )
    for reason, key_of in checks:
        seen: dict[object, SubjectFiles] = {}
        for files in subjects.values():
            other = seen.setdefault(key_of(files), files)
            if other is not files:
                raise DataError(
                    f"subject folders {other.folder} and {files.folder} {reason}: they are one patient counted "
                    "twice, which would put it on both sides of a cross-validation split. Remove one folder, or "
                    f"leave one out with data.exclude: {{{files.case_id}: \"duplicate of {other.case_id}\"}}"
                )
