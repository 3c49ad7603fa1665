"""`vent predict`: a trained run applied to new cases, reproducing the pipeline, in the patient's original space."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from vent.cli import app
from vent.errors import ArtifactError, ConfigError, DataError
from vent.io.manifest import write_manifest_csv
from vent.io.model_card import read_model_card
from vent.io.predictions import read_prediction
from vent.predict.apply import PredictOptions, card_row, check_case, predict_case
from vent.predict.inputs import resolve_cases
from vent.runner import NullProgress

runner = CliRunner()
CPU = PredictOptions(device="cpu", workers=1)


def _geometry(path: Path) -> tuple:
    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def test_each_fold_model_reproduces_its_held_out_prediction(tiny_run):
    """predict runs the same preprocessing, radiomics and model inputs as the pipeline: the fold that held a case out
    gives exactly the train stage's prediction of it (same voxels, same probabilities)."""
    card = read_model_card(tiny_run.run_dir)
    for fold in card["rows"]["lstm"]["folds"]:
        case = fold["test"][0]
        files = resolve_cases(tiny_run.data_root / case)[0]
        prediction = predict_case(card, tiny_run.run_dir, files, CPU, NullProgress())
        held_out = read_prediction(tiny_run.run_dir / "train" / "predictions" / "lstm" / f"{case}.h5")
        assert held_out.fold == fold["fold"]
        np.testing.assert_array_equal(prediction.coords_zyx, held_out.coords_zyx)
        np.testing.assert_allclose(prediction.fold_probabilities[fold["fold"]], held_out.probability, atol=1e-6)
        assert prediction.threshold == pytest.approx(np.mean([f["threshold"] for f in card["rows"]["lstm"]["folds"]]))


def test_cli_writes_maps_on_the_original_grid_and_scores_the_case(tiny_run, tmp_path):
    """MHA keeps the geometry in double precision: the maps' size, spacing, origin and direction equal the input
    phase's exactly. NIfTI stores spacing, origin and direction as float32 (its header's pixdim and sform), so there
    they agree to float32 precision (relative 1e-7). The reference is the average CT (else the first phase)."""
    subject = tiny_run.data_root / "Subject_01"
    reference = subject / "CT" / "AverageImage.mha"  # the reference grid of preprocessing: the average CT's
    out = tmp_path / "out"
    command = ["predict", str(tiny_run.run_dir), str(subject), "-o", str(out), "--device", "cpu"]
    result = runner.invoke(app, [*command, "--format", "mha"])
    assert result.exit_code == 0, result.output
    assert "external validation on 1 case(s)" in result.output
    kinds = ("probability", "defect", "uncertainty", "lung")
    maps = {kind: out / "Subject_01" / f"Subject_01_{kind}.mha" for kind in kinds}
    for path in maps.values():
        assert _geometry(path) == _geometry(reference), path
    arrays = {kind: sitk.GetArrayFromImage(sitk.ReadImage(str(path))) for kind, path in maps.items()}
    facts = json.loads((out / "Subject_01" / "Subject_01_prediction.json").read_text())
    lung = arrays["lung"] > 0
    assert lung.any() and not arrays["probability"][~lung].any() and not arrays["defect"][~lung].any()
    np.testing.assert_array_equal(arrays["defect"][lung] > 0, arrays["probability"][lung] >= facts["threshold"])
    assert (arrays["uncertainty"] >= 0).all() and arrays["uncertainty"][lung].max() > 0  # two folds disagree
    assert set(facts["metrics"]) == {"dice", "auc", "sensitivity", "accuracy", "r_s", "dsc_low", "dsc_high"}
    assert (out / "Subject_01" / "Subject_01_overview.png").stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["external_validation"]["n_cases"] == 1 and (out / "metrics.csv").is_file()
    again = runner.invoke(app, [*command, "--format", "mha"])
    assert again.exit_code == 0 and "kept" in again.output
    nifti = runner.invoke(app, command)
    assert nifti.exit_code == 0, nifti.output
    size, *floats = _geometry(out / "Subject_01" / "Subject_01_probability.nii.gz")
    expected_size, *expected = _geometry(reference)
    assert size == expected_size
    for got, want in zip(floats, expected):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-6)


