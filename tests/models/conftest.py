"""Fixtures for the models tests: small synthetic radiomics HDF5 files following the artifact contract."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vent.io.artifacts import write_radiomics_case


def write_case(
    path: Path,
    features: np.ndarray,
    labels: np.ndarray,
    intensity: np.ndarray | None = None,
    chunk_rows: int = 64,
) -> Path:
    """Write one patient file with the project's writer (vent.io.artifacts.write_radiomics_case)."""
    return write_radiomics_case(path, features, labels, intensity=intensity, chunk_rows=chunk_rows)


@pytest.fixture
def make_id_cases(tmp_path: Path) -> Callable[..., list[Path]]:
    """Factory of files whose feature 0 at every phase holds a unique voxel id: case * 100000 + row."""

    def factory(n_cases: int = 3, n_voxels: int = 500, n_steps: int = 4, n_features: int = 6, chunk_rows: int = 64,
                seed: int = 0) -> list[Path]:
        rng = np.random.default_rng(seed)
        paths = []
        for case in range(n_cases):
            features = rng.normal(size=(n_voxels, n_steps, n_features)).astype(np.float32)
            features[:, :, 0] = (case * 100000 + np.arange(n_voxels))[:, None]
            labels = (rng.random(n_voxels) < 0.3).astype(np.uint8)
            paths.append(write_case(tmp_path / f"case{case:02d}.h5", features, labels, chunk_rows=chunk_rows))
        return paths

    return factory


@pytest.fixture
def make_separable_cases(tmp_path: Path) -> Callable[..., list[Path]]:
    """Factory of a trivially separable problem: defect voxels have feature 1 shifted by +1.5 at every phase."""

    def factory(prefix: str, n_cases: int = 2, n_voxels: int = 600, n_steps: int = 5, n_features: int = 4,
                seed: int = 0) -> list[Path]:
        rng = np.random.default_rng(seed)
        paths = []
        for case in range(n_cases):
            labels = (rng.random(n_voxels) < 0.4).astype(np.uint8)
            features = rng.normal(size=(n_voxels, n_steps, n_features)).astype(np.float32)
            features[:, :, 1] += 1.5 * labels[:, None]
            intensity = -800.0 + 100.0 * rng.normal(size=(n_voxels, n_steps)) + 200.0 * labels[:, None]
            paths.append(write_case(tmp_path / f"{prefix}{case:02d}.h5", features, labels, intensity, chunk_rows=128))
        return paths

    return factory


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run torch single-threaded: the test machines have few, shared cores and oversubscription is slow."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
