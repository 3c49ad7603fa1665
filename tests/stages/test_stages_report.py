"""Report stage: reads scores only from evaluate/ and leaves out the sections of stages the config does not use.

A tiny run folder: three preprocessed cases, their predictions in the prediction contract and an evaluate/ folder
written by vent.io.evaluation, for a config whose only method is the no-learning rule (no radiomics, select, explain).
"""

from __future__ import annotations

import base64
import csv
import re
from pathlib import Path

import numpy as np
import pytest

from vent.config import config_from_dict
from vent.cv import load_folds, make_patient_folds, save_folds
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
COHORT_ROW = {"n_phases": 3, "n_lung_voxels": 24, "lung_volume_ml": "0.19;0.2;0.19", "inhale_phase": 1,
              "exhale_phase": 0, "defect_fraction": 0.4, "gt_threshold": 0.5, "gt_outliers": 1}
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
                         Prediction(case, RULE, fold, score, 0.7, coords, GRID))
        per_patient.append({"model": RULE, "case": case, "fold": fold,
                            **{m: 0.5 + 0.1 * fold + 0.01 * k for k, m in enumerate(METRICS)}})
    with open(layout.cohort_file(run_dir), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COHORT_ROW) + ["case"])
        writer.writeheader()
        writer.writerows({"case": case, **COHORT_ROW} for case in CASES)
    folds = make_patient_folds(list(CASES), n_folds=3, val_fraction=0.2, seed=0)
    save_folds(layout.splits_file(run_dir), folds, {"seed": 0, "n_folds": 3, "cases": list(CASES)})
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
    assert ReportStage().needs_for(rule_only) == ("preprocess", "split", "evaluate")
    full = _config(tmp_path, models=["lstm", RULE], reference_model="lstm")
    assert ReportStage().needs_for(full) == ("preprocess", "radiomics", "split", "select", "evaluate", "explain")


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
    patient_figures = {f"patient_{case}.png" for case in CASES}
    assert {"roc.png", "roc.svg", "per_patient_metrics.png", "report.md", "report.html"} | patient_figures <= set(
        outputs)
    assert not (report / "fig11_saliency_by_class.png").exists() and not (report / "selection.png").exists()
    fold_of = {case: fold.index for fold in load_folds(layout.splits_file(config.run_dir))[0] for case in fold.test}
    assert f"Subject_01: a test patient of fold {fold_of['Subject_01']}" in markdown
    assert evaluation.rows[0].predictions["Subject_01"] == "train/predictions/densest_inhale/Subject_01.h5"


def test_every_figure_named_in_the_html_exists_and_is_not_empty(tmp_path: Path) -> None:
    config = _config(tmp_path, models=[RULE], reference_model=RULE)
    _write_run(config.run_dir)
    ReportStage().run(RunContext(config), plan=None)
    report = layout.stage_dir(config.run_dir, "report")
    page = (report / "report.html").read_text()
    named = re.findall(r"<figure data-file='([^']+)'>", page)
    assert len(named) == 2 + len(CASES) and len(set(named)) == len(named)  # ROC, per-patient metrics, patients
    linked = set(re.findall(r"<a href='([^']+\.(?:png|svg))'>", page))
    assert {name.replace(".png", ".svg") for name in named} | set(named) == linked
    for name in linked:
        assert (report / name).stat().st_size > 1000, name
    embedded = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(embedded) == len(named)
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in embedded)


def test_the_volumes_overlay_on_the_analysis_grid_and_are_listed(tmp_path: Path) -> None:
    import SimpleITK as sitk

    config = _config(tmp_path, models=[RULE], reference_model=RULE)
    _write_run(config.run_dir)
    ReportStage().run(RunContext(config), plan=None)
    report = layout.stage_dir(config.run_dir, "report")
    with open(report / "volumes.csv", newline="") as handle:
        listed = [row["file (in report/)"] for row in csv.DictReader(handle)]
    names = {"ct_max_exhale", "ct_max_inhale", "lung_mask", "refvi", "ground_truth", f"{RULE}_probability",
             f"{RULE}_defect"}
    assert set(listed) == {f"volumes/{case}/{case}_{name}.nii.gz" for case in CASES for name in names}
    for name in listed:
        image = sitk.ReadImage(str(report / name))
        assert image.GetSize() == GRID.shape_zyx[::-1] and image.GetSpacing() == GRID.spacing_mm_xyz, name
    linked = report / "volumes" / "Subject_02" / f"Subject_02_{RULE}_defect.nii.gz"
    source = layout.prediction_map_file(config.run_dir, RULE, "Subject_02", "defect")
    assert linked.read_bytes() == source.read_bytes()
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(report / "volumes/Subject_02/Subject_02_ground_truth.nii.gz")))
    assert truth.sum() > 0 and set(np.unique(truth)) <= {0, 1}


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


def test_segmented_masks_and_their_warnings_are_listed_in_the_data_section(tmp_path: Path) -> None:
    """A case whose lungs vent segmented, one lung only: the report names the case and carries the warning."""
    import json

    from vent.io.artifacts import read_preprocessed_case

    config = _config(tmp_path, models=[RULE], reference_model=RULE)
    _write_run(config.run_dir)
    path = layout.case_file(config.run_dir, "preprocess", "Subject_02")
    case = read_preprocessed_case(path)
    facts = {"backend": "classical", "warnings": ["PhaseCT_01: only the left lung was found (97% on its side)"]}
    attrs = {**case.attrs, "lung_masks": "segmented", "segmentation": json.dumps(facts)}
    write_preprocessed_case(path, PreprocessedCase(case.case_id, case.ct_tzyx, case.phase_masks_tzyx,
                                                   case.lung_mask_zyx, case.refvi_zyx, case.defect_zyx, case.grid,
                                                   attrs), fingerprint="fp-Subject_02")
    layout.stage_dir(config.run_dir, "report").mkdir()
    ReportStage().run(RunContext(config), plan=None)
    markdown = (layout.stage_dir(config.run_dir, "report") / "report.md").read_text()
    assert "segmented by vent (preprocess.segmentation: backend 'classical', mode 'per_phase') for 1 of 3" in markdown
    assert "patients: Subject_02. Segmentation warnings (1;" in markdown
    assert "- Subject_02: PhaseCT_01: only the left lung was found (97% on its side)" in markdown
