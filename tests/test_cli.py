"""The CLI: exit codes and messages for success and for every kind of user error."""

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from phantoms import rewrite_image
from vent import __version__
from vent.cli import app

runner = CliRunner()


def _config(tmp_path, root, extra=""):
    path = tmp_path / "c.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\ndata: {{root: {root}}}\ncv: {{n_folds: 3}}\n{extra}")
    return path


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_validate_ok(tmp_path, phantom_cohort):
    result = runner.invoke(app, ["validate", str(_config(tmp_path, phantom_cohort))])
    assert result.exit_code == 0, result.output
    assert "3 subjects, 3 phases each" in result.output


def test_validate_typo_exit_2_with_suggestion(tmp_path, phantom_cohort):
    result = runner.invoke(app, ["validate", str(_config(tmp_path, phantom_cohort, "radiomics: {kernal_mm: 26}\n"))])
    assert result.exit_code == 2
    assert "radiomics.kernal_mm" in result.output and "did you mean 'radiomics.kernel_mm'" in result.output
    assert "Traceback" not in result.output


def test_validate_missing_phase_names_file(tmp_path, phantom_cohort):
    (phantom_cohort / "Subject_02" / "CT" / "PhaseImage_02.mha").unlink()
    result = runner.invoke(app, ["validate", str(_config(tmp_path, phantom_cohort))])
    assert result.exit_code == 1
    assert "Subject_02/CT/PhaseImage_02.mha" in result.output


def test_validate_too_many_folds_exit_2(tmp_path, phantom_cohort):
    result = runner.invoke(app, ["validate", str(_config(tmp_path, phantom_cohort)), "--set", "cv.n_folds=5"])
    assert result.exit_code == 2 and "cv.n_folds = 5 but the cohort has 3 subjects" in result.output


def test_validate_a_cohort_of_two_says_cross_validation_needs_three(tmp_path, phantom_cohort):
    import shutil

    shutil.rmtree(phantom_cohort / "Subject_03")
    result = runner.invoke(app, ["validate", str(_config(tmp_path, phantom_cohort)), "--set", "cv.n_folds=2"])
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "the cohort has 2 subject(s)" in message and "needs at least 3" in message
    assert "at most 2" not in message  # never a fix that does not exist (cv.n_folds >= 2 always holds)


def test_validate_missing_config_exit_2(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_status_before_any_run(tmp_path, phantom_cohort):
    result = runner.invoke(app, ["status", str(_config(tmp_path, phantom_cohort))])
    assert result.exit_code == 0, result.output
    for stage in ("preprocess", "split", "radiomics", "select", "train", "evaluate", "explain", "report"):
        assert stage in result.output
    assert "never run" in result.output
    assert "not used" not in result.output  # the default methods read every stage
    assert "training folds" in result.output  # no folds yet: the table is empty


def test_status_marks_the_stages_a_config_does_not_use(tmp_path, phantom_cohort):
    config = _config(tmp_path, phantom_cohort, "train: {models: [densest_inhale], reference_model: densest_inhale}\n")
    result = runner.invoke(app, ["status", str(config)])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 3}
    for stage in ("radiomics", "select", "explain"):
        assert "not used" in rows[stage], rows[stage]
    for stage in ("preprocess", "split", "train", "evaluate"):
        assert "never run" in rows[stage], rows[stage]
    result = runner.invoke(app, ["run", str(config), "--only", "explain"])
    assert result.exit_code == 2 and "does not use the explain stage" in " ".join(result.output.split())


def test_a_moved_config_key_exits_2_naming_its_new_place(tmp_path, phantom_cohort):
    result = runner.invoke(app, ["validate", str(_config(tmp_path, phantom_cohort, "train: {device: cpu}\n"))])
    assert result.exit_code == 2
    assert "'train.device' is now 'execution.device'" in " ".join(result.output.split())
    result = runner.invoke(app, ["validate", str(_config(tmp_path, phantom_cohort)), "--set", "radiomics.workers=2"])
    assert result.exit_code == 2 and "execution.workers" in result.output


