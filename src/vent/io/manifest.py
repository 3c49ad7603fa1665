"""Cohorts in any folder layout, listed in a manifest (CSV or YAML) instead of the VAMPIRE layout.

A manifest names, per case, the ordered phase images and optionally their lung masks, an average CT and its mask, a
reference ventilation image (RefVI) and its lung mask, and the modality of the RefVI. Every image is any file
SimpleITK reads (``.mha``, ``.nii.gz``, ``.nrrd`` ...) or a folder holding one DICOM series. Relative paths are
resolved against the manifest's folder, so a manifest travels with its data.

CSV (one row per file; a spreadsheet writes it)::

    case_id,kind,phase,image,mask,modality
    P01,phase,1,P01/ct_00.nii.gz,P01/lung_00.nii.gz,spect
    P01,phase,2,P01/ct_10.nii.gz,P01/lung_10.nii.gz,spect
    ...
    P01,average,,P01/ct_avg.nii.gz,P01/lung_avg.nii.gz,
    P01,refvi,,P01/spect.nii.gz,P01/spect_lung.nii.gz,

``case_id``, ``phase`` and ``image`` are required columns. ``kind`` is ``phase`` (``phase`` gives its number; the
phases are ordered by it, not by the rows), ``average`` or ``refvi``; ``phase``, ``mask`` and ``modality`` may be
empty on the other rows; ``kind`` may be left out when every row is a phase. A value holding a comma is quoted. A
case id names the case's output files, so it holds no ``/`` or ``\\``. YAML::

    cases:
      - id: P01
        modality: spect
        phases: [P01/ct_00/, P01/ct_10/, ...]          # in breathing order; DICOM folders or files
        phase_masks: [P01/lung_00.nii.gz, ...]        # optional: all phases or none
        average_image: P01/ct_avg.nii.gz              # optional
        average_mask: P01/lung_avg.nii.gz             # optional
        refvi: P01/spect.nii.gz                       # optional (vent predict needs none)
        refvi_mask: P01/spect_lung.nii.gz             # optional

A case's masks are all its phases' or none (then preprocessing segments them, ``preprocess.segmentation``). Every
problem of the manifest is collected and reported in one error (missing columns, unknown kinds, duplicate or missing
phases, paths that do not exist), naming the manifest and the row.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

from vent.errors import DataError
from vent.io.vampire import SubjectFiles

__all__ = ["MANIFEST_SUFFIXES", "CSV_COLUMNS", "is_manifest", "read_manifest", "write_manifest_csv"]

MANIFEST_SUFFIXES = (".csv", ".yaml", ".yml")
CSV_COLUMNS = ("case_id", "kind", "phase", "image", "mask", "modality")
_REQUIRED_CSV = ("case_id", "phase", "image")
_KINDS = ("phase", "average", "refvi")
_YAML_KEYS = ("id", "modality", "phases", "phase_masks", "average_image", "average_mask", "refvi", "refvi_mask")


def is_manifest(path: Path) -> bool:
    """Whether ``path`` is a manifest file (by its suffix)."""
    return Path(path).is_file() and Path(path).suffix.lower() in MANIFEST_SUFFIXES


def read_manifest(path: Path) -> dict[str, SubjectFiles]:
    """``{case_id: SubjectFiles}`` in manifest order (format in the module docstring).

    Raises:
        DataError: listing every problem found, each naming the manifest and the row or case.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; set data.manifest to a CSV or YAML file listing the cases")
    if path.suffix.lower() == ".csv":
        cases, problems = _cases_from_csv(path)
    elif path.suffix.lower() in (".yaml", ".yml"):
        cases, problems = _cases_from_yaml(path)
    else:
        raise DataError(f"manifest {path}: use a .csv or .yaml file (format in `vent.io.manifest`)")
    subjects: dict[str, SubjectFiles] = {}
    for case_id, entry in cases.items():
        subject = _subject(path, case_id, entry, problems)
        if subject is not None:
            subjects[case_id] = subject
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise DataError(f"manifest {path} has {len(problems)} problem(s):\n{listed}")
    if not subjects:
        raise DataError(
            f"manifest {path} lists no case; add one row per phase image (columns {', '.join(CSV_COLUMNS)})"
        )
    return subjects


