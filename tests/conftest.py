"""Shared fixtures: small hand-made cohorts in the VAMPIRE layout (independent of vent.synth), and a tiny synthetic
cohort run once per session through every stage up to explain (not report), read by the stage and predict tests
(helpers: tests/tinyrun.py).

The session's run folder is never changed by a test: a test that re-runs a stage with other settings works on
``tiny_run.copy(tmp_path)``, and the fixture checks at the end of the session that no file of the shared run was
added, removed or rewritten.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from phantoms import write_phantom_subject
from tinyrun import UPSTREAM, TinyRun, run_stages, snapshot, tiny_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def phantom_cohort(tmp_path):
    root = tmp_path / "study"
    for i in (1, 2, 3):
        write_phantom_subject(root / f"Subject_{i:02d}", seed=i)
    return root


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """The user's cache folder (vent status's calibrated rates) is the session's own: tests never write ~/.cache."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The tiny synthetic cohort (4 PET-like subjects), generated once per session; never written to again."""
    from vent.stages.preprocess import ensure_data

    base = tmp_path_factory.mktemp("tiny_cohort")
    config = tiny_config(base / "unused_run", base / "data")
    ensure_data(config)
    return config.data.root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data) -> TinyRun:
    """The tiny cohort through preprocess .. explain, once per session. Tests read it or copy it; they never
    change it (checked when the session ends)."""
    import torch

    threads = torch.get_num_threads()
    base = tmp_path_factory.mktemp("tiny_run")
    run = TinyRun(base / "run", tiny_data)
    plans, _ = run_stages(run.config())
    torch.set_num_threads(threads)  # execution.threads set torch's global thread count for the train stage
    assert [p.action for p in plans] == ["run"] * len(UPSTREAM)
    before = snapshot(run.run_dir)
    data_before = snapshot(tiny_data)
    yield run
    assert snapshot(run.run_dir) == before, "a test changed the shared tiny run: work on tiny_run.copy(tmp_path)"
    assert snapshot(tiny_data) == data_before, "a test changed the shared tiny cohort"


@pytest.fixture(scope="session")
def tiny_full_run(tmp_path_factory, tiny_run) -> TinyRun:
    """A copy of the tiny run with its report made too: every stage of a `vent run` (read-only, like tiny_run)."""
    import torch

    threads = torch.get_num_threads()
    run = tiny_run.copy(tmp_path_factory.mktemp("tiny_full_run"))
    plans, _ = run_stages(run.config(), (*UPSTREAM, "report"), only="report")
    torch.set_num_threads(threads)
    assert [p.action for p in plans] == ["skip"] * len(UPSTREAM) + ["run"]
    return run


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The train stage sets torch's global thread count from execution.threads; restore it after each test."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and threads is not None:
        torch.set_num_threads(threads)
