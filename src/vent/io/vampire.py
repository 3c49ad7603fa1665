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
from typing import Any

import SimpleITK as sitk

from vent.errors import ConfigError, DataError
from vent.io.checks import Findings
from vent.io.hashing import file_sha256

__all__ = [
    "MIN_PHASES",
    "SubjectFiles",
    "discover_subjects",
    "choose_subjects",
    "find_subject_files",
    "check_subject_headers",
    "check_duplicate_subjects",
    "geometry_differences",
]

MIN_PHASES = 3
"""Fewest phases a subject may have: a radiomic *sequence* over fewer than 3 breathing phases carries no trend."""

_EXTENSIONS = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd")
_PHASE_RE = re.compile(r"^PhaseImage_(\d+)$")


@dataclass(frozen=True)
class SubjectFiles:
    """The files of one subject, from the VAMPIRE layout or a manifest (``vent.io.manifest``).

    ``phase_images[i]`` pairs with ``phase_masks[i]`` (file order). ``phase_masks`` is empty when the subject comes
    without lung masks (preprocessing then segments them, ``preprocess.segmentation``); ``vent_image`` is None for a
    subject without a reference ventilation image (only ``vent predict`` accepts one). Paths are files, or folders
    holding one DICOM series.
    """

    case_id: str
    folder: Path
    phase_images: tuple[Path, ...]
    phase_masks: tuple[Path, ...]
    average_image: Path | None
    average_mask: Path | None
    vent_image: Path | None
    vent_mask: Path | None
    phase_numbers: tuple[int, ...] = field(default=())
    modality: str | None = None
    source: Path | None = None

    def __post_init__(self) -> None:
        if not self.phase_numbers:
            object.__setattr__(self, "phase_numbers", tuple(range(1, len(self.phase_images) + 1)))

    @property
    def has_masks(self) -> bool:
        """Whether every phase comes with its lung mask (else they are segmented)."""
        return bool(self.phase_masks)

    @property
    def origin(self) -> Path:
        """Where the subject was listed, for messages: its manifest, else its folder."""
        return self.source or self.folder

    def all_files(self) -> list[Path]:
        files = [*self.phase_images, *self.phase_masks]
        files += [p for p in (self.vent_image, self.average_image, self.average_mask, self.vent_mask) if p is not None]
        return files


def expected_refvi(folder: Path) -> Path:
    """Where the VAMPIRE layout keeps a subject's RefVI (for messages)."""
    return folder / "GT" / "VentImage.mha"


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
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(
            f"data root {root} {state}; set data.root in the config to a study folder in the VAMPIRE layout "
            "(the folder holding Subject_01, Subject_02, ...), or list the cases in a manifest (data.manifest)"
        )
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "CT").is_dir())
    if not present:
        raise DataError(
            f"data root {root} holds no subject folders with a CT/ subfolder; expected "
            "Subject_XX/CT/PhaseImage_NN.mha. Set data.root to the study folder that holds the Subject_XX folders, or "
            "list the cases in a manifest (data.manifest)"
        )
    return choose_subjects(present, subjects, exclude, str(root))


def choose_subjects(
    present: list[str], subjects: list[str] | str | None, exclude: dict[str, str], where: str
) -> list[str]:
    """The ids of ``present`` kept by ``data.subjects`` (a list or a glob; None = all) and ``data.exclude``, sorted.

    Raises:
        ConfigError: a listed or excluded subject is not present (typo guard), or none is left.
    """
    present = sorted(present)
    if subjects is None:
        chosen = present
    elif isinstance(subjects, str):
        chosen = [s for s in present if fnmatch.fnmatch(s, subjects)]
        if not chosen:
            raise ConfigError(
                f"data.subjects pattern {subjects!r} matches no subject in {where} (found: {present[:5]}...)"
            )
    else:
        missing = [s for s in subjects if s not in present]
        if missing:
            raise ConfigError(f"data.subjects lists {missing} which are not subjects with CT data in {where}")
        chosen = sorted(subjects)
    unknown = [s for s in exclude if s not in present]
    if unknown:
        raise ConfigError(
            f"data.exclude names {unknown} which are not subjects in {where}; check the spelling (subjects: "
            f"{', '.join(present[:5])}{', ...' if len(present) > 5 else ''}) or remove the entry"
        )
    chosen = [s for s in chosen if s not in exclude]
    if not chosen:
        raise ConfigError(f"no subjects left in {where} after data.subjects and data.exclude")
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
        raise DataError(
            f"phase file(s) missing for {case_id}: {missing} (found phases {numbers}); restore the file(s), or leave "
            f"{case_id} out with data.exclude and a reason"
        )
    masks = []
    for number in numbers:
        width = len(re.match(r"^PhaseImage_(\d+)", _strip_ext(phases[number].name)).group(1))
        mask_stem = f"PhaseMask_{number:0{width}d}"
        masks.append((number, mask_stem, _find(ct_dir, mask_stem)))
    found = [m for _, _, m in masks if m is not None]
    if found and len(found) < len(masks):
        absent = ", ".join(f"{ct_dir}/{stem}.mha" for _, stem, m in masks if m is None)
        raise DataError(
            f"lung masks of {case_id} are missing for some phases: {absent}; give a mask for every phase, or remove "
            "them all to have the lungs segmented (preprocess.segmentation)"
        )
    return SubjectFiles(
        case_id=case_id,
        folder=folder,
        phase_images=tuple(phases[n] for n in numbers),
        phase_masks=tuple(found),
        average_image=_find(ct_dir, "AverageImage"),
        average_mask=_find(ct_dir, "AverageMask"),
        vent_image=_find(gt_dir, "VentImage"),
        vent_mask=_find(gt_dir, "VentMask"),
        phase_numbers=tuple(numbers),
    )


