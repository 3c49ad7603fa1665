"""End to end through the CLI: a tiny synthetic cohort through all eight stages; re-runs skip; a killed stage resumes;
a changed train.lr re-runs only train and what reads it; adding a method trains only that method.

The module's finished run is never changed: every test that runs again works on its own copy of the run folder
(``_copy``), whose config reads the module's cohort by its absolute path (the data section, paths included, is part
of the preprocess fingerprint, so the copy's stages are current exactly when the original's are). The fixture
checks at the end that no file of the finished run or its cohort changed, so the tests pass in any order.
"""

import csv
import json
import os
import re
import shutil

import pytest
from typer.testing import CliRunner

from vent.cli import app
from vent.io import layout

pytestmark = pytest.mark.slow

STAGES = ("preprocess", "split", "radiomics", "select", "train", "evaluate", "explain", "report")
CONFIG = """
run_dir: run
data:
  root: data
  synthetic: {cases: 4, modality: pet, size: tiny, seed: 3}
select: {max_voxels_per_case: 2000}
cv: {n_folds: 2, val_fraction: 0.5}
train:
  models:
    lstm: {hidden: [16, 8]}
    lstm_raw: {hidden: [16, 8]}
  lr: 0.003
  batch_size: 256
  max_epochs: 3
  patience: 2
  max_voxels_per_case: 800
explain: {n_steps: 8, voxels_per_class_per_case: 8}
execution: {threads: 1}
"""
ROWS = ["lstm", "lstm_raw", "lstm@paper"]


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if not p.name.endswith(".seal.json")  # a check may refresh a seal's cached stat (vent.io.seals), nothing else
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    config = folder / "tiny.yaml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    before = _snapshot(folder)
    yield folder, config, result.output
    assert _snapshot(folder) == before, "a test changed the module's finished run; work on _copy(finished_run, ...)"


def _copy(finished_run, tmp_path, text=CONFIG):
    """A copy of the finished run folder in ``tmp_path`` and its config (``text``) reading the module's cohort."""
    folder, _, _ = finished_run
    shutil.copytree(folder / "run", tmp_path / "run")
    config = tmp_path / "tiny.yaml"
    config.write_text(text.replace("root: data", f"root: {folder / 'data'}"))
    return config


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_whole_pipeline_writes_report(finished_run):
    folder, _, output = finished_run
    for stage in STAGES:
        assert f"[{stage}] runs: never run" in output
        assert layout.manifest_file(folder / "run", stage).is_file()
    report = folder / "run" / "report"
    for name in ("report.html", "report.md", "table2.csv", "per_patient_metrics.csv", "roc.png", "roc.svg",
                 "fig3_correlation_dendrogram.png", "fig11_saliency_by_class.png", "fig12_importance_histogram.png",
                 "fig13_key_sequences.png", "deletion_curve.png", "patient_Subject_01.png", "volumes.csv"):
        assert (report / name).is_file(), name
    for table in (layout.evaluate_file(folder / "run", "table2.csv"), report / "table2.csv"):
        rows = _rows(table)
        assert [r["model"] for r in rows] == ROWS, table
        assert all(int(r["n_patients"]) == 4 for r in rows)
        for row in rows:
            assert 0.0 <= float(row["auc_mean"]) <= 1.0 and 0.0 <= float(row["dice_mean"]) <= 1.0
    per_patient = _rows(layout.evaluate_file(folder / "run", "per_patient_metrics.csv"))
    assert {r["case"] for r in per_patient} == {f"Subject_{i:02d}" for i in range(1, 5)}
    # every patient is held out exactly once per row
    assert sorted((r["model"], r["case"]) for r in per_patient) == sorted(
        (row, f"Subject_{i:02d}") for row in ROWS for i in range(1, 5)
    )


def test_second_run_skips_everything(finished_run, tmp_path):
    config = _copy(finished_run, tmp_path)
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    for stage in STAGES:
        assert f"[{stage}] skipped: fingerprint unchanged" in result.output
    assert "0 stage(s) run" in result.output


