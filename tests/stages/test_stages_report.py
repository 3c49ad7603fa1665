"""Report stage: reads scores only from evaluate/ and leaves out the sections of stages the config does not use.

A tiny run folder: three preprocessed cases, their predictions in the prediction contract and an evaluate/ folder
written by vent.io.evaluation, for a config whose only method is the no-learning rule (no radiomics, select, explain).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from vent.config import config_from_dict
from vent.evaluation import METRICS, table2_rows
from vent.io import layout
from vent.io.artifacts import PreprocessedCase, write_preprocessed_case
from vent.io.evaluation import EvaluatedRow, Evaluation, write_evaluation, write_roc
from vent.io.images import Grid
from vent.io.predictions import Prediction, write_prediction
from vent.models.registry import get_spec
from vent.runner import RunContext
from vent.stages.explain import ExplainStage
from vent.stages.radiomics import RadiomicsStage
from vent.stages.report import ReportStage, threshold_note
from vent.stages.select import SelectStage

RULE = "densest_inhale"
CASES = ("Subject_01", "Subject_02", "Subject_03")
GRID = Grid((6, 5, 4), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _config(tmp_path: Path, **train):
    return config_from_dict(
        {"run_dir": "run", "data": {"root": "data"}, "cv": {"n_folds": 3}, "train": train}, base_dir=tmp_path
    )


def _preprocessed(run_dir: Path, case: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lung = np.zeros(GRID.shape_zyx, np.uint8)
    lung[1:3, 1:4, 1:5] = 1
    defect = (lung * (rng.random(GRID.shape_zyx) < 0.4)).astype(np.uint8)
    ct = rng.normal(-700, 50, (3, *GRID.shape_zyx)).astype(np.float32)
    attrs = {"phase_order": [2, 3, 1], "exhale_phase": 0, "inhale_phase": 1, "n_lung_voxels": int(lung.sum())}
    case_data = PreprocessedCase(case, ct, np.repeat(lung[None], 3, 0), lung, np.ones(lung.shape, np.float32),
                                 defect, GRID, attrs)
    write_preprocessed_case(layout.case_file(run_dir, "preprocess", case), case_data, fingerprint=f"fp-{case}")
    return lung


def _write_run(run_dir: Path) -> Evaluation:
    """preprocess/ (cases, cohort.csv), the rule's predictions and evaluate/ (rows, tables, ROC)."""
    layout.stage_dir(run_dir, "preprocess").mkdir(parents=True)
    layout.prediction_dir(run_dir, RULE).mkdir(parents=True)
    per_patient = []
    for fold, case in enumerate(CASES):
        lung = _preprocessed(run_dir, case, fold)
        coords = np.argwhere(lung > 0).astype(np.int32)
        score = np.linspace(0.0, 1.0, len(coords), dtype=np.float32)
        write_prediction(layout.prediction_file(run_dir, RULE, case),
                         Prediction(case, RULE, fold, score, 0.7, coords, GRID), volumes=False)
        per_patient.append({"model": RULE, "case": case, "fold": fold,
                            **{m: 0.5 + 0.1 * fold + 0.01 * k for k, m in enumerate(METRICS)}})
    with open(layout.cohort_file(run_dir), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "n_phases"])
        writer.writeheader()
        writer.writerows({"case": case, "n_phases": 3} for case in CASES)
    spec = get_spec(RULE)
    row = EvaluatedRow(RULE, RULE, "none", spec.label, spec.family, spec.learns, True, [],
                       {case: str(layout.prediction_file(Path("."), RULE, case)) for case in CASES})
    vampire = [{"model": RULE, "case": case, "fold": fold, "estimate": "1 - p(defect)", "r_s": 0.2 + 0.1 * fold,
                "dsc_low": 0.4, "dsc_high": 0.5} for fold, case in enumerate(CASES)]
    summary = [{"model": RULE, "estimate": "1 - p(defect)",
                **table2_rows(vampire, RULE, [RULE], ("r_s", "dsc_low", "dsc_high"))[0]}]
    evaluation = Evaluation(RULE, "nested", "val_defect_fraction", 3, [row], per_patient,
                            table2_rows(per_patient, RULE, [RULE]), 0.3, vampire, summary)
    write_evaluation(run_dir, evaluation)
    write_roc(run_dir, {RULE: (np.array([0.0, 0.4, 1.0]), np.array([0.0, 0.7, 1.0]), 0.65, 3)})
    return evaluation


