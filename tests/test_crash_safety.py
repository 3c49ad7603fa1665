"""Crash safety end to end (scripts/crash_harness.py on the tiny cohort): `vent run` killed with SIGKILL at a random
point of every stage resumes to artifacts equal to an uninterrupted run's, and no partial file is ever taken as
complete."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from tinyrun import TINY, merge

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "crash_harness.py"


def _harness():
    spec = importlib.util.spec_from_file_location("crash_harness", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sigkill_in_every_stage_then_resume_equals_an_uninterrupted_run(tiny_data, tiny_full_run, tmp_path):
    harness = _harness()
    config = tmp_path / "tiny.yaml"
    raw = merge(TINY, {"data": {"root": str(tiny_data)}})
    config.write_text(yaml.safe_dump({**raw, "run_dir": str(tmp_path / "unused")}))

    # the reference: the tiny run made in-process by the stages API, every stage (a `vent run` of the same config)
    result = harness.crash_and_resume(config, tmp_path / "killed", tiny_full_run.run_dir, seed=12)

    attempts = result["attempts"]
    assert [a.target for a in attempts] == ["preprocess", "split", "radiomics", "select", "train", "evaluate",
                                            "explain", "report"]
    assert [a.died_in for a in attempts] == [a.target for a in attempts]  # every kill landed in its stage
    assert [p for a in attempts for p in a.problems] == []
    assert result["differences"] == []
    assert "done: 0 stage(s) run" in result["rerun_output"]
