"""The method registry is the one place that lists methods; adding one is one entry (vent.models.registry)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from vent.config import config_from_dict
from vent.errors import ConfigError
from vent.models import registry
from vent.models.registry import MODEL_NAMES, REGISTRY, get_spec, parse_models
from vent.stages import STAGE_NAMES

SRC = Path(__file__).resolve().parents[2] / "src" / "vent"


def _string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_module_but_the_registry_names_a_method() -> None:
    names = set(MODEL_NAMES)
    found = [
        f"{path.relative_to(SRC)}:{line} {value!r}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "registry.py"
        for line, value in _string_constants(path)
        if value in names
    ]
    assert found == [], "method names outside vent/models/registry.py: " + ", ".join(found)


def test_every_entry_is_complete_and_loadable() -> None:
    assert len(set(MODEL_NAMES)) == len(MODEL_NAMES)
    assert len({spec.label for spec in REGISTRY}) == len(REGISTRY)
    for spec in REGISTRY:
        assert callable(spec.train_fold()), spec.name
        spec.parse_params({})  # defaults are valid
        assert set(spec.needs()) <= set(STAGE_NAMES), spec.name
        if spec.builder is not None:
            network = spec.build(3, 5, {})
            assert sum(p.numel() for p in network.parameters()) > 0
        if spec.explainable:
            assert spec.family == "sequence" and spec.builder is not None, spec.name
        assert spec.learns == (spec.family not in ("rule", "registration")), spec.name


def test_family_needs() -> None:
    assert get_spec("lstm").needs() == ("split", "radiomics", "select")
    assert get_spec("lstm_raw").needs() == ("split", "radiomics")
    assert get_spec("densest_inhale").needs() == ("preprocess",)


def test_the_config_reads_names_and_parameters_from_the_registry() -> None:
    base = {"run_dir": "r", "data": {"root": "d"}}
    default = config_from_dict(base, Path("."))
    assert list(default.train.models) == list(registry.DEFAULT_MODELS)
    listed = config_from_dict({**base, "train": {"models": ["lstm", "transformer"]}}, Path("."))
    mapped = config_from_dict({**base, "train": {"models": {"lstm": None, "transformer": {}}}}, Path("."))
    assert listed.train.models == mapped.train.models
    assert listed.train.models["transformer"]["d_model"] == registry.TransformerParams().d_model
    custom = config_from_dict({**base, "train": {"models": {"lstm": {"hidden": [8, 4]}}}}, Path("."))
    assert custom.train.model_params("lstm").hidden == [8, 4]
    with pytest.raises(ConfigError, match=r"train\.models.*unknown parameter 'hiden'"):
        config_from_dict({**base, "train": {"models": {"lstm": {"hiden": [8]}}}}, Path("."))
    with pytest.raises(ConfigError, match="did you mean 'bilstm'"):
        parse_models(["bilstn"])
    with pytest.raises(ConfigError, match="divisible"):
        parse_models({"transformer": {"d_model": 30, "n_heads": 4}})


def test_adding_a_method_is_one_registry_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new entry (here a copy of the rule under another name) becomes a Table 2 row with no other change."""
    from vent.io.evaluation import read_evaluation
    from vent.runner import RunContext, execute_plan, plan_run
    from vent.stages import all_stages
    from vent.stages.preprocess import ensure_data

    rule = dataclasses.replace(get_spec("densest_inhale"), name="copied_rule", label="A copied rule")
    monkeypatch.setattr(registry, "REGISTRY", (*REGISTRY, rule))
    config = config_from_dict(
        {
            "run_dir": "run",
            "data": {"root": "data", "synthetic": {"cases": 3, "size": "tiny", "seed": 1}},
            "cv": {"n_folds": 3, "val_fraction": 0.5},
            "train": {"models": ["copied_rule"], "reference_model": "copied_rule"},
            "execution": {"backend": "serial"},  # the patched registry exists in this process only, not in workers
        },
        tmp_path,
    )
    ensure_data(config)
    ctx = RunContext(config=config)
    plans = plan_run(ctx, [s for s in all_stages() if s.name != "report"])
    assert {p.stage.name for p in plans if p.action == "off"} == {"radiomics", "select", "explain"}
    execute_plan(ctx, plans)
    evaluation = read_evaluation(ctx.run_dir)
    assert [row.label for row in evaluation.rows] == ["A copied rule"]
    assert len(evaluation.per_patient) == 3