def test_a_rule_only_config_needs_preprocess_and_evaluate_only(tmp_path: Path) -> None:
    rule_only = _config(tmp_path, models=[RULE], reference_model=RULE)
    assert ReportStage().needs_for(rule_only) == ("preprocess", "evaluate")
    full = _config(tmp_path, models=["lstm", RULE], reference_model="lstm")
    assert ReportStage().needs_for(full) == ("preprocess", "radiomics", "select", "evaluate", "explain")


def test_report_of_a_rule_only_run_reads_evaluate_and_says_why_sections_are_absent(tmp_path: Path) -> None:
    config = _config(tmp_path, models=[RULE], reference_model=RULE)
    evaluation = _write_run(config.run_dir)
    layout.stage_dir(config.run_dir, "report").mkdir()
    outputs = ReportStage().run(RunContext(config), plan=None)

    report = layout.stage_dir(config.run_dir, "report")
    markdown, page = (report / "report.md").read_text(), (report / "report.html").read_text()
    label = f"{get_spec(RULE).label} (proposed)"
    assert f"| {label} | 3 | 0.60(0.50-0.70) |" in markdown and f"<td>{label}</td><td>3</td>" in page
    assert (report / "table2.md").read_text() in markdown
    with open(report / "table2.csv", newline="") as handle:
        table2 = list(csv.DictReader(handle))
    assert table2[0]["model"] == RULE and float(table2[0]["dice_mean"]) == pytest.approx(0.6)
    assert "VAMPIRE metrics" in markdown and "lowest and highest 30% of lung voxels" in markdown
    assert f"| {label} | 1 - p(defect) | 3 | 0.30(0.20-0.40) | 0.40(0.40-0.40) | 0.50(0.50-0.50) |" in markdown
    with open(report / "vampire_metrics.csv", newline="") as handle:
        vampire = list(csv.DictReader(handle))
    assert vampire[0]["model"] == RULE and float(vampire[0]["r_s_mean"]) == pytest.approx(0.3)
    first = (report / "per_patient_metrics.csv").read_text().splitlines()[1]
    assert first == "densest_inhale,Subject_01,0,0.5,0.51,0.52,0.53"
    for stage in (ExplainStage(), SelectStage(), RadiomicsStage()):
        assert f"the {stage.name} stage is not used; {stage.unused_reason(config)}." in markdown
    assert "Kernels bounded" not in markdown and "voxels without RefVI" not in markdown  # no empty-kernel table
    assert "Phases in the figures: 1 max exhale, 2 max inhale, 3." in markdown
    assert "Features selected in" not in markdown and "each method sets its own" in markdown
    assert "smallest possible two-sided Wilcoxon" not in markdown  # one row: nothing is tested
    assert {"roc.png", "example_case.png", "report.md", "report.html"} <= set(outputs)
    assert not (report / "saliency.png").exists() and not (report / "selection.png").exists()
    assert "Subject_01, coronal slice" in markdown  # the example case: the first prediction file of the reference
    assert evaluation.rows[0].predictions["Subject_01"] == "train/predictions/densest_inhale/Subject_01.h5"


def test_threshold_note_keeps_the_old_text_for_rows_with_thresholds() -> None:
    def row(name, values):
        return EvaluatedRow(name, name, "nested", name, "sequence", True, name == "lstm",
                            [{"fold": k, "value": v, "rule": "val_defect_fraction"} for k, v in enumerate(values)])

    evaluation = Evaluation("lstm", "nested", "val_defect_fraction", 2,
                            [row("lstm", [0.412, 0.388]), row("bilstm", [0.27, 0.61]), row(RULE, [])], [], [])
    assert threshold_note(evaluation) == (
        "Binary threshold 'val_defect_fraction' on each fold's validation patients (per fold: lstm 0.41/0.39; "
        "bilstm 0.27/0.61)."
    )
    evaluation.threshold_setting = 0.5
    assert threshold_note(evaluation).startswith("Binary threshold fixed at 0.5 (per fold: lstm 0.41/0.39;")
