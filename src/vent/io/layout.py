"""The run folder's layout: pure functions from a run folder (and ids) to artifact paths.

The only module that spells run-folder paths; stages, readers, tests and scripts ask it. Nothing here touches the
disk. ::

    <run_dir>/
      <stage>/manifest.json                    written last by the runner (the stage's fingerprint)
      <stage>/execution.json                   how its tasks ran (preprocess, radiomics, train: vent.execution)
      preprocess/<case>.h5, cohort.csv         vent.io.artifacts (PreprocessedCase)
      radiomics/<case>.h5                      vent.io.artifacts (RadiomicsCase)
      radiomics/partial/<case>/phase_<t>.h5    one phase's features while the case is computed (removed once merged)
      split/splits.json                        vent.cv (seeded patient folds, written once)
      select/paper.json, nested_fold<k>.json, summary.json
      train/<row>/fold_<k>/                    model.pt, checkpoint.pt (networks), forest.joblib, result.json
      train/predictions/<row>/<case>.h5        vent.io.predictions (the prediction contract)
      train/runs.json, thresholds.json
      evaluate/per_patient_metrics.csv, table2.csv, roc.h5, rows.json
      explain/saliency.h5, importance.csv, trends.csv, trend_bands.csv, summary.json
      report/report.html, report.md, *.png, *.svg, *.csv, volumes/<case>/<case>_<name>.nii.gz
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "stage_dir",
    "manifest_file",
    "hash_cache_file",
    "calibration_file",
    "excluded_file",
    "case_file",
    "cohort_file",
    "radiomics_phase_file",
    "radiomics_partial_dir",
    "splits_file",
    "selection_file",
    "selection_summary_file",
    "fold_dir",
    "model_file",
    "checkpoint_file",
    "forest_file",
    "fold_result_file",
    "prediction_dir",
    "prediction_file",
    "execution_file",
    "prediction_map_file",
    "runs_file",
    "thresholds_file",
    "evaluate_file",
    "explain_file",
    "report_file",
]


def stage_dir(run_dir: Path, stage: str) -> Path:
    """``<run_dir>/<stage>``: everything one stage writes."""
    return Path(run_dir) / stage


def manifest_file(run_dir: Path, stage: str) -> Path:
    """The stage's manifest, written last (its presence means the stage finished)."""
    return stage_dir(run_dir, stage) / "manifest.json"


def execution_file(run_dir: Path, stage: str) -> Path:
    """How the stage's tasks ran (``vent.execution.execution_record``): backend, workers, threads, each task's time and
    worker; also in the manifest's outputs."""
    return stage_dir(run_dir, stage) / "execution.json"


def hash_cache_file(run_dir: Path) -> Path:
    """The cache of input-file hashes (by size and mtime), so unchanged inputs are not hashed again."""
    return Path(run_dir) / ".cache" / "input_hashes.json"


def calibration_file() -> Path:
    """This machine's measured rates for ``vent status``'s time estimates (``vent.estimate``), with the machine:
    in the user's cache folder (``$XDG_CACHE_HOME``, else ``~/.cache``), not a run folder, since every run on the
    machine shares them."""
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vent" / "calibration.json"


def excluded_file(run_dir: Path) -> Path:
    """``data.exclude`` as used by the run: subject -> reason."""
    return stage_dir(run_dir, "preprocess") / "excluded.json"


def case_file(run_dir: Path, stage: str, case: str) -> Path:
    """A per-case artifact ``<run_dir>/<stage>/<case>.h5`` (preprocess, radiomics)."""
    return stage_dir(run_dir, stage) / f"{case}.h5"


def radiomics_partial_dir(run_dir: Path, case: str) -> Path:
    """Where the radiomics stage keeps a case's per-phase results until it merges them into ``radiomics/<case>.h5``."""
    return stage_dir(run_dir, "radiomics") / "partial" / case


def radiomics_phase_file(run_dir: Path, case: str, phase: int) -> Path:
    """One phase's features of a case (``vent.io.artifacts.create_radiomics_phase``), phase 0 first."""
    return radiomics_partial_dir(run_dir, case) / f"phase_{phase:02d}.h5"


def cohort_file(run_dir: Path) -> Path:
    """The preprocess stage's per-case summary table."""
    return stage_dir(run_dir, "preprocess") / "cohort.csv"


def splits_file(run_dir: Path) -> Path:
    """The seeded patient folds every method and the selection read (``vent.cv`` format)."""
    return stage_dir(run_dir, "split") / "splits.json"


def selection_file(run_dir: Path, mode: str, fold: int | None = None) -> Path:
    """A feature selection: ``paper.json`` (all patients) or ``nested_fold<k>.json`` (fold k's training patients)."""
    if mode == "paper":
        return stage_dir(run_dir, "select") / "paper.json"
    if mode != "nested" or fold is None:
        raise ValueError(f"selection mode must be 'paper', or 'nested' with a fold; got {mode!r}, fold {fold}")
    return stage_dir(run_dir, "select") / f"nested_fold{int(fold)}.json"


