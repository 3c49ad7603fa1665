"""End to end: a tiny synthetic cohort through all six stages; re-runs skip; a killed stage resumes; a changed
train.lr re-runs only train, explain and report."""

import csv
import os

import pytest
from typer.testing import CliRunner

from vent.cli import app

pytestmark = pytest.mark.slow

CONFIG = """
run_dir: run
data:
  root: data
  synthetic: {cases: 4, modality: pet, size: tiny, seed: 3}
select: {max_voxels_per_case: 2000}
cv: {n_folds: 2, val_fraction: 0.5}
train:
  models: [lstm, lstm_raw]
  hidden: [16, 8]
  lr: 0.003
  batch_size: 256
  max_epochs: 3
  patience: 2
  max_voxels_per_case: 800
  threads: 1
explain: {n_steps: 8, voxels_per_class_per_case: 8}
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    config = folder / "tiny.yaml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    return folder, config, result.output


def test_whole_pipeline_writes_report(finished_run):
    folder, _, output = finished_run
    for stage in ("preprocess", "radiomics", "select", "train", "explain", "report"):
        assert f"[{stage}] runs: never run" in output
        assert (folder / "run" / stage / "manifest.json").is_file()
    report = folder / "run" / "report"
    for name in ("report.html", "report.md", "table2.csv", "per_patient_metrics.csv", "roc.png", "saliency.png"):
        assert (report / name).is_file(), name
    with open(report / "table2.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == ["lstm", "lstm_raw", "lstm@paper", "densest_inhale"]
    assert all(int(r["n_patients"]) == 4 for r in rows)
    for row in rows:
        assert 0.0 <= float(row["auc_mean"]) <= 1.0 and 0.0 <= float(row["dice_mean"]) <= 1.0
    with open(report / "per_patient_metrics.csv") as handle:
        per_patient = list(csv.DictReader(handle))
    assert {r["case"] for r in per_patient} == {f"Subject_{i:02d}" for i in range(1, 5)}
    # every patient is held out exactly once per model
    assert len(per_patient) == 4 * 4


def test_second_run_skips_everything(finished_run):
    _, config, _ = finished_run
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    for stage in ("preprocess", "radiomics", "select", "train", "explain", "report"):
        assert f"[{stage}] skipped: fingerprint unchanged" in result.output
    assert "0 stage(s) run" in result.output


def test_changing_lr_reruns_train_explain_report_only(finished_run, tmp_path):
    folder, config, _ = finished_run
    radiomics_file = folder / "run" / "radiomics" / "Subject_01.h5"
    before = radiomics_file.stat().st_mtime_ns
    changed = folder / "tiny_lr.yaml"
    changed.write_text(CONFIG.replace("lr: 0.003", "lr: 0.002"))
    result = CliRunner().invoke(app, ["run", str(changed)])
    assert result.exit_code == 0, result.output
    for stage in ("preprocess", "radiomics", "select"):
        assert f"[{stage}] skipped" in result.output
    assert "[train] runs: config changed: train.lr (0.003 -> 0.002)" in result.output
    assert "[explain] runs: upstream changed: train" in result.output
    assert "[report] runs: upstream changed" in result.output
    assert radiomics_file.stat().st_mtime_ns == before


def test_killed_stage_resumes_at_next_case(finished_run, monkeypatch):
    from vent.config import load_config
    from vent.runner import RunContext, execute_plan, plan_run
    from vent.stages import all_stages
    from vent.stages.radiomics import RadiomicsStage

    folder, config_path, _ = finished_run
    config = load_config(config_path, ["radiomics.kernel_mm=14"])  # a new radiomics fingerprint
    original = RadiomicsStage.process_case
    done = []

    def crash_on_third(self, ctx, case, out_path, fingerprint):
        if len(done) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the third case
        done.append(case)
        return original(self, ctx, case, out_path, fingerprint)

    monkeypatch.setattr(RadiomicsStage, "process_case", crash_on_third)
    ctx = RunContext(config=config)
    with pytest.raises(KeyboardInterrupt):
        execute_plan(ctx, plan_run(ctx, all_stages(), only="radiomics"))
    radiomics_dir = folder / "run" / "radiomics"
    assert not (radiomics_dir / "manifest.json").exists()
    assert not [p for p in os.listdir(radiomics_dir) if p.startswith(".tmp-")]  # no half-written file left
    kept = {case: (radiomics_dir / f"{case}.h5").stat().st_mtime_ns for case in done}

    monkeypatch.setattr(RadiomicsStage, "process_case", original)
    messages = []
    ctx = RunContext(config=config, echo=messages.append)
    plans = plan_run(ctx, all_stages(), only="radiomics")
    assert plans[1].state == "incomplete"
    execute_plan(ctx, plans)
    assert any("2 case(s) already done, 2 to compute" in m for m in messages)
    assert {case: (radiomics_dir / f"{case}.h5").stat().st_mtime_ns for case in done} == kept
    assert (radiomics_dir / "manifest.json").is_file()


def test_nested_selection_reads_no_test_patient(finished_run):
    import json

    folder, _, _ = finished_run
    select_dir = folder / "run" / "select"
    folds = json.loads((select_dir / "splits.json").read_text())["folds"]
    assert json.loads((folder / "run" / "train" / "splits.json").read_text())["folds"] == folds
    for fold in folds:
        nested = json.loads((select_dir / f"nested_fold{fold['index']}.json").read_text())
        read = {name.removesuffix(".h5") for name in nested["cases"]}
        assert read == set(fold["train"]) | set(fold["val"])
        assert not read & set(fold["test"])
    paper = json.loads((select_dir / "paper.json").read_text())
    assert len(paper["cases"]) == 4


def test_edge_inputs_retrain_and_are_explained(finished_run, tmp_path):
    """train.edge_inputs appends the lung-edge sequences to every sequence model (raw too), and the saliency ranks the
    edge channels beside the radiomic sequences. Runs on a copy of the finished run (other tests may have changed it,
    so which upstream stages re-run is not asserted here)."""
    import shutil

    folder, _, _ = finished_run
    shutil.copytree(folder / "run", tmp_path / "run")
    config = tmp_path / "edge.yaml"
    edited = CONFIG.replace("root: data", f"root: {folder / 'data'}")
    config.write_text(edited.replace("  threads: 1\n", "  threads: 1\n  edge_inputs: [inside, distance_mm]\n"))
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    assert "[train] runs:" in result.output
    with open(tmp_path / "run" / "explain" / "importance.csv") as handle:
        ids = {row["feature_id"] for row in csv.DictReader(handle)}
    assert {"edge_inside", "edge_distance_mm"} <= ids


def test_toggling_the_no_learning_row_keeps_the_trained_folds(finished_run, tmp_path):
    """train.no_learning_baseline changes which rows are scored, not how any model trains: every fold is kept."""
    import shutil

    folder, _, _ = finished_run
    shutil.copytree(folder / "run", tmp_path / "run")
    config = tmp_path / "copy.yaml"
    config.write_text(CONFIG.replace("root: data", f"root: {folder / 'data'}"))
    assert CliRunner().invoke(app, ["run", str(config)]).exit_code == 0  # brings the copy up to date
    result = CliRunner().invoke(app, ["run", str(config), "--set", "train.no_learning_baseline=false"])
    assert result.exit_code == 0, result.output
    assert "[train] runs: config changed: train.no_learning_baseline (True -> False)" in result.output
    assert result.output.count("already trained with these settings, kept") == 6  # 3 rows x 2 folds
    with open(tmp_path / "run" / "report" / "table2.csv") as handle:
        assert "densest_inhale" not in {row["model"] for row in csv.DictReader(handle)}
