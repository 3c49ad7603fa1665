"""Tests of the cohort writer: VAMPIRE layout, byte-identical extension, resume after a kill, argument errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vent.errors import ConfigError, DataError
from vent.synth import make_synthetic_subject, write_synthetic_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, list[Path], list[str]]:
    out = tmp_path_factory.mktemp("cohort")
    messages: list[str] = []
    folders = write_synthetic_cohort(out, n_cases=2, modality="pet", size="tiny", seed=7, progress=messages.append)
    return out, folders, messages


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_vampire_layout_and_file_names(cohort):
    out, folders, _ = cohort
    assert [f.name for f in folders] == ["Subject_01", "Subject_02"]
    assert sorted(p.name for p in out.iterdir()) == ["Subject_01", "Subject_02"]
    expected = {f"CT/PhaseImage_{k:02d}.mha" for k in range(1, 6)} | {f"CT/PhaseMask_{k:02d}.mha" for k in range(1, 6)}
    expected |= {"CT/AverageImage.mha", "CT/AverageMask.mha", "GT/VentImage.mha", "GT/VentMask.mha",
                 "synthetic_truth.json", "synthetic_truth/DefectMask.mha", "synthetic_truth/LocalVentilation.mha",
                 ".complete"}
    for folder in folders:
        assert set(_tree_bytes(folder)) == expected  # no temporary files left behind


def test_written_images_equal_in_memory_subject(cohort):
    _, folders, _ = cohort
    subject = make_synthetic_subject(2, "pet", "tiny", 7)
    ct = sitk.ReadImage(str(folders[1] / "CT" / "PhaseImage_03.mha"))
    assert ct.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(subject.phases[2]))
    np.testing.assert_allclose(ct.GetOrigin(), subject.phases[2].GetOrigin())
    vent = sitk.ReadImage(str(folders[1] / "GT" / "VentImage.mha"))
    np.testing.assert_allclose(vent.GetSpacing(), subject.vent_image.GetSpacing())
    truth = json.loads((folders[1] / "synthetic_truth.json").read_text())
    assert truth["seed"] == 7 and truth["n_phases"] == 5 and truth["inhale_phase"] == 3
    assert len(truth["defects"]) == len(subject.defects)


def test_progress_reports_each_subject_and_nothing_is_printed(tmp_path, capsys):
    messages: list[str] = []
    write_synthetic_cohort(tmp_path / "c", n_cases=1, modality="pet", size="tiny", seed=3, progress=messages.append)
    assert len(messages) == 1 and "Subject_01" in messages[0]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_more_cases_leave_first_subjects_byte_identical(cohort, tmp_path):
    _, folders, _ = cohort
    bigger = write_synthetic_cohort(tmp_path / "bigger", n_cases=3, modality="pet", size="tiny", seed=7)
    for old, new in zip(folders, bigger):
        assert _tree_bytes(old) == _tree_bytes(new)


def test_second_run_skips_and_killed_run_resumes(tmp_path):
    out = tmp_path / "resume"
    folders = write_synthetic_cohort(out, n_cases=2, modality="spect", size="tiny", seed=1)
    reference = [_tree_bytes(f) for f in folders]
    first_mtime = (folders[0] / "CT" / "PhaseImage_01.mha").stat().st_mtime_ns

    messages: list[str] = []
    write_synthetic_cohort(out, n_cases=2, modality="spect", size="tiny", seed=1, progress=messages.append)
    assert all("skipped" in m for m in messages)

    # Simulate a run killed while writing Subject_02: no marker, a truncated file, a stray temporary file.
    (folders[1] / ".complete").unlink()
    (folders[1] / "CT" / "PhaseImage_07.mha").write_bytes(b"truncated")
    (folders[1] / "CT" / ".tmp-0a1b2c3d-PhaseImage_08.mha").write_bytes(b"partial")  # vent.io.atomic naming
    time.sleep(0.01)
    messages.clear()
    write_synthetic_cohort(out, n_cases=2, modality="spect", size="tiny", seed=1, progress=messages.append)
    assert "skipped" in messages[0] and "written" in messages[1]
    assert (folders[0] / "CT" / "PhaseImage_01.mha").stat().st_mtime_ns == first_mtime
    assert _tree_bytes(folders[1]) == reference[1]  # truncated file rewritten, stale temporary removed


def test_interrupted_spect_subject_regenerated_as_pet_has_no_surplus_phases(tmp_path):
    out = tmp_path / "switch"
    folder = write_synthetic_cohort(out, n_cases=1, modality="spect", size="tiny", seed=0)[0]
    (folder / ".complete").unlink()  # the SPECT run was killed before finishing
    write_synthetic_cohort(out, n_cases=1, modality="pet", size="tiny", seed=0)
    assert sorted(p.name for p in (folder / "CT").glob("PhaseImage_*.mha")) == [
        f"PhaseImage_{k:02d}.mha" for k in range(1, 6)
    ]
    assert len(list((folder / "CT").glob("PhaseMask_*.mha"))) == 5


def test_existing_subject_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "mixed"
    write_synthetic_cohort(out, n_cases=1, modality="pet", size="tiny", seed=0)
    with pytest.raises(DataError, match="Subject_01"):
        write_synthetic_cohort(out, n_cases=1, modality="spect", size="tiny", seed=0)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"n_cases": 0}, "n_cases"), ({"n_cases": 100}, "n_cases"), ({"modality": "ct"}, "modality"),
     ({"size": "small"}, "size"), ({"seed": -3}, "seed")],
)
def test_bad_arguments_raise_config_error(tmp_path, kwargs, word):
    arguments = {"n_cases": 1, "modality": "pet", "size": "tiny", "seed": 0} | kwargs
    with pytest.raises(ConfigError, match=word):
        write_synthetic_cohort(tmp_path / "x", **arguments)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_demo_cohort_size_and_speed(tmp_path):
    """Six demo subjects: roughly 15k-30k lung voxels at 2 mm each, generated in well under a minute."""
    start = time.perf_counter()
    folders = write_synthetic_cohort(tmp_path / "demo", n_cases=6, modality="pet", size="demo", seed=0)
    elapsed = time.perf_counter() - start
    for folder in folders:
        mask = sitk.ReadImage(str(folder / "CT" / "AverageMask.mha"))
        n_voxels = sitk.GetArrayFromImage(mask).sum() * np.prod(mask.GetSpacing()) / 8.0
        assert 15_000 <= n_voxels <= 30_000, (folder.name, n_voxels)
    assert elapsed < 60.0
