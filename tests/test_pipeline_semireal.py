"""End to end on semi-real 4DCT: the real chest CT LUNG1-001 made to breathe (vent.synth.from_ct), default radiomics.

Six subjects, each the lower lung of one side of the real CT with its expert masks moved by a breathing motion with
28-36 mm diaphragm travel (a deep breath, so that some lung voxels near the diaphragm have an empty per-phase kernel
at exhalation: 249-798 voxel-phases per subject), per-phase masks, planted defects, a distractor, files starting at
maximum inhalation and a RefVI on its own 4 mm grid. The whole pipeline runs with the default config's preprocess
and radiomics settings (2 mm, 26 mm kernel, 64 bins, all 56 features, per-phase kernel masks); the models train
briefly. It must complete
(no NaN dead end), report the empty-kernel policy and its counts, and the proposed LSTM on radiomic sequences must
beat, on the same held-out patients, the LSTM on raw intensities and the no-learning densest-at-inhale rule.
Skipped when ../shared/data is absent.
"""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from vent.cli import app

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lung_ct" / "lung1-001"

CONFIG = """
run_dir: run
data:
  root: cohort
  phase_order: from_max_exhale
cv: {n_folds: 3, val_fraction: 0.25}
select: {max_voxels_per_case: 4000}
train:
  models:
    lstm: {hidden: [128, 64, 32, 16, 8]}
    lstm_raw: {hidden: [128, 64, 32, 16, 8]}
    densest_inhale: {}
  compare_selection_modes: false
  lr: 0.001
  batch_size: 512
  max_epochs: 12
  patience: 4
  max_voxels_per_case: 3000
explain: {n_steps: 16, voxels_per_class_per_case: 20}
execution: {threads: 1}
"""


@pytest.fixture(scope="module")
def semireal_run(tmp_path_factory):
    if not (DATA / "LUNG1-001_ct.nii.gz").is_file():
        pytest.skip(f"reference CT {DATA}/LUNG1-001_ct.nii.gz is absent")
    from vent.synth.from_ct import SemiRealSettings, write_semireal_cohort

    folder = tmp_path_factory.mktemp("semireal")
    write_semireal_cohort(
        DATA / "LUNG1-001_ct.nii.gz",
        [DATA / "LUNG1-001_mask_Lung-Left.nii.gz", DATA / "LUNG1-001_mask_Lung-Right.nii.gz"],
        folder / "cohort",
        n_cases=6,
        seed=0,
        settings=SemiRealSettings(slab_mm=16.0, below_mm=24.0, diaphragm_travel_mm=(28.0, 36.0)),
        workers=2,
    )
    config = folder / "semireal.yaml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    return folder


def test_cohort_breathes_with_diaphragm_travel(semireal_run):
    for subject in sorted((semireal_run / "cohort").glob("Subject_*")):
        truth = json.loads((subject / "synthetic_truth.json").read_text())
        assert 28.0 <= truth["diaphragm_travel_mm"] <= 36.0
        volumes = truth["lung_volume_ml_file_order"]
        assert np.argmax(volumes) == 0  # the files start at maximum inhalation


def test_phases_are_processed_from_max_exhale(semireal_run):
    for path in sorted((semireal_run / "run" / "radiomics").glob("Subject_*.h5")):
        with h5py.File(path, "r") as handle:
            assert int(handle.attrs["exhale_phase"]) == 0
            intensity = handle["intensity"][...]
            assert not np.isnan(handle["features"][...]).any()
        # lung is densest at exhalation: the mean HU of the analysed voxels is highest at phase 0
        assert np.argmax(intensity.mean(axis=0)) == 0


def test_report_states_the_empty_kernel_policy_and_counts(semireal_run):
    report = (semireal_run / "run" / "report" / "report.md").read_text()
    assert "radiomics.empty_kernel = 'analysis_mask'" in report
    assert "empty kernels" in report
    touched = 0
    for path in sorted((semireal_run / "run" / "radiomics").glob("Subject_*.h5")):
        with h5py.File(path, "r") as handle:
            counts = json.loads(handle.attrs["empty_kernel"])
            touched += sum(counts["empty_voxel_phases"]) + sum(counts["undefined_voxel_phases"])
            assert sum(counts["recomputed_voxel_phases"]) == sum(counts["empty_voxel_phases"]) + sum(
                counts["undefined_voxel_phases"]
            )
    assert touched > 0  # the diaphragm motion does leave lung voxels with an empty per-phase kernel


def test_radiomic_lstm_beats_raw_lstm_and_no_learning_rule(semireal_run):
    from vent.io.evaluation import read_evaluation

    dice = {}
    for row in read_evaluation(semireal_run / "run").per_patient:
        dice.setdefault(row["model"], {})[row["case"]] = row["dice"]
    cases = sorted(dice["lstm"])
    assert len(cases) == 6 and sorted(dice["lstm_raw"]) == cases and sorted(dice["densest_inhale"]) == cases
    mean = {model: np.mean([dice[model][c] for c in cases]) for model in ("lstm", "lstm_raw", "densest_inhale")}
    assert mean["lstm"] > mean["lstm_raw"], mean
    assert mean["lstm"] > mean["densest_inhale"], mean
