"""``vent validate``: check a whole dataset before any compute and list every problem in one pass.

Reads: the cohort of ``data.root`` (VAMPIRE layout) or ``data.manifest`` (``vent.io.manifest``), every file in full.
Writes: nothing (the CLI writes the report where ``--json`` says). Config: ``data`` and ``preprocess``.

Unlike ``vent run``, which stops at the first subject in error, ``validate_dataset`` goes on past every problem: it
finds each subject's files on its own (a subject with a missing phase file is reported and the others are still
read), runs the header checks (``vent.io.vampire.check_subject_headers`` through
``vent.stages.preprocess.check_cohort``) and the voxel checks (``check_subject_voxels``) per subject, and then the
cohort-level checks: one phase count (the most common count is the expected one, so the odd subjects are named
rather than every subject but the first) and no patient twice (every duplicate, not only the first). Each problem is
attributed to its case (None for the cohort: a missing data root, a manifest row).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vent.config import RunConfig
from vent.errors import DataError
from vent.io.checks import Findings
from vent.io.hashing import file_sha256
from vent.io.vampire import (
    SubjectFiles,
    check_duplicate_subjects,
    choose_subjects,
    discover_subjects,
    find_subject_files,
)
from vent.stages.preprocess import check_cohort, check_subject_voxels

__all__ = ["Problem", "ValidationReport", "validate_dataset"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One problem found: ``error`` (the dataset cannot be computed as it is) or ``warning`` (worth a look)."""

    severity: Severity
    case: str | None
    """The subject at fault, or None for the cohort (data root, manifest rows)."""
    message: str
    """What is wrong, naming the file, and what to do."""


@dataclass
class ValidationReport:
    """Every problem of a dataset, with what was found: the result of ``validate_dataset``."""

    location: Path
    """The data root or the manifest checked."""
    n_subjects: int
    """Subjects kept by ``data.subjects`` and ``data.exclude`` (with or without problems)."""
    n_phases: int | None
    """The cohort's phase count (the most common one), or None when no subject's files were found."""
    phase_counts: dict[int, int]
    """``{phase count: number of subjects}`` over the subjects whose files were found."""
    problems: list[Problem] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No error: the dataset can be computed (warnings allowed)."""
        return not self.errors

    def summary(self) -> str:
        """``"N subjects, M errors, K warnings"``."""
        return f"{self.n_subjects} subjects, {len(self.errors)} errors, {len(self.warnings)} warnings"

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types (for ``vent validate --json``)."""
        return {
            "location": str(self.location),
            "ok": self.ok,
            "n_subjects": self.n_subjects,
            "n_phases": self.n_phases,
            "phase_counts": {str(n): count for n, count in sorted(self.phase_counts.items())},
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "excluded": dict(self.excluded),
            "problems": [{"severity": p.severity, "case": p.case, "message": p.message} for p in self.problems],
        }

    def lines(self) -> list[tuple[str, str]]:
        """``(kind, text)`` lines for printing, grouped by case (the cohort first), errors before warnings.

        ``kind`` is ``"case"`` for a group's heading, else the problem's severity (the CLI colours by it).
        """
        groups: dict[str | None, list[Problem]] = {}
        for problem in self.problems:
            groups.setdefault(problem.case, []).append(problem)
        out: list[tuple[str, str]] = []
        for case in sorted(groups, key=lambda c: (c is not None, c or "")):
            problems = sorted(groups[case], key=lambda p: p.severity != "error")
            n_errors = sum(p.severity == "error" for p in problems)
            heading = "cohort" if case is None else case
            out.append(("case", f"{heading}: {n_errors} error(s), {len(problems) - n_errors} warning(s)"))
            out += [(p.severity, f"  {p.severity}: {p.message}") for p in problems]
        return out


def validate_dataset(config: RunConfig, sha256: Callable[[Path], str] = file_sha256) -> ValidationReport:
    """Run every data check on every subject of ``config`` and collect the problems instead of stopping.

    Args:
        config: the run config (``data`` says where the cohort is, ``preprocess`` the mask and segmentation rules).
        sha256: a file hasher for the duplicate check; pass the run's cache (``RunContext.hashes().sha256``).

    Returns:
        The report: each problem with its severity and case, and the cohort's size and phase counts.

    Raises:
        ConfigError: ``data.subjects`` or ``data.exclude`` name subjects that are not there (a config typo).
    """
    sha256 = _content_hasher(sha256)
    cohort = Findings()
    found: dict[str, Findings] = {}
    subjects = _discover(config, cohort, found)
    for case, files in subjects.items():
        _check_subject(files, config, sha256, found[case])
    n_phases, phase_counts = _check_phase_counts(subjects, found)
    _check_duplicates(subjects, sha256, found)
    problems = _problems(None, cohort)
    for case, findings in found.items():
        problems += _problems(case, findings)
    return ValidationReport(
        location=config.data.location,
        n_subjects=len(found),
        n_phases=n_phases,
        phase_counts=phase_counts,
        problems=problems,
        excluded=dict(config.data.exclude),
    )


def _problems(case: str | None, findings: Findings) -> list[Problem]:
    """The findings of one case as Problems, each message once (two checks may word the same fault alike)."""
    errors = [Problem("error", case, m) for m in dict.fromkeys(findings.errors)]
    return errors + [Problem("warning", case, m) for m in dict.fromkeys(findings.warnings)]


