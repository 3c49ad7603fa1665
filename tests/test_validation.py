"""``vent validate`` (vent.validation): one pass over a cohort lists every planted problem, each under its case."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from phantoms import write_phantom_subject
from vent.cli import app
from vent.config import load_config
from vent.io.manifest import write_manifest_csv
from vent.io.vampire import find_subject_files
from vent.validation import validate_dataset

runner = CliRunner()


def _config(folder, source: str):
    path = folder / "c.yaml"
    path.write_text(f"run_dir: {folder / 'run'}\ndata: {{{source}}}\ncv: {{n_folds: 3}}\n")
    return path


def _rewrite(path, change_array=None, **geometry):
    """Rewrite an image in place (uncompressed) with its array and/or geometry (Spacing=..., Origin=...) changed."""
    image = sitk.ReadImage(str(path))
    if change_array is not None:
        new = sitk.GetImageFromArray(change_array(sitk.GetArrayFromImage(image)))
        new.CopyInformation(image)
        image = new
    for key, value in geometry.items():
        getattr(image, f"Set{key}")(value)
    sitk.WriteImage(image, str(path), useCompression=False)


def _tiny(mask_zyx):
    tiny = np.zeros_like(mask_zyx)
    centre = tuple(int(np.mean(axis)) for axis in np.nonzero(mask_zyx))
    tiny[centre[0], centre[1], centre[2] : centre[2] + 4] = 1  # 4 lung voxels of 6.75 mm^3
    return tiny


def _with_nan(ct_zyx):
    ct = ct_zyx.astype(np.float32)
    ct[0, :3, :3] = np.nan
    return ct


def _shift(path, mm):
    origin = sitk.ReadImage(str(path)).GetOrigin()
    _rewrite(path, Origin=(origin[0] + mm, origin[1], origin[2]))


def _plant(root):
    """Write 16 phantom subjects and plant one problem in each but Subject_13 (clean) and Subject_13's copy."""
    for i in range(16):
        write_phantom_subject(root / f"Subject_{i:02d}", n_phases=4 if i == 0 else 3, seed=i)
    ct = {i: root / f"Subject_{i:02d}" / "CT" for i in range(16)}
    gt = {i: root / f"Subject_{i:02d}" / "GT" for i in range(16)}
    (ct[1] / "PhaseImage_02.mha").unlink()
    truncated = ct[2] / "PhaseImage_03.mha"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    _rewrite(ct[3] / "PhaseMask_02.mha", Spacing=(2.0, 2.0, 3.0))
    _rewrite(ct[4] / "PhaseImage_02.mha", Direction=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    _rewrite(ct[5] / "PhaseMask_01.mha", np.zeros_like)
    _rewrite(ct[6] / "PhaseMask_03.mha", _tiny)
    _rewrite(ct[7] / "PhaseImage_01.mha", _with_nan)
    _rewrite(ct[8] / "PhaseImage_02.mha", lambda a: a + 1024)
    _shift(gt[9] / "VentImage.mha", 300.0)
    _shift(gt[10] / "VentImage.mha", 300.0)
    _shift(gt[10] / "VentMask.mha", 300.0)
    _rewrite(gt[11] / "VentImage.mha", np.zeros_like)
    (gt[12] / "VentImage.mha").unlink()
    shutil.rmtree(root / "Subject_14")
    shutil.copytree(root / "Subject_13", root / "Subject_14")
    (ct[15] / "AverageImage.mha").write_bytes(b"not an image at all")


PLANTED = {  # problem: (case, parts its message must hold)
    "another phase count": ("Subject_00", ["Subject_00 has 4 phases", "14 of 15 subjects have 3"]),
    "missing phase file": ("Subject_01", ["Subject_01/CT/PhaseImage_02.mha", "missing"]),
    "truncated mha": ("Subject_02", ["Subject_02/CT/PhaseImage_03.mha", "truncated"]),
    "mask spacing": ("Subject_03", ["Subject_03/CT/PhaseMask_02.mha", "does not share the geometry", "spacing"]),
    "orientation mismatch": ("Subject_04", ["Subject_04/CT/PhaseImage_02.mha", "direction"]),
    "empty mask": ("Subject_05", ["Subject_05/CT/PhaseMask_01.mha is empty"]),
    "tiny mask": ("Subject_06", ["Subject_06/CT/PhaseMask_03.mha", "fewer than preprocess.min_lung_voxels"]),
    "NaN in CT": ("Subject_07", ["Subject_07/CT/PhaseImage_01.mha", "NaN"]),
    "CT without rescale": ("Subject_08", ["Subject_08/CT/PhaseImage_02.mha", "median inside its lung mask"]),
    "RefVI moved 300 mm, its mask not": ("Subject_09", ["Subject_09/GT/VentMask.mha", "origin", "VentImage.mha"]),
    "RefVI outside the lung": ("Subject_10", ["Subject_10/GT/VentImage.mha", "covers only 0%", "outside the lung"]),
    "RefVI all zeros": ("Subject_11", ["Subject_11/GT/VentImage.mha", "all zeros"]),
    "RefVI missing": ("Subject_12", ["reference ventilation image missing for Subject_12"]),
    "duplicate subject": ("Subject_14", ["Subject_13 and", "Subject_14", "identical first phase images"]),
    "unreadable file": ("Subject_15", ["Subject_15/CT/AverageImage.mha", "could not be read"]),
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    _plant(folder / "study")
    return _config(folder, f"root: {folder / 'study'}")


def test_one_pass_lists_every_planted_problem_under_its_case(planted):
    report = validate_dataset(load_config(planted))
    assert not report.ok
    missing = [
        name
        for name, (case, parts) in PLANTED.items()
        if not any(p.case == case and all(part in p.message for part in parts) for p in report.errors)
    ]
    assert missing == [], "\n".join(f"{p.case}: {p.message}" for p in report.errors)
    assert {p.case for p in report.errors} == {case for case, _ in PLANTED.values()}  # Subject_13 is clean
    assert len(report.errors) == len(PLANTED)  # each problem once: an unreadable file is not named twice
    assert report.n_subjects == 16 and report.n_phases == 3 and report.phase_counts == {3: 14, 4: 1}
    assert all(p.severity == "warning" for p in report.problems if p.case == "Subject_13")


def test_lines_group_problems_by_case_errors_first(planted):
    report = validate_dataset(load_config(planted))
    lines = report.lines()
    headings = [text for kind, text in lines if kind == "case"]
    assert len(headings) == 16 and headings[0].startswith("Subject_00: 1 error(s)")
    first_group = lines[1 : 1 + len(report.problems)]
    kinds = [kind for kind, _ in first_group[: [k for k, _ in first_group].index("case")]]
    assert kinds == sorted(kinds, key=lambda kind: kind != "error")


def test_clean_cohort_is_ok(tmp_path, phantom_cohort):
    report = validate_dataset(load_config(_config(tmp_path, f"root: {phantom_cohort}")))
    assert report.ok and report.errors == []
    assert report.n_subjects == 3 and report.n_phases == 3 and report.phase_counts == {3: 3}


def test_missing_root_is_a_cohort_error(tmp_path):
    report = validate_dataset(load_config(_config(tmp_path, f"root: {tmp_path / 'nowhere'}")))
    assert not report.ok and report.n_subjects == 0 and report.n_phases is None
    assert report.errors[0].case is None and "does not exist" in report.errors[0].message


def test_manifest_case_problems_do_not_stop_the_others(tmp_path, phantom_cohort):
    subjects = [find_subject_files(phantom_cohort, f"Subject_{i:02d}") for i in (1, 2, 3)]
    manifest = write_manifest_csv(tmp_path / "cases.csv", subjects)
    (phantom_cohort / "Subject_01" / "GT" / "VentMask.mha").unlink()
    _rewrite(phantom_cohort / "Subject_02" / "CT" / "PhaseMask_01.mha", np.zeros_like)
    report = validate_dataset(load_config(_config(tmp_path, f"manifest: {manifest}")))
    by_case = {p.case: p.message for p in report.errors}
    assert set(by_case) == {"Subject_01", "Subject_02"}, by_case
    assert "Subject_01/GT/VentMask.mha does not exist" in by_case["Subject_01"]
    assert "Subject_02/CT/PhaseMask_01.mha is empty" in by_case["Subject_02"]


def test_cli_lists_the_problems_and_exits_1_with_a_json_report(planted, tmp_path):
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["validate", str(planted), "--json", str(out)])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    shown = ("missing phase file", "truncated mha", "orientation mismatch", "CT without rescale", "duplicate subject")
    for name in shown:
        case, parts = PLANTED[name]
        assert f"{case}: " in text and all(part in text for part in parts), name
    assert "16 subjects, 15 errors," in text and "Traceback" not in text
    report = json.loads(out.read_text())
    assert report["ok"] is False and report["n_subjects"] == 16 and report["n_errors"] == 15
    assert report["phase_counts"] == {"3": 14, "4": 1}
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert {p["case"] for p in errors} == {case for case, _ in PLANTED.values()}
    assert all(set(p) == {"severity", "case", "message"} for p in report["problems"])


def test_cli_clean_cohort_exits_0(tmp_path, phantom_cohort):
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["validate", str(_config(tmp_path, f"root: {phantom_cohort}")), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 subjects, 3 phases each" in result.output and "3 subjects, 0 errors," in result.output
    assert json.loads(out.read_text())["ok"] is True


def test_a_dicom_folder_is_hashed_by_its_files_for_the_duplicate_check(tmp_path):
    from vent.io.hashing import file_sha256
    from vent.validation import _content_hasher

    for name, content in (("a", b"x"), ("b", b"x"), ("c", b"y")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "slice_001.dcm").write_bytes(content)
    sha256 = _content_hasher(file_sha256)
    assert sha256(tmp_path / "a") == sha256(tmp_path / "b") != sha256(tmp_path / "c")
    assert sha256(tmp_path / "a" / "slice_001.dcm") == file_sha256(tmp_path / "a" / "slice_001.dcm")
