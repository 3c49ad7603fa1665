"""Tiny sequence models and a planted-signal data set for the explain tests (CPU, a few seconds)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
import torch

N_PHASES = 6
N_SEQUENCES = 6
PLANTED_SEQUENCE = 2
PLANTED_PHASES = (1, 4)


class TinyLSTM(torch.nn.Module):
    """(B, T, N) -> (B,) logit from the last hidden state of a small LSTM."""

    def __init__(self, n_sequences: int = N_SEQUENCES, hidden: int = 16, layers: int = 1) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(n_sequences, hidden, num_layers=layers, batch_first=True)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(x)
        return self.head(output[:, -1]).squeeze(-1)


@dataclass
class Planted:
    """A model trained on the planted task, with its data; the label depends only on ``sequence`` at ``phases``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: np.ndarray
    model: TinyLSTM
    sequence: int = PLANTED_SEQUENCE
    phases: tuple[int, int] = PLANTED_PHASES


@pytest.fixture(scope="session")
def make_tiny_lstm():
    """Factory of seeded, untrained TinyLSTMs in eval mode: make_tiny_lstm(seed, hidden=16, layers=1,
    n_sequences=N_SEQUENCES)."""

    def make(seed: int, hidden: int = 16, layers: int = 1, n_sequences: int = N_SEQUENCES) -> TinyLSTM:
        torch.manual_seed(seed)
        return TinyLSTM(n_sequences, hidden=hidden, layers=layers).eval()

    return make


def make_planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard-normal sequences; the label depends only on sequence 2 at phases 1 and 4."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_PHASES, N_SEQUENCES, generator=generator)
    signal = x[:, PLANTED_PHASES[0], PLANTED_SEQUENCE] + x[:, PLANTED_PHASES[1], PLANTED_SEQUENCE]
    return x, (signal > 0).float()


@contextmanager
def single_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine more threads contend (measured 10x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _single_torch_thread():
    with single_torch_thread():
        yield


@pytest.fixture(scope="session")
def planted() -> Planted:
    with single_torch_thread():
        return _train_planted()


def fit_tiny(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 150) -> torch.nn.Module:
    """Full-batch Adam (lr 0.01) on BCE for ``steps`` steps, then eval mode. Not to saturation: a saturated sigmoid
    makes IG's integrand steep."""
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(steps):
        optimiser.zero_grad()
        loss_fn(model(x), y).backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="session")
def train_tiny():
    """``fit_tiny`` as a fixture, for tests that plant their own signal: train_tiny(model, x, y, steps=150)."""
    return fit_tiny


def _train_planted() -> Planted:
    torch.manual_seed(0)
    x_train, y_train = make_planted(2000, seed=1)
    x_test, y_test = make_planted(400, seed=2)
    model = fit_tiny(TinyLSTM(), x_train, y_train)
    return Planted(x_train, y_train, x_test, y_test.numpy(), model)
