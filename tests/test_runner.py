"""Planning and skipping: fingerprints, reasons, --only/--from/--force, manifests written last."""

import json

import pytest

from vent.config import config_from_dict
from vent.errors import ArtifactError, ConfigError
from vent.io.atomic import write_text
from vent.runner import RunContext, execute_plan, plan_run
from vent.stages.base import Stage


class _Recorder(Stage):
    calls: list = []

    def run(self, ctx, plan):
        type(self).calls.append(self.name)
        write_text(ctx.stage_dir(self.name) / "out.txt", self.name)  # sealed: a stage's outputs go through vent.io
        return {"out.txt": "output"}


class FakePreprocess(_Recorder):
    name = "preprocess"


class FakeSelect(_Recorder):
    name = "select"
    sections = ("cv",)
    needs = ("preprocess",)


class FakeTrain(_Recorder):
    name = "train"
    sections = ("cv",)
    needs = ("select",)


def _stages():
    return [FakePreprocess(), FakeSelect(), FakeTrain()]


def _ctx(tmp_path, **train):
    raw = {"run_dir": str(tmp_path / "run"), "data": {"root": str(tmp_path / "data")}, "train": train}
    return RunContext(config=config_from_dict(raw, tmp_path), echo=lambda m: None)


def _run(ctx, **kwargs):
    _Recorder.calls = []
    plans = plan_run(ctx, _stages(), **kwargs)
    execute_plan(ctx, plans)
    return plans, list(_Recorder.calls)


def test_second_run_skips_everything(tmp_path):
    plans, calls = _run(_ctx(tmp_path))
    assert calls == ["preprocess", "select", "train"]
    assert all(p.reason == "never run" for p in plans)
    plans, calls = _run(_ctx(tmp_path))
    assert calls == []
    assert all(p.action == "skip" and p.reason == "fingerprint unchanged" for p in plans)


def test_changing_train_lr_reruns_only_train(tmp_path):
    _run(_ctx(tmp_path))
    plans, calls = _run(_ctx(tmp_path, lr=2e-4))
    assert calls == ["train"]
    train = plans[-1]
    assert "config changed" in train.reason and "train.lr" in train.reason


def test_changing_cv_reruns_select_and_train(tmp_path):
    _run(_ctx(tmp_path))
    ctx = _ctx(tmp_path)
    ctx.config.cv = ctx.config.cv.model_copy(update={"seed": 7})
    plans, calls = _run(ctx)
    assert calls == ["select", "train"]
    assert "cv.seed" in plans[1].reason
    assert plans[2].reason.startswith("config changed") or "upstream" in plans[2].reason


def test_missing_output_makes_stage_stale(tmp_path):
    _run(_ctx(tmp_path))
    (tmp_path / "run" / "select" / "out.txt").unlink()
    plans, calls = _run(_ctx(tmp_path))
    assert calls == ["select", "train"]
    assert "outputs missing" in plans[1].reason


def test_interrupted_stage_is_incomplete_and_reruns(tmp_path):
    _run(_ctx(tmp_path))
    (tmp_path / "run" / "train" / "manifest.json").unlink()
    plans, calls = _run(_ctx(tmp_path))
    assert calls == ["train"]
    assert plans[2].state == "incomplete"


def test_force_only_and_from(tmp_path):
    _run(_ctx(tmp_path))
    _, calls = _run(_ctx(tmp_path), force=True)
    assert calls == ["preprocess", "select", "train"]
    _, calls = _run(_ctx(tmp_path), start="select")
    assert calls == ["select", "train"]
    _, calls = _run(_ctx(tmp_path), only="select", force=True)
    assert calls == ["select"]


def test_only_refuses_stale_upstream(tmp_path):
    _run(_ctx(tmp_path))
    ctx = _ctx(tmp_path)
    ctx.config.cv = ctx.config.cv.model_copy(update={"seed": 3})
    with pytest.raises(ArtifactError, match="upstream stage 'select'"):
        plan_run(ctx, _stages(), only="train")


def test_unknown_stage_flag_suggests(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        plan_run(_ctx(tmp_path), _stages(), only="trian")


def test_manifest_records_provenance(tmp_path):
    _run(_ctx(tmp_path))
    manifest = json.loads((tmp_path / "run" / "train" / "manifest.json").read_text())
    assert manifest["stage"] == "train"
    assert manifest["provenance"]["versions"]["vent"]
    assert manifest["provenance"]["versions"]["numpy"]
    assert manifest["outputs"] == {"out.txt": "output"}
    assert manifest["definition"]["upstream"]["select"]


# ---- stages a config does not use, per-config needs, diff_keys


class FakeRadiomics(_Recorder):
    """A stage the config may switch off (as radiomics is when no method reads radiomic sequences)."""

    name = "radiomics"
    needs = ("preprocess",)
    used = True

    def unused_reason(self, config):
        return None if type(self).used else "no method reads it"


class FakeTrainNarrowed(_Recorder):
    """Reads radiomics only when it is used (as train's needs depend on its methods)."""

    name = "train"
    needs = ("preprocess", "radiomics")

    def needs_for(self, config):
        return self.needs if FakeRadiomics.used else ("preprocess",)


def _optional_stages():
    return [FakePreprocess(), FakeRadiomics(), FakeTrainNarrowed()]


def test_a_stage_the_config_does_not_use_is_off_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(FakeRadiomics, "used", False)
    _Recorder.calls = []
    ctx = _ctx(tmp_path)
    plans = plan_run(ctx, _optional_stages())
    radiomics = plans[1]
    assert (radiomics.action, radiomics.state, radiomics.reason) == ("off", "not used", "no method reads it")
    assert radiomics.fingerprint == "" and "radiomics" not in ctx.fingerprints
    assert set(plans[2].definition["upstream"]) == {"preprocess"}
    summary = execute_plan(ctx, plans)
    assert _Recorder.calls == ["preprocess", "train"]
    assert [row["action"] for row in summary] == ["run", "off", "run"]
    assert not (tmp_path / "run" / "radiomics").exists()
    with pytest.raises(ConfigError, match="does not use the radiomics stage.*no method reads it"):
        plan_run(_ctx(tmp_path), _optional_stages(), only="radiomics")
    # switching it on: it runs, and the stage that now reads it re-runs (its upstream changed)
    monkeypatch.setattr(FakeRadiomics, "used", True)
    _Recorder.calls = []
    plans = plan_run(_ctx(tmp_path), _optional_stages())
    assert [p.action for p in plans] == ["skip", "run", "run"]
    assert plans[1].state == "never run"


def test_diff_keys_names_every_changed_leaf():
    from vent.runner import diff_keys

    old = {"train": {"lr": 0.1, "models": {"lstm": {"hidden": [8]}}}, "cv": {"seed": 0}}
    new = {"train": {"lr": 0.2, "models": {"lstm": {"hidden": [8, 4]}, "bilstm": {}}}, "cv": {"seed": 0}}
    assert diff_keys(old, new) == [
        "train.lr (0.1 -> 0.2)",
        "train.models.bilstm (None -> {})",
        "train.models.lstm.hidden ([8] -> [8, 4])",
    ]
    assert diff_keys(old, old) == []
    assert diff_keys(1, 2) == ["2"]
