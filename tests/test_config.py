"""Config loading: every shipped config validates; bad keys and values give located, helpful errors."""

from pathlib import Path

import pytest

from vent.config import load_config
from vent.errors import ConfigError
from vent.models.registry import MODEL_NAMES

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
        assert config.train.models["lstm"]["hidden"] == [128, 64, 32, 16, 8]
        assert config.train.model_params("lstm").hidden == [128, 64, 32, 16, 8]
        # every row of the study's Table 2, CT ventilation and the RefVI regression (every registry entry)
        assert list(config.train.models) == [
            "lstm", "bilstm", "transformer", "lstm_raw", "rf", "unet", "unetpp", "resunet", "lstm_regress", "ctvi_jac",
            "ctvi_hu", "densest_inhale",
        ]
        assert set(config.train.models) == set(MODEL_NAMES)
        assert config.train.reference_model == "lstm"
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


# ---- the method registry in the config (train.models) and the execution section


@pytest.mark.parametrize(
    ("section", "key", "new"),
    [
        ("train", "device: cpu", "execution.device"),
        ("train", "threads: 2", "execution.threads"),
        ("radiomics", "workers: 2", "execution.workers"),
        ("radiomics", "backend: numba", "execution.radiomics_engine"),
        ("explain", "internal_batch_size: 64", "execution.explain_batch_size"),
        ("train", "hidden: [8]", "train.models.<lstm|bilstm|lstm_raw>.hidden"),
        ("train", "transformer: {d_model: 8}", "train.models.transformer"),
        ("train", "no_learning_baseline: true", "train.models (add or remove densest_inhale)"),
    ],
)
def test_a_moved_key_names_its_new_place(tmp_path, section, key, new):
    path = _write(tmp_path, f"run_dir: r\ndata: {{root: d}}\n{section}: {{{key}}}\n")
    old = f"{section}.{key.split(':')[0]}"
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message and f"'{old}' is now '{new}'" in message
    assert error.value.exit_code == 2


def test_a_moved_key_given_as_an_override_names_its_new_place(tmp_path):
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\n")
    with pytest.raises(ConfigError, match=r"'train\.device' is now 'execution\.device'"):
        load_config(path, ["train.device=cpu"])
    assert load_config(path, ["execution.device=cpu"]).execution.device == "cpu"


def test_every_moved_key_is_reported_at_once(tmp_path):
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain: {device: cpu}\nradiomics: {workers: 2}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "execution.device" in str(error.value) and "execution.workers" in str(error.value)


def test_execution_section_defaults_and_values(tmp_path):
    config = load_config(_write(tmp_path, "run_dir: r\ndata: {root: d}\n"))
    assert config.execution.device == "auto" and config.execution.workers is None
    assert config.execution.threads is None and config.execution.radiomics_engine == "auto"
    text = "run_dir: r\ndata: {root: d}\nexecution: {device: cpu, threads: 2, workers: 3, explain_batch_size: 64}\n"
    config = load_config(_write(tmp_path, text))
    assert (config.execution.device, config.execution.threads, config.execution.workers) == ("cpu", 2, 3)
    assert config.execution.explain_batch_size == 64
    with pytest.raises(ConfigError, match=r"did you mean 'execution\.threads'"):
        load_config(_write(tmp_path, "run_dir: r\ndata: {root: d}\nexecution: {thread: 2}\n"))


def test_unknown_model_parameter_is_named(tmp_path):
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain: {models: {lstm: {hiden: [4]}}}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message and "train.models.lstm: unknown parameter 'hiden'" in message
    assert error.value.exit_code == 2


def test_bad_model_parameter_value_and_unknown_model_are_named(tmp_path):
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain: {models: {lstm: {hidden: [0]}}}\n")
    with pytest.raises(ConfigError, match=r"train\.models\.lstm: 'hidden'.*at least one cell"):
        load_config(path)
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain: {models: [lstm, lstmm]}\n")
    with pytest.raises(ConfigError, match=r"unknown model 'lstmm'; did you mean 'lstm'"):
        load_config(path)
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain: {models: {transformer: {d_model: 30, n_heads: 4}}, "
                  "reference_model: transformer}\n")
    with pytest.raises(ConfigError, match=r"train\.models\.transformer:.*divisible"):
        load_config(path)
    with pytest.raises(ConfigError, match="empty"):
        load_config(_write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain: {models: []}\n"))


def test_list_and_mapping_forms_of_models_give_the_same_config(tmp_path):
    from vent.models.registry import LSTMParams, get_spec

    forms = [
        "[lstm, transformer, densest_inhale]",
        "{lstm: null, transformer: {}, densest_inhale: {}}",
        "{lstm: {hidden: [128, 64, 32, 16, 8], dropout: 0.0}, transformer: {d_model: 64}, densest_inhale: null}",
        "[{lstm: {hidden: [128, 64, 32, 16, 8]}}, transformer, {densest_inhale: {}}]",
    ]
    configs = [load_config(_write(tmp_path, f"run_dir: r\ndata: {{root: d}}\ntrain: {{models: {f}}}\n")) for f in forms]
    dumps = [c.model_dump(mode="json") for c in configs]
    assert all(d == dumps[0] for d in dumps[1:])
    models = configs[0].train.models
    assert list(models) == ["lstm", "transformer", "densest_inhale"]
    assert models["lstm"] == LSTMParams().model_dump()
    assert models["transformer"] == get_spec("transformer").params().model_dump()
    assert models["densest_inhale"] == {}
    # the order of the config is kept (it is the order of Table 2's rows)
    reordered = load_config(_write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain: {models: [densest_inhale, lstm]}\n"))
    assert list(reordered.train.models) == ["densest_inhale", "lstm"]


def test_a_model_listed_twice_is_an_error(tmp_path):
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain: {models: [lstm, {lstm: {hidden: [4]}}]}\n")
    with pytest.raises(ConfigError, match="twice"):
        load_config(path)


def test_default_models_are_the_registry_defaults(tmp_path):
    from vent.models.registry import DEFAULT_MODELS

    config = load_config(_write(tmp_path, "run_dir: r\ndata: {root: d}\n"))
    assert tuple(config.train.models) == DEFAULT_MODELS
    assert config.train.reference_model in config.train.models


def test_a_bad_model_parameter_names_the_model_and_key_without_dumping_the_mapping(tmp_path):
    models = "    lstm: {}\n    unet: {patch_size: [20, 32, 32]}\n    ctvi_jac: {}\n    rf: {n_iter: 2}\n"
    path = _write(tmp_path, "run_dir: r\ndata: {root: d}\ntrain:\n  models:\n" + models
                  + "    densest_inhale: {}\n    lstm_regress: {target: rank}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "train.models.unet: 'patch_size'" in message and "multiple of 16" in message
    assert "lstm_regress" not in message  # the rest of the mapping is not echoed back
