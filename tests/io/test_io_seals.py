"""Content seals: a file is current only when its bytes are the ones vent wrote (vent.io.seals)."""

import os
import shutil

import h5py
import numpy as np

from vent.io.atomic import atomic_path, write_json
from vent.io.seals import read_seal, seal_path, sealed_files, verify_artifact


def _case_file(path, case_id):
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("x", data=np.arange(1000, dtype=np.float32))
        handle.attrs["case_id"] = case_id


def test_written_file_verifies_and_its_seal_records_size_and_hash(tmp_path):
    target = write_json(tmp_path / "a.json", {"v": 1})
    seal = read_seal(target)
    assert seal["size"] == target.stat().st_size and len(seal["sha256"]) == 64
    assert verify_artifact(target) is None


def test_truncated_file_is_not_current(tmp_path):
    target = tmp_path / "case.h5"
    _case_file(target, "A")
    with open(target, "r+b") as handle:
        handle.truncate(target.stat().st_size // 2)
    assert "truncated or replaced" in verify_artifact(target)


def test_same_size_edit_is_found_by_the_hash(tmp_path):
    target = write_json(tmp_path / "a.json", {"v": 1})
    target.write_text(target.read_text().replace("1", "2"))  # same size, other bytes
    assert "SHA-256 differs" in verify_artifact(target)


def test_touch_keeps_a_file_current_and_refreshes_the_seal(tmp_path):
    target = write_json(tmp_path / "a.json", {"v": 1})
    before = read_seal(target)["stat"]
    os.utime(target, ns=(1, 1))
    assert verify_artifact(target) is None
    assert read_seal(target)["stat"] != before  # the next check is a stat, not a hash


def test_another_cases_file_copied_into_place_with_its_seal_is_refused(tmp_path):
    _case_file(tmp_path / "A.h5", "A")
    _case_file(tmp_path / "B.h5", "B")
    shutil.copy(tmp_path / "B.h5", tmp_path / "A.h5")
    shutil.copy(seal_path(tmp_path / "B.h5"), seal_path(tmp_path / "A.h5"))
    assert verify_artifact(tmp_path / "A.h5") is None  # the bytes are B's sealed bytes ...
    assert "holds case 'B', not 'A'" in verify_artifact(tmp_path / "A.h5", case_id="A")  # ... but not A's case


def test_missing_file_and_missing_seal(tmp_path):
    assert verify_artifact(tmp_path / "nope.h5") == "missing"
    (tmp_path / "plain.txt").write_text("not written by vent")
    assert "no content seal" in verify_artifact(tmp_path / "plain.txt")
    target = write_json(tmp_path / "a.json", {"v": 1})
    seal_path(target).write_text("{broken")
    assert "no content seal" in verify_artifact(target)


def test_sealed_files_lists_what_was_written_with_a_seal(tmp_path):
    write_json(tmp_path / "a.json", {"v": 1})
    _case_file(tmp_path / "sub" / "B.h5", "B")
    (tmp_path / "plain.txt").write_text("no seal")
    assert sealed_files(tmp_path) == [tmp_path / "a.json", tmp_path / "sub" / "B.h5"]
