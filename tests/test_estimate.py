"""Stage time estimates (``vent.estimate``): they scale with the cohort, the calibration is cached, status shows it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vent import estimate
from vent.estimate import CohortFacts, Rates, RowFacts, estimate_stages, format_seconds, ig_step_range

ROW = RowFacts("lstm", "lstm", {"hidden": [8]}, 10)


def _facts(voxels: int = 10_000, n_cases: int = 6, **changes) -> CohortFacts:
    base = dict(voxels={f"c{i}": voxels for i in range(n_cases)}, n_phases=5, n_folds=3, val_fraction=0.25,
                rows=[ROW], other_rows=["densest_inhale"], max_epochs=10, batch_size=256,
                explain_voxels_per_class=50, explain_steps=(8, 64), reference=ROW)
    return CohortFacts(**{**base, **changes})


RATES = Rates(radiomics_s_per_voxel_phase=60e-6, train_samples_per_s={ROW.key: 4000.0},
              infer_samples_per_s={ROW.key: 12000.0}, ig_voxel_steps_per_s={ROW.key: 500.0})


def _seconds(facts: CohortFacts, rates: Rates = RATES) -> dict[str, tuple[float, float]]:
    return {e.stage: (e.low, e.high) for e in estimate_stages(facts, rates)}


def test_radiomics_and_training_scale_with_voxels_epochs_and_rates() -> None:
    one, two = _seconds(_facts(10_000)), _seconds(_facts(20_000))
    assert one["radiomics"][0] == pytest.approx(6 * 10_000 * 5 * 60e-6)
    assert two["radiomics"][0] == pytest.approx(2 * one["radiomics"][0])
    assert two["train"][0] == pytest.approx(2 * one["train"][0])
    longer = _seconds(_facts(10_000, max_epochs=20))["train"][0]
    assert one["train"][0] < longer < 2 * one["train"][0]  # the test predictions do not grow with the epochs
    faster = Rates(60e-6, {ROW.key: 8000.0}, {ROW.key: 24000.0}, {ROW.key: 1000.0})
    assert _seconds(_facts(), faster)["train"][0] == pytest.approx(one["train"][0] / 2)
    assert _seconds(_facts(), faster)["explain"][1] == pytest.approx(one["explain"][1] / 2)


def test_subsampling_caps_the_training_cost_and_explain_gives_a_range() -> None:
    full = _seconds(_facts(100_000))["train"][0]
    capped = _seconds(_facts(100_000, max_voxels_per_case=1000))["train"][0]
    assert capped < full / 5
    low, high = _seconds(_facts())["explain"]
    assert high / low == pytest.approx(ig_step_range(8, 64)[1] / 8)
    assert ig_step_range(32, 512) == (32, 32 + 64 + 128 + 256 + 512)


def test_a_missing_rate_gives_no_number_and_other_rows_are_named() -> None:
    estimates = {e.stage: e for e in estimate_stages(_facts(), Rates())}
    assert estimates["radiomics"].low is None and estimates["train"].low is None
    assert "not estimated: densest_inhale" in estimates["train"].basis
    assert format_seconds(None) == "?" and format_seconds(30) == "~30 s" and format_seconds(7200) == "~2.0 h"
    assert [e.stage for e in estimate_stages(_facts(), RATES, ("train",))] == ["train"]


@pytest.fixture
def fake_measures(monkeypatch):
    calls = []
    monkeypatch.setattr(estimate, "measure_radiomics", lambda *a, **k: calls.append("radiomics") or 5e-5)
    monkeypatch.setattr(estimate, "measure_network", lambda *a, **k: calls.append("network") or (3000.0, 9000.0))
    monkeypatch.setattr(estimate, "measure_ig", lambda *a, **k: calls.append("ig") or 400.0)
    return calls


def test_calibration_is_measured_once_and_cached_with_machine_and_date(tmp_path, fake_measures, monkeypatch):
    from vent.config import RunConfig

    config = RunConfig(run_dir=tmp_path / "run", data={"root": tmp_path})
    cache = tmp_path / "cache" / "calibration.json"
    rates, _ = estimate.calibrate(cache, _facts(), config)
    assert fake_measures == ["radiomics", "network", "ig"]
    assert rates.train_samples_per_s[ROW.key] == 3000.0 and rates.radiomics_s_per_voxel_phase == 5e-5
    record = json.loads(cache.read_text())
    assert record["machine"]["cores"] >= 1 and "cpu" in record["machine"]
    assert all("date" in entry and "seconds" in entry for entry in record["entries"].values())
    estimate.calibrate(cache, _facts(), config)
    assert len(fake_measures) == 3  # cached
    monkeypatch.setattr(estimate, "machine_identity", lambda device: {"host": "another"})
    estimate.calibrate(cache, _facts(), config)
    assert len(fake_measures) == 6  # another machine: measured again


def test_status_shows_the_estimate_table(tmp_path, phantom_cohort, fake_measures, monkeypatch):
    from vent.cli import app
    from vent.io import layout

    monkeypatch.setattr(layout, "calibration_file", lambda: tmp_path / "calibration.json")
    config = tmp_path / "c.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\ndata: {{root: {phantom_cohort}}}\ncv: {{n_folds: 3}}\n"
                      "train: {models: {lstm: {hidden: [8]}, densest_inhale: null}, max_epochs: 3}\n")
    result = CliRunner().invoke(app, ["status", str(config)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "estimated time on" in text and "3 patients" in text and "input lung masks" in text
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 4}
    assert "~" in rows["radiomics"] and "~" in rows["train"] and " to " in rows["explain"]
    assert "not estimated: densest_inhale" in text
    quiet = CliRunner().invoke(app, ["status", str(config), "--no-estimate"])
    assert quiet.exit_code == 0 and "estimated time" not in quiet.output


def test_tasks_run_at_once_divide_radiomics_and_training_but_not_explain() -> None:
    one, two = _seconds(_facts()), _seconds(_facts(parallel_tasks=2))
    assert two["radiomics"][0] == pytest.approx(one["radiomics"][0] / 2)
    assert two["train"][0] == pytest.approx(one["train"][0] / 2)
    assert two["explain"] == one["explain"]
    # one 5-phase case on 8 workers: its 5 phase tasks run at once, not 8
    assert _seconds(_facts(n_cases=1, parallel_tasks=8))["radiomics"][0] == pytest.approx(10_000 * 5 * 60e-6 / 5)
    assert _seconds(_facts(n_cases=1, parallel_tasks=2))["radiomics"][0] == pytest.approx(10_000 * 5 * 60e-6 / 2)