def test_vent_report_rebuilds_from_artifacts_alone_and_the_page_loads_in_chromium(finished_run, tmp_path):
    config = _copy(finished_run, tmp_path)
    run = tmp_path / "run"
    before = {stage: layout.manifest_file(run, stage).read_bytes() for stage in STAGES[:-1]}
    result = CliRunner().invoke(app, ["report", str(config), "--check"])
    assert result.exit_code == 0, result.output
    assert "[report] runs: forced" in result.output and "report rebuilt in" in result.output
    assert {stage: layout.manifest_file(run, stage).read_bytes() for stage in STAGES[:-1]} == before
    check = json.loads(layout.report_file(run, "browser_check.json").read_text())
    assert check["ok"] and check["n_images"] >= 10 and not check["broken_images"], check
    assert check["console_errors"] == [] and check["page_errors"] == [] and check["failed_requests"] == []
    assert layout.report_file(run, "screenshot.png").stat().st_size > 50_000
    page = layout.report_file(run, "report.html").read_text()
    named = re.findall(r"<figure data-file='([^']+)'>", page)
    assert check["n_images"] == len(named)
    for name in named:  # every figure named in the HTML exists, PNG and SVG, and is not empty
        for path in (layout.report_file(run, name), layout.report_file(run, name).with_suffix(".svg")):
            assert path.stat().st_size > 1000, path


def test_vent_report_refuses_stale_upstream_artifacts(finished_run, tmp_path):
    config = _copy(finished_run, tmp_path, CONFIG.replace("lr: 0.003", "lr: 0.002"))
    result = CliRunner().invoke(app, ["report", str(config)])
    assert result.exit_code != 0
    assert "upstream stage 'train' is stale" in result.output and "vent run CONFIG --from train" in result.output


def test_changing_lr_reruns_train_and_what_reads_it_only(finished_run, tmp_path):
    config = _copy(finished_run, tmp_path, CONFIG.replace("lr: 0.003", "lr: 0.002"))
    radiomics_file = tmp_path / "run" / "radiomics" / "Subject_01.h5"
    before = radiomics_file.stat().st_mtime_ns
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    for stage in ("preprocess", "split", "radiomics", "select"):
        assert f"[{stage}] skipped: fingerprint unchanged" in result.output
    assert "[train] runs: config changed: train.lr (0.003 -> 0.002)" in result.output
    assert "[evaluate] runs: upstream changed: train" in result.output
    assert "[explain] runs: upstream changed: train" in result.output
    assert "[report] runs: upstream changed" in result.output
    assert ": kept (" not in result.output  # the learning rate is part of every learned fold's identity
    assert radiomics_file.stat().st_mtime_ns == before


def test_killed_stage_resumes_at_next_case(finished_run, tmp_path, monkeypatch):
    """Ctrl-C during the second phase of the third case: the two merged cases and the third case's finished phase
    are kept; the rerun computes only the rest."""
    from vent.config import load_config
    from vent.runner import RunContext, execute_plan, plan_run
    from vent.stages import all_stages
    from vent.stages import radiomics as radiomics_stage

    # a new radiomics fingerprint; serial, so that the patched task function runs here, not in a worker process
    config = load_config(_copy(finished_run, tmp_path), ["radiomics.kernel_mm=14", "execution.backend=serial"])
    original = radiomics_stage.compute_radiomics_job
    merged, phases_of_third = [], []

    def crash_in_third_case(job, progress):
        if len(merged) == 2 and job.phase is not None:
            if phases_of_third:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the third case
            phases_of_third.append((job.case, job.phase))
        value = original(job, progress)
        if job.phase is None:
            merged.append(job.case)
        return value

    monkeypatch.setattr(radiomics_stage, "compute_radiomics_job", crash_in_third_case)
    ctx = RunContext(config=config)
    with pytest.raises(KeyboardInterrupt):
        execute_plan(ctx, plan_run(ctx, all_stages(), only="radiomics"))
    radiomics_dir = tmp_path / "run" / "radiomics"
    assert not (radiomics_dir / "manifest.json").exists()
    assert not [p for p in os.listdir(radiomics_dir) if p.startswith(".tmp-")]  # no half-written file left
    kept = {case: (radiomics_dir / f"{case}.h5").stat().st_mtime_ns for case in merged}
    (third, phase), = phases_of_third
    phase_file = layout.radiomics_phase_file(tmp_path / "run", third, phase)
    assert phase_file.is_file() and not [p for p in os.listdir(phase_file.parent) if p.startswith(".tmp-")]

    ran = []

    def record(job, progress):
        ran.append((job.case, job.phase))
        return original(job, progress)

    monkeypatch.setattr(radiomics_stage, "compute_radiomics_job", record)
    messages = []
    ctx = RunContext(config=config, echo=messages.append)
    plans = {plan.stage.name: plan for plan in plan_run(ctx, all_stages(), only="radiomics")}
    assert plans["radiomics"].state == "incomplete"
    execute_plan(ctx, list(plans.values()))
    assert any("2 case(s) already done, 2 to compute" in m for m in messages)
    assert {case: (radiomics_dir / f"{case}.h5").stat().st_mtime_ns for case in merged} == kept
    assert (third, phase) not in ran and (third, None) in ran  # the finished phase is reused, the case merged
    assert not [case for case, _ in ran if case in merged]
    assert (radiomics_dir / "manifest.json").is_file() and not (radiomics_dir / "partial").exists()