def _discover(config: RunConfig, cohort: Findings, found: dict[str, Findings]) -> dict[str, SubjectFiles]:
    """``{case: files}`` of the subjects whose files were found; ``found`` gets one Findings per kept subject.

    A subject whose layout is broken (a phase file missing, masks for some phases only) is recorded in its own
    Findings and left out of the returned files, so the other subjects are still checked; a missing data root is
    recorded in ``cohort``.
    """
    data = config.data
    if data.manifest is not None:
        return _manifest_subjects(config, cohort, found)
    subjects = data.subjects
    if subjects is None and data.synthetic is not None:
        subjects = [f"Subject_{i:02d}" for i in range(1, data.synthetic.cases + 1)]
    ids = cohort.attempt(discover_subjects, data.root, subjects, data.exclude) or []
    files_of: dict[str, SubjectFiles] = {}
    for case in ids:
        found[case] = Findings()
        files = found[case].attempt(find_subject_files, data.root, case)
        if files is not None:
            files_of[case] = files
    return files_of


def _manifest_subjects(config: RunConfig, cohort: Findings, found: dict[str, Findings]) -> dict[str, SubjectFiles]:
    """Like ``_discover`` for ``data.manifest``: each case's problems recorded under it, the manifest's own (rows,
    columns) under the cohort.

    ``vent.io.manifest.read_manifest`` raises every problem of the manifest at once and returns no case, so this
    reads it case by case with that module's row parsers.
    """
    from vent.io import manifest as manifest_io

    data = config.data
    path = Path(data.manifest)
    if not manifest_io.is_manifest(path):
        cohort.attempt(manifest_io.read_manifest, path)  # its message says what is wrong with the path
        return {}
    reader = manifest_io._cases_from_csv if path.suffix.lower() == ".csv" else manifest_io._cases_from_yaml
    parsed = cohort.attempt(reader, path)
    if parsed is None:
        return {}
    entries, problems = parsed
    for problem in problems:
        cohort.error(f"manifest {path}: {problem}")
    if not entries:
        cohort.error(f"manifest {path} lists no case; add one row per phase image")
        return {}
    files_of: dict[str, SubjectFiles] = {}
    for case in choose_subjects(list(entries), data.subjects, data.exclude, str(path)):
        found[case] = Findings()
        own: list[str] = []
        files = manifest_io._subject(path, case, entries[case], own)
        for problem in own:
            found[case].error(f"manifest {path}: {problem}")
        if files is not None and not own:
            files_of[case] = files
    return files_of


def _check_subject(files: SubjectFiles, config: RunConfig, sha256: Callable[[Path], str], findings: Findings) -> None:
    """One subject's header checks (its own phases: the cohort's count is checked after) and voxel checks.

    A file whose header cannot be read is named once: the voxel pass's "could not be read" for it is dropped.
    """
    settings = config.preprocess
    n_before = len(findings.errors)
    check_cohort({files.case_id: files}, sha256, segmentation=settings.segmentation, findings=findings)
    unreadable = [
        f"{path} could not be read" for path in files.all_files()
        if any(f"{path} could not be read" in error for error in findings.errors[n_before:])
    ]
    voxels = Findings()
    check_subject_voxels(files, voxels, min_voxels=settings.min_lung_voxels)
    findings.errors += [e for e in voxels.errors if not any(named in e for named in unreadable)]
    findings.warnings += voxels.warnings


def _check_phase_counts(
    subjects: dict[str, SubjectFiles], found: dict[str, Findings]
) -> tuple[int | None, dict[int, int]]:
    """Name each subject whose phase count is not the cohort's most common one; return that count and the counts.

    The most common count is the expected one (a tie goes to the count met first, in case order), so one odd
    subject is named, not every other subject.
    """
    counts = Counter(len(files.phase_images) for files in subjects.values())
    if not counts:
        return None, {}
    expected, n_expected = counts.most_common(1)[0]
    for case, files in subjects.items():
        n = len(files.phase_images)
        if n != expected:
            found[case].error(
                f"{case} has {n} phases ({files.phase_images[0].parent}) but {n_expected} of {len(subjects)} "
                f"subjects have {expected}; a cohort must share one phase count: add or remove phase images, or "
                f"leave {case} out with data.exclude and a reason"
            )
    return expected, dict(counts)


def _check_duplicates(
    subjects: dict[str, SubjectFiles], sha256: Callable[[Path], str], found: dict[str, Findings]
) -> None:
    """Every subject that repeats an earlier one (``check_duplicate_subjects``), named under the later case."""
    kept: dict[str, SubjectFiles] = {}
    for case, files in subjects.items():
        try:
            check_duplicate_subjects({**kept, case: files}, sha256)
        except DataError as error:
            found[case].error(str(error))
        else:
            kept[case] = files


def _content_hasher(sha256: Callable[[Path], str]) -> Callable[[Path], str]:
    """``sha256`` cached per path (the duplicate check asks for each first phase more than once); a folder (a DICOM
    series) is hashed through its files by ``vent.io.hashing.file_sha256``."""
    return functools.cache(sha256)
