"""The CLI: exit codes and messages for success and for every kind of user error."""

from typer.testing import CliRunner

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


def test_validate_missing_config_exit_2(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_status_before_any_run(tmp_path, phantom_cohort):
    result = runner.invoke(app, ["status", str(_config(tmp_path, phantom_cohort))])
    assert result.exit_code == 0, result.output
    for stage in ("preprocess", "radiomics", "select", "train", "explain", "report"):
        assert stage in result.output
    assert "never run" in result.output


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
