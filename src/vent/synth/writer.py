"""Write synthetic subjects to disk in the VAMPIRE layout (MetaImage ``.mha``), atomically and resumably.

Per subject folder ``Subject_XX``::

    CT/PhaseImage_01.mha ... PhaseImage_NN.mha   int16 HU (phase 1 = maximum exhalation)
    CT/PhaseMask_01.mha  ... PhaseMask_NN.mha    uint8 lung mask per phase
    CT/AverageImage.mha, CT/AverageMask.mha      time-averaged CT and its lung mask
    GT/VentImage.mha, GT/VentMask.mha            RefVI (float32) and its lung mask, on the RefVI's own grid
    synthetic_truth.json                         planted defects and generator parameters (not part of VAMPIRE)
    synthetic_truth/DefectMask.mha               planted defects (uint8) on the CT grid, time-averaged position
    synthetic_truth/LocalVentilation.mha         J_inhale - 1 before PSF blur and noise (float32), CT grid
    .complete                                    written last: JSON of (generator version, modality, size, seed)

Every file is written to a temporary name in its folder and renamed into place, so a killed run never leaves a
truncated file under a final name; subjects whose ``.complete`` marker matches the request are skipped, and an
incomplete subject is regenerated (stale temporary and surplus phase files removed, every file rewritten).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Literal

import SimpleITK as sitk

from vent.errors import ConfigError, DataError
from vent.io.atomic import atomic_path, clean_temporaries
from vent.synth.subject import (
    GENERATOR_VERSION,
    MODALITIES,
    SyntheticSubject,
    make_synthetic_subject,
    validate_request,
)

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"
TRUTH_JSON = "synthetic_truth.json"


def subject_folder_name(index: int) -> str:
    """``Subject_XX`` for a 1-based subject index."""
    return f"Subject_{index:02d}"


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` then rename the temporary file to ``path`` (``vent.io.atomic``)."""
    with atomic_path(path, seal=False) as temporary:
        write(temporary)


def _clean_incomplete(folder: Path, n_phases: int) -> None:
    """Remove what a killed run may have left in an incomplete subject folder before it is regenerated.

    Deletes temporary files (``vent.io.atomic``'s ``.tmp-*``) and phase files numbered above ``n_phases`` (left by an
    earlier, interrupted run with another modality); every other file is overwritten by the regeneration.
    """
    if not folder.is_dir():
        return
    removed = clean_temporaries(folder)
    if removed:
        logger.info("removed %d stale temporary file(s) in %s", removed, folder)
    for pattern in ("PhaseImage_*.mha", "PhaseMask_*.mha"):
        for phase_file in (folder / "CT").glob(pattern):
            number = phase_file.stem.rsplit("_", 1)[-1]
            if not number.isdigit() or int(number) > n_phases:
                logger.info("removing phase file %s left by an interrupted run", phase_file)
                phase_file.unlink()


def _write_image(image: sitk.Image, path: Path) -> None:
    _write_atomically(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True))


def _write_text(text: str, path: Path) -> None:
    _write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _marker_content(modality: str, size: str, seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "modality": modality, "size": size, "seed": int(seed)}


def write_subject(subject: SyntheticSubject, folder: Path) -> None:
    """Write one in-memory subject into ``folder`` in the VAMPIRE layout (marker last)."""
    for number, (image, mask) in enumerate(zip(subject.phases, subject.phase_masks), start=1):
        _write_image(image, folder / "CT" / f"PhaseImage_{number:02d}.mha")
        _write_image(mask, folder / "CT" / f"PhaseMask_{number:02d}.mha")
    _write_image(subject.average_image, folder / "CT" / "AverageImage.mha")
    _write_image(subject.average_mask, folder / "CT" / "AverageMask.mha")
    _write_image(subject.vent_image, folder / "GT" / "VentImage.mha")
    _write_image(subject.vent_mask, folder / "GT" / "VentMask.mha")
    _write_image(subject.defect_mask, folder / "synthetic_truth" / "DefectMask.mha")
    _write_image(subject.local_ventilation, folder / "synthetic_truth" / "LocalVentilation.mha")
    _write_text(json.dumps(subject.truth, indent=2), folder / TRUTH_JSON)
    marker = _marker_content(subject.modality, subject.size, subject.truth["seed"])
    _write_text(json.dumps(marker), folder / COMPLETE_MARKER)


def cohort_is_complete(out_dir: Path, n_cases: int) -> bool:
    """Whether every subject 1..n_cases of a synthetic cohort has its ``.complete`` marker (written last)."""
    return all((Path(out_dir) / subject_folder_name(i) / COMPLETE_MARKER).is_file() for i in range(1, n_cases + 1))


def _is_complete(folder: Path, expected: dict) -> bool:
    """True if ``folder`` holds a finished subject made with ``expected``; DataError if made with other settings."""
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if found != expected:
        raise DataError(
            f"{folder} was generated with {found}, but {expected} was requested; "
            "choose another output folder or delete the existing subjects"
        )
    return True


def write_synthetic_cohort(
    out_dir: Path,
    n_cases: int = 6,
    modality: Literal["pet", "spect"] = "pet",
    size: Literal["tiny", "demo", "full"] = "demo",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write Subject_01..Subject_NN in the VAMPIRE layout under ``out_dir``; return the subject folders.

    Deterministic for a given (n_cases, modality, size, seed); subject k depends only on (seed, k, modality, size),
    so asking for more cases leaves the first ones byte-identical. Files are written atomically (temporary name and
    rename) and subjects already complete (``.complete`` marker, written last) are skipped, so a killed run resumes.

    Args:
        out_dir: Cohort folder (created if missing).
        n_cases: Number of subjects, 1..99.
        modality: ``"pet"`` (5 phases) or ``"spect"`` (10 phases).
        size: ``"tiny"``, ``"demo"`` or ``"full"`` (see ``make_synthetic_subject``).
        seed: Cohort seed (non-negative integer).
        progress: Called with one short message per subject (generated or skipped); nothing is printed.

    Returns:
        The subject folders, in order.

    Raises:
        ConfigError: For a bad n_cases, modality, size or seed.
        DataError: If a subject folder holds a complete subject made with other settings.
    """
    if not isinstance(n_cases, int) or isinstance(n_cases, bool) or not 1 <= n_cases <= 99:
        raise ConfigError(f"n_cases (--cases) must be an integer in 1..99, got {n_cases!r}")
    validate_request(modality, size, seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out_dir {out_dir} exists and is not a folder; give a folder path")
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = _marker_content(modality, size, seed)
    folders = []
    for index in range(1, n_cases + 1):
        folder = out_dir / subject_folder_name(index)
        folders.append(folder)
        if _is_complete(folder, expected):
            logger.info("%s already complete, skipped", folder)
            if progress is not None:
                progress(f"{folder.name}: already complete, skipped")
            continue
        _clean_incomplete(folder, MODALITIES[modality].n_phases)
        subject = make_synthetic_subject(index, modality, size, seed)
        write_subject(subject, folder)
        logger.info("wrote %s", folder)
        if progress is not None:
            progress(
                f"{folder.name}: written ({subject.truth['n_phases']} phases, "
                f"defect fraction {subject.truth['defect_fraction']:.2f})"
            )
    return folders