def test_run_unknown_stage_exit_2(tmp_path, phantom_cohort):
    result = runner.invoke(app, ["run", str(_config(tmp_path, phantom_cohort)), "--only", "trian"])
    assert result.exit_code == 2 and "did you mean 'train'" in result.output


def test_run_only_preprocess_then_status(tmp_path, phantom_cohort):
    config = _config(tmp_path, phantom_cohort)
    result = runner.invoke(app, ["run", str(config), "--only", "preprocess"])
    assert result.exit_code == 0, result.output
    assert "[preprocess] runs: never run" in result.output
    assert (tmp_path / "run" / "preprocess" / "Subject_01.h5").is_file()
    assert (tmp_path / "run" / "preprocess" / "manifest.json").is_file()
    again = runner.invoke(app, ["run", str(config), "--only", "preprocess"])
    assert "[preprocess] skipped: fingerprint unchanged" in again.output
    status = runner.invoke(app, ["status", str(config)])
    assert "current" in status.output


def test_debug_shows_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "Traceback" in result.output


def test_features_bad_bins_exit_2(tmp_path):
    result = runner.invoke(app, ["features", "a.mha", "b.mha", "-o", str(tmp_path / "x.h5"), "--bins", "sixty"])
    assert result.exit_code == 2 and "--bins" in result.output


# ---- issue 7, item 8: every bad input is refused by `vent run` (and `vent validate`) naming the file and the fix


@pytest.fixture(scope="module")
def synthetic_cohort(tmp_path_factory):
    """Three tiny valid synthetic subjects (5 phases) in the VAMPIRE layout, written once; tests corrupt a copy."""
    from vent.synth import write_synthetic_cohort

    root = tmp_path_factory.mktemp("synthetic") / "study"
    write_synthetic_cohort(root, n_cases=3, modality="pet", size="tiny", seed=0)
    return root


def _truncate(path):
    rewrite_image(path)
    path.write_bytes(path.read_bytes()[:-200])


def _keep_phases(root, n):
    for phase in root.glob("*/CT/Phase*_0*.mha"):
        if int(phase.stem.split("_")[1]) > n:
            phase.unlink()


P3 = "Subject_02/CT/PhaseImage_03.mha"
M2 = "Subject_02/CT/PhaseMask_02.mha"
BAD_INPUTS = {
    "other size": (
        lambda r: rewrite_image(r / P3, lambda a: np.concatenate([a, a[-1:]])),
        [P3, "does not share the geometry", "size", "export the file again"],
    ),
    "other spacing": (
        lambda r: rewrite_image(r / P3, Spacing=(1.2, 1.07, 5.0)),
        [P3, "spacing", "export the file again"],
    ),
    "other origin": (
        lambda r: rewrite_image(r / P3, Origin=(15.0, 0.0, 0.0)),
        [P3, "origin", "export the file again"],
    ),
    "flipped direction": (
        lambda r: rewrite_image(r / P3, Direction=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)),
        [P3, "direction", "export the file again"],
    ),
    "truncated mha": (lambda r: _truncate(r / P3), [P3, "truncated", "again"]),
    "copied subject": (
        lambda r: shutil.copytree(r / "Subject_01", r / "Subject_04"),
        ["Subject_01 and", "Subject_04", "identical first phase images", "data.exclude"],
    ),
    "symlinked subject": (
        lambda r: (r / "Subject_04").symlink_to(r / "Subject_01", target_is_directory=True),
        ["Subject_01 and", "Subject_04", "resolve to the same folder", "data.exclude"],
    ),
    "case variant": (
        lambda r: shutil.copytree(r / "Subject_01", r / "subject_01"),
        ["Subject_01 and", "subject_01", "differ only by case", "data.exclude"],
    ),
    "one phase": (lambda r: _keep_phases(r, 1), ["Subject_01/CT holds 1 phase image", "at least 3", "data.exclude"]),
    "two phases": (lambda r: _keep_phases(r, 2), ["Subject_01/CT holds 2 phase image", "at least 3", "data.exclude"]),
    "HU +5000 everywhere": (
        lambda r: [
            rewrite_image(p, lambda a: np.full_like(a, 5000)) for p in (r / "Subject_02" / "CT").glob("*Image*")
        ],
        ["Subject_02/CT/", "5000 HU", "Hounsfield", "data.exclude"],
    ),
    "mask labels 0..5": (
        lambda r: rewrite_image(r / M2, lambda a: (np.arange(a.size).reshape(a.shape) % 6).astype(np.uint8)),
        [M2, "0, 1, 2, 3, 4, 5", "0/1 mask", "data.exclude"],
    ),
}


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("bad", list(BAD_INPUTS))
def test_bad_input_is_refused_naming_file_and_fix(tmp_path, synthetic_cohort, bad, command):
    root = tmp_path / "study"
    shutil.copytree(synthetic_cohort, root, symlinks=True)
    corrupt, expected = BAD_INPUTS[bad]
    corrupt(root)
    args = [command, str(_config(tmp_path, root))] + (["--only", "preprocess"] if command == "run" else [])
    result = runner.invoke(app, args)
    assert result.exit_code in (1, 2), result.output
    message = " ".join(result.output.split())  # the error paragraph may be wrapped
    for part in expected:
        assert part in message, f"{part!r} not in: {result.output}"
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "radiomics").exists()


