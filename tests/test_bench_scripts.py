"""The prepared benchmarks run end to end on a CPU with tiny sizes: scripts/bench_gpu.py --quick (the GPU check,
ready for a GPU machine), scripts/bench_memory.py with a tiny store, and scripts/bench_scaling.py and
scripts/bench_merge.py on a tiny case (their figures are measured by hand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_bench_gpu_quick_runs_on_cpu_and_records_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench_gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_gpu.py"), "--quick", "--device", "cpu", "--out",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["radiomics"]["equal_within_tolerance"], figures["radiomics"]
    assert figures["training"]["best_samples_per_s"] > 0 and figures["training"]["runs"][0]["precision"] == "float32"
    assert figures["training"]["loader_staged_samples_per_s"] > 0 and figures["saliency"]["voxels_per_s"] > 0
    assert "record:" in done.stdout and "samples/s" in done.stdout


def test_bench_memory_tiny_store_stays_under_its_bound(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_memory.py"), "--store-gb", "0.01", "--bound-gb", "3", "--budget-gb",
         "0.01", "0.000001", "--cases", "4", "--explain-voxels", "4", "--explain-max-steps", "8", "--keep",
         str(tmp_path / "store")], capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "held in ram" in done.stdout and "held in mapped_file" in done.stdout
    assert "every peak is under the bound" in done.stdout


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preprocessed tiny synthetic case (``RUN/preprocess/<case>.h5``)."""
    from typer.testing import CliRunner

    from vent.cli import app

    folder = tmp_path_factory.mktemp("bench_case")
    config = folder / "tiny.yaml"
    config.write_text("run_dir: run\ndata:\n  root: cohort\n"
                      "  synthetic: {cases: 3, modality: pet, size: tiny, seed: 0}\ncv: {n_folds: 3}\n")
    result = CliRunner().invoke(app, ["run", str(config), "--only", "preprocess"])
    assert result.exit_code == 0, result.output
    return sorted((folder / "run" / "preprocess").glob("*.h5"))[0]


def test_bench_scaling_times_one_phase_task_three_ways(tiny_case: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_scaling.py"), str(tiny_case), "--phase", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "speed-up x" in done.stdout and "throughput x" in done.stdout
    missing = subprocess.run([sys.executable, str(SCRIPTS / "bench_scaling.py"), str(tmp_path / "nope.h5")],
                             capture_output=True, text=True, timeout=600)
    assert missing.returncode != 0 and "nope.h5 does not exist" in missing.stderr


def test_bench_merge_times_both_revisions_and_compares_their_files(tiny_case: Path, tmp_path: Path) -> None:
    """Against HEAD the two children run the same merge (with this checkout's changes, if any, on one side): the
    script must still time both and find the merged files equal."""
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_merge.py"), str(tiny_case), "--compare-rev", "HEAD",
                           "--rounds", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "speed-up x" in done.stdout
    assert "merged files equal array for array and attribute for attribute: True" in done.stdout
    refused = subprocess.run([sys.executable, str(SCRIPTS / "bench_merge.py"), str(tmp_path / "nope.h5"),
                              "--compare-rev", "HEAD"], capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "nope.h5 is not a file" in refused.stderr
