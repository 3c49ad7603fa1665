"""Tests of patient-grouped cross-validation folds (vent.cv)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from vent.cv import Fold, check_fold_sizes, load_folds, make_patient_folds, save_folds, validate_folds
from vent.errors import ArtifactError, ConfigError
from vent.io.seals import SEAL_SUFFIX

CASES = [f"Subject_{i:02d}" for i in range(1, 24)]


@pytest.mark.parametrize("n_cases", [5, 6, 23, 45])
def test_folds_are_grouped_by_patient(n_cases: int) -> None:
    cases = CASES[:n_cases] if n_cases <= len(CASES) else [f"P{i}" for i in range(n_cases)]
    folds = make_patient_folds(cases, n_folds=5, val_fraction=0.2, seed=0)
    assert [f.index for f in folds] == [0, 1, 2, 3, 4]
    test_cases = [c for f in folds for c in f.test]
    assert sorted(test_cases) == sorted(cases)  # each case a test case exactly once
    sizes = [len(f.test) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for fold in folds:
        train, val, test = set(fold.train), set(fold.val), set(fold.test)
        assert not train & test and not train & val and not val & test
        assert train | val | test == set(cases)
        assert len(val) >= 1 and len(train) >= 1
        assert len(val) == max(1, round(0.2 * (n_cases - len(test))))


def test_folds_are_deterministic_for_a_seed_and_independent_of_input_order() -> None:
    first = make_patient_folds(CASES, seed=3)
    assert make_patient_folds(list(reversed(CASES)), seed=3) == first
    assert make_patient_folds(CASES, seed=4) != first


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ConfigError, match="n_folds"):
        make_patient_folds(CASES[:4], n_folds=5)
    with pytest.raises(ConfigError, match="unique"):
        make_patient_folds(CASES[:6] + CASES[:1])
    with pytest.raises(ConfigError, match="val_fraction"):
        make_patient_folds(CASES, val_fraction=1.0)
    with pytest.raises(ConfigError, match="cv.val_fraction must be in \\(0, 1\\)"):
        make_patient_folds(CASES[:10], val_fraction=0.0)  # no silent folds without validation patients


@pytest.mark.parametrize(("n_cases", "n_folds"), [(3, 3), (4, 2), (4, 4), (5, 2), (6, 3), (7, 5), (10, 10)])
@pytest.mark.parametrize("val_fraction", [0.01, 0.2, 0.99])
def test_every_fold_has_a_validation_and_a_training_patient(n_cases: int, n_folds: int, val_fraction: float) -> None:
    for fold in make_patient_folds(CASES[:n_cases], n_folds=n_folds, val_fraction=val_fraction):
        assert len(fold.val) >= 1 and len(fold.train) >= 1


@pytest.mark.parametrize(("n_cases", "n_folds", "advice"), [(3, 2, "at least 3"), (2, 2, "add patients")])
def test_a_cohort_too_small_for_validation_patients_is_a_config_error(n_cases: int, n_folds: int, advice: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_patient_folds(CASES[:n_cases], n_folds=n_folds, val_fraction=0.2)
    message = str(caught.value)
    assert f"{n_cases} patients" in message and "cv.n_folds" in message and "cv.val_fraction" in message
    assert advice in message
    with pytest.raises(ConfigError, match="cv.n_folds"):
        check_fold_sizes(n_cases, n_folds, 0.2)
    check_fold_sizes(6, 3, 0.2)  # feasible: no error


def test_validate_folds_rejects_a_fold_without_validation_patients() -> None:
    folds = make_patient_folds(CASES[:12], seed=1)
    folds[2].train += folds[2].val
    folds[2].val = []
    with pytest.raises(ArtifactError, match="fold 2 has no validation case"):
        validate_folds(folds, CASES[:12])


def _broken(folds: list[Fold], change) -> list[Fold]:
    folds = copy.deepcopy(folds)
    change(folds)
    return folds


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f[0].test.append(f[1].test[0]), "test case in folds"),
        (lambda f: f[0].train.append(f[0].test[0]), "both train and test"),
        (lambda f: f[0].train.append(f[0].val[0]), "both train and val"),
        (lambda f: f[0].val.append(f[0].test[0]), "both val and test"),
        (lambda f: f[2].train.append("Stranger"), "unknown case"),
        (lambda f: f[1].train.pop(), "missing from fold 1"),
        (lambda f: f[3].train.append(f[3].train[0]), "twice"),
        (lambda f: setattr(f[4], "index", 0), "fold indices"),
    ],
)
def test_validate_folds_catches_each_inconsistency(change, message: str) -> None:
    folds = make_patient_folds(CASES[:12], seed=1)
    validate_folds(folds, CASES[:12])
    with pytest.raises(ArtifactError, match=message):
        validate_folds(_broken(folds, change), CASES[:12])


def test_validate_folds_catches_a_case_never_tested() -> None:
    folds = make_patient_folds(CASES[:12], seed=1)
    moved = folds[0].test.pop()
    folds[0].train.append(moved)
    with pytest.raises(ArtifactError, match=f"case {moved} is a test case in no fold"):
        validate_folds(folds, CASES[:12])
    with pytest.raises(ArtifactError, match="missing from fold"):
        validate_folds(make_patient_folds(CASES[:12]), CASES[:13])


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    folds = make_patient_folds(CASES, seed=2)
    path = tmp_path / "splits" / "folds.json"
    save_folds(path, folds, {"seed": 2, "n_folds": 5})
    loaded, meta = load_folds(path)
    assert loaded == folds and meta == {"seed": 2, "n_folds": 5}
    assert [p.name for p in path.parent.iterdir() if not p.name.endswith(SEAL_SUFFIX)] == ["folds.json"]
    with pytest.raises(ArtifactError, match="does not exist"):
        load_folds(tmp_path / "missing.json")
    path.write_text(json.dumps({"format": 1, "folds": [{"index": 0}]}))
    with pytest.raises(ArtifactError, match="malformed"):
        load_folds(path)
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="malformed"):
        load_folds(path)