def _header(path: Path) -> sitk.ImageFileReader | sitk.Image:
    from vent.io.images import read_header

    return read_header(path)


def _rounded(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(float(v), 4) + 0.0 for v in values)


def geometry_differences(other: Any, reference: Any) -> list[str]:
    """How two headers' grids differ: size, spacing (1e-3 mm), origin (1e-2 mm), direction cosines (1e-3)."""
    problems = []
    if tuple(other.GetSize()) != tuple(reference.GetSize()):
        problems.append(f"size {other.GetSize()} vs {reference.GetSize()}")
    if any(abs(a - b) > 1e-3 for a, b in zip(other.GetSpacing(), reference.GetSpacing())):
        problems.append(f"spacing {other.GetSpacing()} vs {reference.GetSpacing()}")
    if any(abs(a - b) > 1e-2 for a, b in zip(other.GetOrigin(), reference.GetOrigin())):
        problems.append(f"origin {other.GetOrigin()} vs {reference.GetOrigin()}")
    if any(abs(a - b) > 1e-3 for a, b in zip(other.GetDirection(), reference.GetDirection())):
        problems.append(f"direction {_rounded(other.GetDirection())} vs {_rounded(reference.GetDirection())}")
    return problems


def check_subject_headers(
    files: SubjectFiles, expected_phases: int | None = None, findings: Findings | None = None
) -> list[str]:
    """Check a subject from file headers only (no voxels): phase count, 3D, one geometry for all phases and masks.

    The geometry (``geometry_differences``) of every phase, phase mask and the average CT and its mask is compared
    with the first phase image's; the RefVI mask's size with the RefVI's. Every file is checked, so one pass finds
    every problem of the subject.

    Args:
        files: the subject.
        expected_phases: the cohort's phase count, or None.
        findings: collect problems here (``vent validate``); when None, the problems are raised together.

    Returns:
        Warnings (not errors) worth showing to the user.
    Raises:
        DataError: naming each file at fault (only when ``findings`` is None).
    """
    own = findings is None
    findings = Findings() if own else findings
    n_before = len(findings.warnings)
    where = files.origin if files.source is not None else files.folder / "CT"
    if len(files.phase_images) < MIN_PHASES:
        findings.error(
            f"{where} holds {len(files.phase_images)} phase image(s) for {files.case_id} "
            f"({files.phase_images[0].name}...); vent models each voxel as a sequence over the breathing cycle, which "
            f"needs at least {MIN_PHASES} phases. Add the missing phase images or leave the subject out with "
            "data.exclude"
        )
    if expected_phases is not None and len(files.phase_images) != expected_phases:
        findings.error(
            f"{files.case_id} has {len(files.phase_images)} phases but other subjects have {expected_phases}; "
            f"a cohort must share one phase count (exclude the subject in data.exclude with a reason)"
        )
    reference_path = files.phase_images[0]
    reference = findings.attempt(_header, reference_path)
    for path in [*files.phase_images[1:], *files.phase_masks, files.average_image, files.average_mask]:
        if path is None:
            continue
        other = findings.attempt(_header, path)
        if other is None or reference is None:
            continue
        if other.GetDimension() != 3:
            findings.error(f"{path} is {other.GetDimension()}D; expected a 3D volume")
            continue
        problems = geometry_differences(other, reference)
        if problems:
            findings.error(
                f"{path} does not share the geometry of {reference_path}: {'; '.join(problems)}. All phases and "
                "masks of a subject must lie on one grid: export the file again on the grid of the first phase, "
                "or leave the subject out with data.exclude and a reason"
            )
    _check_refvi_headers(files, findings)
    if files.average_image is None:
        findings.warn(f"{files.case_id}: no average CT; the first phase's grid is the subject's reference grid")
    if not files.has_masks:
        findings.warn(f"{files.case_id}: no lung masks; they are segmented (preprocess.segmentation)")
    if own:
        findings.raise_errors()
    return findings.warnings[n_before:]


def _check_refvi_headers(files: SubjectFiles, findings: Findings) -> None:
    if files.vent_image is None:
        return
    vent = findings.attempt(_header, files.vent_image)
    if files.vent_mask is not None:
        vent_mask = findings.attempt(_header, files.vent_mask)
        problems = geometry_differences(vent_mask, vent) if vent is not None and vent_mask is not None else []
        if problems:
            findings.error(
                f"{files.vent_mask} does not share the geometry of {files.vent_image}: {'; '.join(problems)}. The "
                "RefVI lung mask must lie on the RefVI's grid: export it again, or leave the subject out"
            )
    else:
        findings.warn(f"{files.case_id}: no RefVI lung mask; the CT lung mask alone defines the analysed voxels")


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
        # a manifest's cases may share one folder: for them the same first phase file is the same subject
        ("resolve to the same folder",
         lambda files: (files.phase_images[0] if files.source else files.folder).resolve()),
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
