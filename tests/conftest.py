"""Shared fixtures: small hand-made cohorts in the VAMPIRE layout (independent of vent.synth)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phantoms import write_phantom_subject

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def phantom_cohort(tmp_path):
    root = tmp_path / "study"
    for i in (1, 2, 3):
        write_phantom_subject(root / f"Subject_{i:02d}", seed=i)
    return root