def test_synthetic_cohort_passes_every_check(tmp_path, synthetic_cohort):
    config = _config(tmp_path, synthetic_cohort)
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    assert "3 subjects, 5 phases each" in result.output and "every file read in full" in result.output
    result = runner.invoke(app, ["run", str(config), "--only", "preprocess"])
    assert result.exit_code == 0, result.output


def test_left_right_labels_are_read_as_lung_with_a_warning(tmp_path, synthetic_cohort):
    root = tmp_path / "study"
    shutil.copytree(synthetic_cohort, root)
    mask = root / "Subject_01" / "CT" / "PhaseMask_01.mha"
    rewrite_image(mask, lambda a: (a * np.where(np.arange(a.shape[2]) < a.shape[2] // 2, 1, 2)).astype(np.uint8))
    result = runner.invoke(app, ["validate", str(_config(tmp_path, root))])
    assert result.exit_code == 0, result.output
    assert "PhaseMask_01.mha holds labels 0/1/2" in " ".join(result.output.split())
    result = runner.invoke(app, ["run", str(_config(tmp_path, root)), "--only", "preprocess"])
    assert result.exit_code == 0, result.output


def test_synth_from_ct_needs_a_lung_mask_and_existing_files(tmp_path):
    from typer.testing import CliRunner

    from vent.cli import app

    result = CliRunner().invoke(app, ["synth", str(tmp_path / "out"), "--from-ct", str(tmp_path / "ct.nii.gz")])
    assert result.exit_code == 2 and "--lung-mask" in result.output
    result = CliRunner().invoke(
        app, ["synth", str(tmp_path / "out"), "--from-ct", str(tmp_path / "ct.nii.gz"), "--lung-mask", "m.nii.gz"]
    )
    assert result.exit_code == 2 and "ct.nii.gz does not exist" in result.output


def test_synth_from_ct_names_a_mask_off_the_ct_grid(tmp_path):
    import numpy as np
    from typer.testing import CliRunner

    from vent.cli import app

    ct = sitk.GetImageFromArray(np.full((20, 20, 20), -800, np.int16))
    mask = sitk.GetImageFromArray(np.pad(np.ones((10, 10, 10), np.uint8), 5))
    mask.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / "lung.nii.gz"))
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "out"), "--from-ct", str(tmp_path / "ct.nii.gz"),
                                      "--lung-mask", str(tmp_path / "lung.nii.gz")])
    assert result.exit_code == 1 and "lung.nii.gz is not on the grid of" in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
