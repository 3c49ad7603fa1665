"""Patient-grouped cross-validation folds, written once and reused (after nnU-Net's ``splits_final.json``).

Every patient is a test patient in exactly one fold; the validation patients (for early stopping) are drawn from the
remaining, training patients of that fold. Voxels of one patient never appear on two sides of a split.

File format (JSON): ``{"format": 1, "meta": {...}, "folds": [{"index": 0, "train": [...], "val": [...],
"test": [...]}, ...]}``.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vent.errors import ArtifactError, ConfigError
from vent.io.atomic import write_json

logger = logging.getLogger(__name__)

FOLDS_FORMAT = 1


@dataclass
class Fold:
    """One cross-validation fold: lists of case ids.

    Attributes:
        index: Fold number, 0-based.
        train: Patients whose voxels train the model.
        val: Patients for early stopping (drawn from the non-test patients).
        test: Held-out patients evaluated with this fold's model.
    """

    index: int
    train: list[str]
    val: list[str]
    test: list[str]

    def all_cases(self) -> list[str]:
        """Every patient of the fold: training, validation and test."""
        return [*self.train, *self.val, *self.test]


def check_fold_sizes(n_cases: int, n_folds: int, val_fraction: float) -> None:
    """Check that every fold can have >= 1 validation and >= 1 training patient, before any split or compute.

    The largest test group holds ceil(n / K) patients, so the smallest fold keeps n_rest = n - ceil(n / K) non-test
    patients; early stopping on validation patients needs n_rest >= 2 (one to train, one to validate) and
    val_fraction > 0. Never falls back to early stopping on training patients.

    Args:
        n_cases: Number of patients in the cohort.
        n_folds: ``cv.n_folds`` (K).
        val_fraction: ``cv.val_fraction``.

    Raises:
        ConfigError: Naming cv.n_folds / cv.val_fraction, the cohort size and what to change.
    """
    if not 2 <= n_folds <= n_cases:
        raise ConfigError(
            f"cv.n_folds must be between 2 and the number of patients ({n_cases}); got {n_folds}"
        )
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(
            f"cv.val_fraction must be in (0, 1) so every fold has validation patients for early stopping; "
            f"got {val_fraction}"
        )
    n_rest = n_cases - math.ceil(n_cases / n_folds)
    if n_rest < 2:
        feasible = [k for k in range(2, n_cases + 1) if n_cases - math.ceil(n_cases / k) >= 2]
        advice = (
            f"set cv.n_folds to at least {feasible[0]}"
            if feasible
            else "add patients (at least 3 are needed)"
        )
        raise ConfigError(
            f"with {n_cases} patients and cv.n_folds = {n_folds} (cv.val_fraction = {val_fraction:g}) a fold keeps "
            f"only {n_rest} non-test patient(s), so it cannot have both a training and a validation patient for "
            f"early stopping; {advice}"
        )


def make_patient_folds(
    case_ids: Sequence[str], n_folds: int = 5, val_fraction: float = 0.2, seed: int = 0
) -> list[Fold]:
    """Split patients into ``n_folds`` folds, seeded; the result does not depend on the order of ``case_ids``.

    The sorted case ids are permuted with the seed and cut into ``n_folds`` test groups of near-equal size (sizes
    differ by at most one). For fold k the n_rest other patients are split into validation,
    n_val = min(max(1, round(val_fraction * n_rest)), n_rest - 1), and training (the rest). Every fold therefore has
    at least one validation and one training patient; a cohort too small for that is an error
    (:func:`check_fold_sizes`), never a silent early stop on training patients.

    Args:
        case_ids: Unique patient ids.
        n_folds: Number of folds, 2 <= n_folds <= number of patients.
        val_fraction: Fraction of each fold's non-test patients used for validation, in (0, 1).
        seed: Random seed.

    Returns:
        ``n_folds`` :class:`Fold` objects with sorted id lists.

    Raises:
        ConfigError: Duplicate ids, n_folds / val_fraction out of range, or a fold left without a validation patient.
    """
    cases = sorted(str(c) for c in case_ids)
    duplicates = sorted({c for c in cases if cases.count(c) > 1})
    if duplicates:
        raise ConfigError(f"case ids must be unique; repeated: {duplicates}")
    check_fold_sizes(len(cases), n_folds, val_fraction)
    rng = np.random.default_rng(seed)
    shuffled = [cases[i] for i in rng.permutation(len(cases))]
    test_groups = [list(group) for group in np.array_split(np.array(shuffled, dtype=object), n_folds)]
    folds = []
    for index, test in enumerate(test_groups):
        rest = [c for c in shuffled if c not in set(test)]
        n_val = min(max(1, round(val_fraction * len(rest))), len(rest) - 1)
        fold_rng = np.random.default_rng([seed, index, zlib.crc32(b"val")])
        val = [rest[i] for i in fold_rng.choice(len(rest), n_val, replace=False)]
        train = [c for c in rest if c not in set(val)]
        folds.append(Fold(index=index, train=sorted(train), val=sorted(val), test=sorted(test)))
    validate_folds(folds, cases)
    logger.info("split %d patients into %d folds (seed %d, val_fraction %.2f)", len(cases), n_folds, seed, val_fraction)
    return folds


def validate_folds(folds: Sequence[Fold], case_ids: Sequence[str]) -> None:
    """Check that folds form a patient-grouped split of exactly ``case_ids``.

    Checks: folds numbered 0..K-1; no unknown case; no case listed twice in a fold or in two of train/val/test of one
    fold; every case in every fold (train, val or test); every case a test case in exactly one fold; non-empty
    train, validation and test lists (early stopping never falls back to training patients).

    Args:
        folds: The folds to check.
        case_ids: The cohort's patient ids.

    Raises:
        ArtifactError: Naming the first problems found (case and fold).
    """
    known = {str(c) for c in case_ids}
    problems: list[str] = []
    if not folds:
        problems.append("there are no folds")
    indices = [fold.index for fold in folds]
    if sorted(indices) != list(range(len(folds))):
        problems.append(f"fold indices must be 0..{len(folds) - 1} without gaps or repeats; got {indices}")
    test_folds: dict[str, list[int]] = {c: [] for c in known}
    for fold in folds:
        parts = {"train": fold.train, "val": fold.val, "test": fold.test}
        for part, members in parts.items():
            unknown = sorted(set(members) - known)
            if unknown:
                problems.append(f"fold {fold.index} {part} has unknown case(s) {unknown}")
            repeated = sorted({c for c in members if list(members).count(c) > 1})
            if repeated:
                problems.append(f"fold {fold.index} {part} lists case(s) {repeated} twice")
        for first, second in (("train", "test"), ("train", "val"), ("val", "test")):
            both = sorted(set(parts[first]) & set(parts[second]))
            if both:
                problems.append(f"case(s) {both} are in both {first} and {second} of fold {fold.index}")
        absent = sorted(known - set(fold.train) - set(fold.val) - set(fold.test))
        if absent:
            problems.append(f"case(s) {absent} are missing from fold {fold.index} (not in train, val or test)")
        if not fold.train:
            problems.append(f"fold {fold.index} has no training case")
        if not fold.val:
            problems.append(f"fold {fold.index} has no validation case (early stopping needs one)")
        if not fold.test:
            problems.append(f"fold {fold.index} has no test case")
        for case in fold.test:
            if case in test_folds:
                test_folds[case].append(fold.index)
    for case, in_folds in sorted(test_folds.items()):
        if len(in_folds) == 0:
            problems.append(f"case {case} is a test case in no fold")
        elif len(in_folds) > 1:
            problems.append(f"case {case} is a test case in folds {in_folds}")
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ArtifactError(f"invalid cross-validation folds: {shown}. Delete the folds file to re-split.")


def save_folds(path: str | Path, folds: Sequence[Fold], meta: dict[str, Any]) -> None:
    """Write folds and metadata (e.g. seed, n_folds, config hash) as JSON, atomically.

    Args:
        path: Destination ``.json`` file.
        folds: The folds.
        meta: JSON-serialisable metadata recorded with them.
    """
    document = {"format": FOLDS_FORMAT, "meta": meta, "folds": [asdict(fold) for fold in folds]}
    write_json(Path(path), document)


def load_folds(path: str | Path) -> tuple[list[Fold], dict[str, Any]]:
    """Read folds written by :func:`save_folds`.

    Args:
        path: The ``.json`` file.

    Returns:
        (folds, meta).

    Raises:
        ArtifactError: Missing, unreadable or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"folds file {path} does not exist; run the split stage first")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != FOLDS_FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {FOLDS_FORMAT}")
        folds = [
            Fold(
                index=int(f["index"]),
                train=[str(c) for c in f["train"]],
                val=[str(c) for c in f["val"]],
                test=[str(c) for c in f["test"]],
            )
            for f in document["folds"]
        ]
        meta = dict(document.get("meta", {}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ArtifactError(f"folds file {path} is malformed ({error}); delete it to re-split") from error
    return folds, meta