def _read_csv_rows(path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    """The CSV's rows as ``(line number, {column: stripped value})`` after checking its header, and the problems.

    The line number is the reader's (blank lines and quoted line breaks counted), so a message points at the line a
    spreadsheet or editor shows. A row with more values than columns (a path with an unquoted comma) is a problem:
    its extra values would otherwise be dropped without a word.
    """
    problems: list[str] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in _REQUIRED_CSV if c not in columns]
        unknown = [c for c in columns if c not in CSV_COLUMNS]
        if missing or unknown:
            raise DataError(
                f"manifest {path}: "
                + "; ".join(
                    ([f"missing column(s) {', '.join(missing)}"] if missing else [])
                    + ([f"unknown column(s) {', '.join(unknown)}"] if unknown else [])
                )
                + f". The columns are {', '.join(CSV_COLUMNS)} ({', '.join(_REQUIRED_CSV)} required): add the "
                "column(s) to the header row, or rename the misspelt ones"
            )
        rows = []
        for row in reader:
            if row.get(None):
                problems.append(
                    f"row {reader.line_num}: {len(row[None])} value(s) more than the {len(columns)} columns "
                    f"({row[None]!r}); quote a value that holds a comma"
                )
            rows.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}))
    return rows, problems


def _cases_from_csv(path: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Rows grouped by case into the YAML entry form, and the problems found."""
    rows, problems = _read_csv_rows(path)
    cases: dict[str, dict[str, Any]] = {}
    phases: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for line, row in rows:
        where = f"row {line}"
        case_id, kind = row.get("case_id", ""), (row.get("kind") or "phase").lower()
        if not case_id or not row.get("image"):
            problems.append(f"{where}: case_id and image must not be empty")
            continue
        entry = cases.setdefault(case_id, {"id": case_id})
        if row.get("modality"):
            if entry.get("modality") not in (None, row["modality"]):
                problems.append(f"{where}: case {case_id} has modality {entry['modality']!r} on an earlier row")
            entry["modality"] = row["modality"]
        if kind not in _KINDS:
            problems.append(f"{where}: kind {kind!r} is not one of {', '.join(_KINDS)}")
        elif kind == "phase":
            try:
                number = int(row.get("phase", ""))
            except ValueError:
                problems.append(f"{where}: phase {row.get('phase')!r} of case {case_id} is not a whole number")
                continue
            phases[case_id].append((number, row["image"], row.get("mask", "")))
        else:
            image_key, mask_key = ("average_image", "average_mask") if kind == "average" else ("refvi", "refvi_mask")
            if image_key in entry:
                problems.append(f"{where}: case {case_id} has a second {kind} row")
            entry[image_key] = row["image"]
            if row.get("mask"):
                entry[mask_key] = row["mask"]
    for case_id, listed in phases.items():
        _order_phases(cases[case_id], listed, problems)
    return cases, problems


def _order_phases(entry: dict[str, Any], listed: list[tuple[int, str, str]], problems: list[str]) -> None:
    """Set a CSV case's ``phases``, ``phase_numbers`` and ``phase_masks`` in the order of their phase numbers."""
    numbers = [n for n, _, _ in listed]
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        problems.append(f"case {entry['id']}: phase number(s) {repeated} listed twice")
    listed.sort()
    entry["phases"] = [image for _, image, _ in listed]
    entry["phase_numbers"] = [n for n, _, _ in listed]
    masks = [mask for _, _, mask in listed]
    if any(masks):
        entry["phase_masks"] = masks


def _cases_from_yaml(path: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The ``cases:`` entries by case id (keys checked, ids unique), and the problems found."""
    from vent.config import read_yaml_mapping

    raw = read_yaml_mapping(path, "manifest")
    entries = raw.get("cases")
    if not isinstance(entries, list):
        raise DataError(f"manifest {path}: expected a top-level 'cases:' list of cases (keys {', '.join(_YAML_KEYS)})")
    cases: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    if set(raw) != {"cases"}:
        problems.append(f"unknown top-level key(s) {', '.join(sorted(map(str, set(raw) - {'cases'})))} (only 'cases')")
    for number, entry in enumerate(entries, start=1):
        where = f"case #{number}"
        if not isinstance(entry, dict) or not entry.get("id"):
            problems.append(f"{where}: each case is a mapping with an 'id' and 'phases'")
            continue
        unknown = sorted(set(entry) - set(_YAML_KEYS))
        if unknown:
            problems.append(
                f"{where} ({entry['id']}): unknown key(s) {', '.join(unknown)} (keys: {', '.join(_YAML_KEYS)})"
            )
        case_id = str(entry["id"])
        if case_id in cases:
            problems.append(f"{where}: case id {case_id!r} is listed twice; give each case its own id")
            continue
        cases[case_id] = dict(entry)
    return cases, problems


def _resolve(base: Path, value: Any) -> Path:
    candidate = Path(str(value)).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate).resolve()


def _paths(value: Any, case_id: str, key: str, problems: list[str]) -> list[str]:
    """A YAML list of paths (an empty CSV mask stays ""); a problem and [] when it is not a list of strings."""
    if value is None or value == []:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"case {case_id}: {key} must be a list of paths, got {value!r}")
        return []
    return value


def _subject(manifest: Path, case_id: str, entry: dict[str, Any], problems: list[str]) -> SubjectFiles | None:
    """One case's SubjectFiles, appending to ``problems`` (missing phases, unequal mask count, absent paths)."""
    base = manifest.parent
    if case_id in (".", "..") or any(c in case_id for c in "/\\"):
        problems.append(f"case id {case_id!r} names the case's output files (preprocess/<case>.h5); use no / or \\")
    phases = _paths(entry.get("phases"), case_id, "phases", problems)
    if not phases:
        problems.append(f"case {case_id}: no phase images listed")
        return None
    masks = _paths(entry.get("phase_masks"), case_id, "phase_masks", problems)
    if masks and (len(masks) != len(phases) or not all(masks)):
        problems.append(
            f"case {case_id}: {len([m for m in masks if m])} phase mask(s) for {len(phases)} phases; give a mask for "
            "every phase or for none (then the lungs are segmented)"
        )
        masks = []
    files = {
        "phase_images": tuple(_resolve(base, p) for p in phases),
        "phase_masks": tuple(_resolve(base, m) for m in masks),
        **{key: _resolve(base, entry[key]) if entry.get(key) else None
           for key in ("average_image", "average_mask", "refvi", "refvi_mask")},
    }
    absent = [p for p in [*files["phase_images"], *files["phase_masks"]] if not p.exists()]
    absent += [p for key in ("average_image", "average_mask", "refvi", "refvi_mask")
               if (p := files[key]) is not None and not p.exists()]
    for path in absent:
        problems.append(f"case {case_id}: {path} does not exist")
    if files["average_mask"] is not None and files["average_image"] is None:
        problems.append(f"case {case_id}: an average mask without an average image")
    numbers = entry.get("phase_numbers") or list(range(1, len(phases) + 1))
    return SubjectFiles(
        case_id=case_id,
        folder=files["phase_images"][0].parent,
        phase_images=files["phase_images"],
        phase_masks=files["phase_masks"],
        average_image=files["average_image"],
        average_mask=files["average_mask"],
        vent_image=files["refvi"],
        vent_mask=files["refvi_mask"],
        phase_numbers=tuple(int(n) for n in numbers),
        modality=str(entry["modality"]) if entry.get("modality") else None,
        source=manifest,
    )


def write_manifest_csv(path: Path, subjects: list[SubjectFiles]) -> Path:
    """Write ``subjects`` as a CSV manifest (paths relative to the manifest's folder where they lie below it).

    Values are written by the ``csv`` module, so a path holding a comma or a quote is quoted and reads back whole.
    """
    from vent.io.atomic import write_text

    path = Path(path)
    base = path.parent.resolve()

    def shown(file: Path | None) -> str:
        if file is None:
            return ""
        file = Path(file).resolve()
        return file.relative_to(base).as_posix() if file.is_relative_to(base) else str(file)

    rows: list[tuple[object, ...]] = [CSV_COLUMNS]
    for files in subjects:
        modality = files.modality or ""
        for index, image in enumerate(files.phase_images):
            mask = files.phase_masks[index] if files.phase_masks else None
            rows.append((files.case_id, "phase", files.phase_numbers[index], shown(image), shown(mask), modality))
        if files.average_image is not None:
            rows.append((files.case_id, "average", "", shown(files.average_image), shown(files.average_mask), ""))
        if files.vent_image is not None:
            rows.append((files.case_id, "refvi", "", shown(files.vent_image), shown(files.vent_mask), ""))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    write_text(path, buffer.getvalue())
    return path
