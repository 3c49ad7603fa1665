"""Config loading: every shipped config validates; bad keys and values give located, helpful errors."""

from pathlib import Path

import pytest

from vent.config import load_config
from vent.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path):
    from vent.stages import check_config

    config = load_config(path)
    assert config.run_dir.is_absolute()
    assert config.data.root.is_absolute()
    # the checks a run makes before any compute (model names, feature ids, folds for the study's cohort sizes)
    n_cases = config.data.synthetic.cases if config.data.synthetic else {"pet.yaml": 25, "spect.yaml": 20}[path.name]
    check_config(config, n_cases=n_cases)


def test_study_configs_process_phases_from_max_exhale():
    for name in ("pet.yaml", "spect.yaml"):
        config = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
        assert config.data.phase_order == "from_max_exhale"


def test_shipped_configs_exist():
    assert {"demo.yaml", "pet.yaml", "spect.yaml"} <= {p.name for p in CONFIGS}


def test_study_settings_in_pet_and_spect():
    for name in ("pet.yaml", "spect.yaml"):
        config = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
        assert config.preprocess.spacing_mm == (2.0, 2.0, 2.0)
        assert config.radiomics.kernel_mm == 26 and config.radiomics.bin_count == 64
        assert config.cv.n_folds == 5
        assert config.train.hidden == [128, 64, 32, 16, 8]
        assert config.train.lr == pytest.approx(1e-4)
        assert config.train.clip_grad_norm == 1.0
        assert config.train.batch_size == 2048
        assert config.train.max_epochs <= 500


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_misspelt_key_names_key_and_suggests(tmp_path):
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain: {lerning_rate: 1, max_epoch: 3}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "train.max_epoch" in message and "did you mean 'train.max_epochs'" in message
    assert error.value.exit_code == 2


def test_misspelt_section_suggests(tmp_path):
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\nradiomic: {kernel_mm: 26}\n")
    with pytest.raises(ConfigError, match="did you mean 'radiomics'"):
        load_config(path)


def test_bad_value_names_key_and_value(tmp_path):
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain: {lr: -1}\n")
    with pytest.raises(ConfigError, match=r"'train.lr'.*got -1"):
        load_config(path)


def test_bin_count_and_width_exclusive(tmp_path):
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\nradiomics: {bin_count: 64, bin_width: 25}\n")
    with pytest.raises(ConfigError, match="either bin_count or bin_width"):
        load_config(path)


def test_reference_model_must_be_trained(tmp_path):
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain: {models: [bilstm], reference_model: lstm}\n")
    with pytest.raises(ConfigError, match="reference_model"):
        load_config(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "run_dir: [unclosed\n"))


def test_relative_paths_resolve_against_config_folder(tmp_path):
    path = _write(tmp_path, "run_dir: out\ndata: {root: ../d}\n")
    config = load_config(path)
    assert config.run_dir == (tmp_path / "out").resolve()
    assert config.data.root == (tmp_path.parent / "d").resolve()


def test_overrides(tmp_path):
    path = _write(tmp_path, "run_dir: out\ndata: {root: d}\n")
    assert load_config(path, ["train.lr=2e-4"]).train.lr == pytest.approx(2e-4)
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        load_config(path, ["train.lrr=2e-4"])
