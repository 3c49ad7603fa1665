"""Atomic writes never leave a truncated file under the final name."""

import pytest

from vent.io.atomic import atomic_path, clean_temporaries, write_json
from vent.io.seals import seal_path


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "a" / "x.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt"
        tmp.write_text("hello")
        assert not target.exists()
    assert target.read_text() == "hello"
    assert sorted(target.parent.iterdir()) == [seal_path(target), target]  # the file and its content seal


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "x.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{broken")
            raise RuntimeError("crash while writing")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.json.seal.json", "x.json"]


def test_clean_temporaries(tmp_path):
    (tmp_path / ".tmp-1234abcd-x.h5").write_text("partial")
    (tmp_path / "keep.h5").write_text("done")
    assert clean_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.h5"]