def selection_summary_file(run_dir: Path) -> Path:
    return stage_dir(run_dir, "select") / "summary.json"


def fold_dir(run_dir: Path, row: str, fold: int) -> Path:
    """One method's training on one fold: ``train/<row>/fold_<k>``."""
    return stage_dir(run_dir, "train") / row / f"fold_{int(fold)}"


def model_file(run_dir: Path, row: str, fold: int) -> Path:
    return fold_dir(run_dir, row, fold) / "model.pt"


def checkpoint_file(run_dir: Path, row: str, fold: int) -> Path:
    """The last epoch's resumable state (kept after training so a longer run can continue from it)."""
    return fold_dir(run_dir, row, fold) / "checkpoint.pt"


def forest_file(run_dir: Path, row: str, fold: int) -> Path:
    """A fitted scikit-learn forest (joblib, compressed)."""
    return fold_dir(run_dir, row, fold) / "forest.joblib"


def registration_file(run_dir: Path, key: str, case: str) -> Path:
    """A case's exhale-to-inhale registration (displacement field, warped inhale CT), shared by every CT-ventilation
    row with the same registration settings: ``train/registration/<settings key>/<case>.h5``."""
    return stage_dir(run_dir, "train") / "registration" / key / f"{case}.h5"


def fold_result_file(run_dir: Path, row: str, fold: int) -> Path:
    """The fold's record (identity, threshold, history), written last: its presence means the fold finished."""
    return fold_dir(run_dir, row, fold) / "result.json"


def prediction_dir(run_dir: Path, row: str) -> Path:
    return stage_dir(run_dir, "train") / "predictions" / row


def prediction_file(run_dir: Path, row: str, case: str) -> Path:
    """A method's held-out prediction of one patient (``vent.io.predictions``)."""
    return prediction_dir(run_dir, row) / f"{case}.h5"


def runs_file(run_dir: Path) -> Path:
    """The Table 2 rows the train stage produced: row, model, selection mode."""
    return stage_dir(run_dir, "train") / "runs.json"


def thresholds_file(run_dir: Path) -> Path:
    return stage_dir(run_dir, "train") / "thresholds.json"


def evaluate_file(run_dir: Path, name: str) -> Path:
    """An output of the evaluate stage (``per_patient_metrics.csv``, ``table2.csv``, ``roc.h5``, ``rows.json``)."""
    return stage_dir(run_dir, "evaluate") / name


def explain_file(run_dir: Path, name: str) -> Path:
    """An output of the explain stage (``saliency.h5``, ``importance.csv``, ``trends.csv``, ``trend_bands.csv``,
    ``summary.json``)."""
    return stage_dir(run_dir, "explain") / name


def report_file(run_dir: Path, name: str) -> Path:
    return stage_dir(run_dir, "report") / name


def report_volumes_dir(run_dir: Path) -> Path:
    """The report's volumes for viewers: one folder per patient (``report_volume_file``)."""
    return stage_dir(run_dir, "report") / "volumes"


def report_volume_file(run_dir: Path, case: str, name: str) -> Path:
    """``report/volumes/<case>/<case>_<name>.nii.gz``: a patient's CT, RefVI, ground truth or one method's map on the
    analysis grid, named so that 3D Slicer and ITK-SNAP users find each patient's files together."""
    return report_volumes_dir(run_dir) / case / f"{case}_{name}.nii.gz"


def prediction_map_file(run_dir: Path, row: str, case: str, kind: str) -> Path:
    """A prediction as a NIfTI volume on the case's analysis grid: ``<case>_<kind>.nii.gz`` (probability, defect,
    ventilation for a continuous map), for 3D Slicer / ITK-SNAP."""
    return prediction_dir(run_dir, row) / f"{case}_{kind}.nii.gz"


def model_card_file(run_dir: Path) -> Path:
    """``train/model_card.json``: what ``vent predict`` needs to apply the run's trained models without its config
    (``vent.io.model_card``)."""
    return stage_dir(run_dir, "train") / "model_card.json"


def predict_case_dir(out_dir: Path, case: str) -> Path:
    """``OUT/<case>/``: one predicted case's maps, overview and facts (``vent predict``)."""
    return Path(out_dir) / case


def predict_output_file(out_dir: Path, case: str, kind: str, extension: str) -> Path:
    """``OUT/<case>/<case>_<kind><extension>``: a predicted map (probability, defect, uncertainty, lung) in the
    patient's original space, or its overview (``.png``) or facts (``.json``)."""
    return predict_case_dir(out_dir, case) / f"{case}_{kind}{extension}"


def predict_summary_file(out_dir: Path, name: str) -> Path:
    """``OUT/<name>``: the cohort files of ``vent predict`` (``cases.csv``, ``metrics.csv``, ``summary.json``)."""
    return Path(out_dir) / name