def test_nested_selection_reads_no_test_patient(finished_run):
    folder, _, _ = finished_run
    run_dir = folder / "run"
    folds = json.loads(layout.splits_file(run_dir).read_text())["folds"]
    assert not (run_dir / "select" / "splits.json").exists() and not (run_dir / "train" / "splits.json").exists()
    summary = json.loads(layout.selection_summary_file(run_dir).read_text())
    for fold in folds:
        nested = json.loads(layout.selection_file(run_dir, "nested", fold["index"]).read_text())
        read = {name.removesuffix(".h5") for name in nested["cases"]}
        assert read == set(fold["train"]) | set(fold["val"])
        assert not read & set(fold["test"])
        assert summary["nested"][str(fold["index"])]["training_cases"] == sorted(read)
    paper = json.loads(layout.selection_file(run_dir, "paper").read_text())
    assert len(paper["cases"]) == 4


def test_edge_inputs_retrain_and_are_explained(finished_run, tmp_path):
    """train.edge_inputs appends the lung-edge sequences to every sequence model (raw too), and the saliency ranks the
    edge channels beside the radiomic sequences."""
    edited = CONFIG.replace("  patience: 2\n", "  patience: 2\n  edge_inputs: [inside, distance_mm]\n")
    config = _copy(finished_run, tmp_path, edited)
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    for stage in ("preprocess", "split", "radiomics", "select"):
        assert f"[{stage}] skipped: fingerprint unchanged" in result.output
    assert "[train] runs: config changed: train.edge_inputs" in result.output
    assert ": kept (" not in result.output
    with open(tmp_path / "run" / "explain" / "importance.csv") as handle:
        ids = {row["feature_id"] for row in csv.DictReader(handle)}
    assert {"edge_inside", "edge_distance_mm"} <= ids


def test_adding_the_no_learning_rule_trains_nothing_again(finished_run, tmp_path):
    """densest_inhale in train.models adds a row; it changes how no learned fold trains, so every fold is kept."""
    edited = CONFIG.replace("  lr: 0.003\n", "    densest_inhale: {}\n  lr: 0.003\n")
    config = _copy(finished_run, tmp_path, edited)
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    for stage in ("preprocess", "split", "radiomics", "select"):
        assert f"[{stage}] skipped: fingerprint unchanged" in result.output
    assert "[train] runs: config changed: train.models.densest_inhale (None -> {})" in result.output
    kept = sorted(line.strip() for line in result.output.splitlines() if ": kept (" in line)
    assert kept == sorted(f"[train] {row} fold {k}: kept (identity unchanged)" for row in ROWS for k in (0, 1))
    assert "[train] densest_inhale fold 0: rule on 2 test patient(s)" in result.output
    rows = _rows(layout.evaluate_file(tmp_path / "run", "table2.csv"))
    assert [r["model"] for r in rows] == [*ROWS, "densest_inhale"]
    assert int(rows[-1]["n_patients"]) == 4
    assert "densest_inhale" in {r["model"] for r in _rows(tmp_path / "run" / "report" / "table2.csv")}


def test_status_shows_every_training_fold(finished_run, tmp_path):
    folder, config, _ = finished_run

    def fold_rows(output):
        table = output[output.index("training folds"):]
        cells = [[c.strip() for c in line.split("│")[1:-1]] for line in table.splitlines() if line.count("│") == 5]
        return {(c[0], c[1]): c[2] for c in cells if c[0] != "row"}

    result = CliRunner().invoke(app, ["status", str(config), "--no-estimate"])  # the folds; estimates: test_estimate
    assert result.exit_code == 0, result.output
    assert fold_rows(result.output) == {(row, str(k)): "current" for row in ROWS for k in (0, 1)}
    longer = CliRunner().invoke(app, ["status", str(config), "--no-estimate", "--set", "train.max_epochs=5"])
    assert fold_rows(longer.output) == {(row, str(k)): "resume" for row in ROWS for k in (0, 1)}
    shorter = CliRunner().invoke(app, ["status", str(config), "--no-estimate", "--set", "train.max_epochs=2"])
    assert fold_rows(shorter.output) == {(row, str(k)): "stale" for row in ROWS for k in (0, 1)}