def test_phase_count_must_match_unless_every_kth_phase_is_read(tiny_run, tmp_path):
    """A 10-phase case for 5-phase models is refused with what to do; --match-phases reads phases 1, 3, ..., 9."""
    files = resolve_cases(tiny_run.data_root / "Subject_02")[0]
    doubled = replace(files, phase_images=files.phase_images * 2, phase_masks=files.phase_masks * 2,
                      phase_numbers=tuple(range(1, 11)), vent_image=None, vent_mask=None)
    card = read_model_card(tiny_run.run_dir)
    with pytest.raises(DataError, match=r"10 phases but the models of this run read 5.*--match-phases"):
        predict_case(card, tiny_run.run_dir, doubled, CPU, NullProgress())
    prediction = predict_case(card, tiny_run.run_dir, doubled, replace(CPU, match_phases=True), NullProgress())
    assert any("[1, 3, 5, 7, 9]" in w for w in prediction.warnings) and prediction.labels is None
    with pytest.raises(DataError, match="4 phases"):
        predict_case(card, tiny_run.run_dir, replace(files, phase_images=files.phase_images[:4],
                                                     phase_masks=files.phase_masks[:4]),
                     replace(CPU, match_phases=True), NullProgress())


def test_a_coarser_scan_is_refused_unless_allowed(tiny_run):
    card = read_model_card(tiny_run.run_dir)
    files = resolve_cases(tiny_run.data_root / "Subject_01")[0]
    coarsest = card["cohort"]["coarsest_spacing_mm"]
    coarse = tuple(2.0 * s for s in coarsest)
    with pytest.raises(DataError, match=r"2\.0x coarser.*--allow-spacing"):
        check_case(card, files, coarse, CPU)
    assert any("coarser" in w for w in check_case(card, files, coarse, replace(CPU, allow_spacing=True)))
    assert check_case(card, files, tuple(coarsest), CPU) == []


def test_rows_and_run_folders_that_cannot_predict_are_named(tiny_run, tmp_path):
    card = read_model_card(tiny_run.run_dir)
    with pytest.raises(ConfigError, match="rows that predict: lstm"):
        card_row(card, "densest_inhale")
    assert card_row(card, None)[0] == card["reference_row"] == "lstm"
    with pytest.raises(ArtifactError, match="not a vent run folder"):
        read_model_card(tmp_path)


def test_a_pet_model_is_validated_on_a_spect_like_cohort(tiny_run, tmp_path):
    """External validation: the PET-like tiny run predicts a SPECT-like synthetic cohort (10 phases, read at every
    second phase) listed in a manifest with its modality, and reports Table 2 and VAMPIRE metrics per patient."""
    from vent.synth import write_synthetic_cohort

    root = tmp_path / "spect"
    write_synthetic_cohort(root, n_cases=2, modality="spect", size="tiny", seed=11)
    subjects = [replace(f, modality="spect") for f in resolve_cases(root)]
    manifest = write_manifest_csv(tmp_path / "spect.csv", subjects)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(tiny_run.run_dir), str(manifest), "-o", str(out), "--device", "cpu",
                                 "--match-phases"])
    assert result.exit_code == 0, result.output
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["case", "dice", "auc", "sensitivity", "accuracy", "r_s", "dsc_low", "dsc_high"]
    assert len(rows) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained_modality"] == "pet" and summary["external_validation"]["n_cases"] == 2
    assert 0.0 <= summary["external_validation"]["auc"]["mean"] <= 1.0
    facts = json.loads((out / "Subject_01" / "Subject_01_prediction.json").read_text())
    assert any("modality spect but the models were trained on pet" in w for w in facts["warnings"])
