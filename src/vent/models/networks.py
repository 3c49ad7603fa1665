"""Sequence classifiers for voxel-wise radiomic sequences.

Array layout: every model takes ``x`` of shape ``(B, T, F)`` (batch, breathing phases in breathing order, input
features per phase), float32, and returns ``(B,)`` **logits**. The probability of a ventilation defect is
``sigmoid(logit)``; :class:`ProbabilityModel` wraps a model to return it (use it for attribution with captum).
Training uses ``BCEWithLogitsLoss``, which equals sigmoid + binary cross-entropy but is numerically stable.

Models:

- :class:`LSTMClassifier` -- the study's proposed model: a stack of LSTM layers (default 128-64-32-16-8 cells),
  each feeding its full output sequence to the next; the last layer's final hidden state goes to a dense head with
  one output. ``bidirectional=True`` gives the BiLSTM ablation: each layer runs forwards and backwards and the two
  directions' outputs are concatenated (so layer ``i + 1`` sees ``2 * hidden[i]`` inputs and the head sees the
  forward state after the last phase concatenated with the backward state after the first phase).
- :class:`TransformerClassifier` -- the Transformer-encoder ablation: linear input projection, fixed sinusoidal
  positional encoding (Vaswani et al. 2017), a stack of encoder blocks (multi-head self-attention and a
  feed-forward layer, each with a residual connection and layer normalisation), mean pooling over phases and a
  dense head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vent.errors import DataError

DEFAULT_HIDDEN = (128, 64, 32, 16, 8)


def sinusoidal_positional_encoding(n_steps: int, d_model: int) -> torch.Tensor:
    """Fixed sinusoidal positional encoding (Vaswani et al., "Attention is all you need", NeurIPS 2017, sec. 3.5).

    PE[t, 2i] = sin(t / 10000^(2i / d_model)),  PE[t, 2i + 1] = cos(t / 10000^(2i / d_model)).

    Args:
        n_steps: Number of positions T (breathing phases).
        d_model: Embedding width; odd widths are allowed (the last column is a sine).

    Returns:
        Tensor of shape (n_steps, d_model), float32.
    """
    position = torch.arange(n_steps, dtype=torch.float64).unsqueeze(1)
    even_columns = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = position / torch.pow(10000.0, even_columns / d_model)
    encoding = torch.zeros(n_steps, d_model, dtype=torch.float64)
    encoding[:, 0::2] = torch.sin(angle)
    encoding[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return encoding.to(torch.float32)


def _check_input(x: torch.Tensor, n_inputs: int, max_steps: int | None = None) -> None:
    """Raise DataError when ``x`` is not (B, T, n_inputs) (with T <= max_steps when given)."""
    if x.ndim != 3 or x.shape[2] != n_inputs:
        raise DataError(
            f"model input must have shape (batch, phases, {n_inputs}); got {tuple(x.shape)}. "
            "Check the feature selection matches the one the model was built with."
        )
    if max_steps is not None and x.shape[1] > max_steps:
        raise DataError(
            f"model input has {x.shape[1]} phases but the model was built for at most {max_steps}; "
            "rebuild it with n_steps set to the number of phases."
        )


class LSTMClassifier(nn.Module):
    """Stacked (Bi)LSTM with a dense one-logit head.

    Args:
        n_inputs: Features per phase F.
        hidden: Cells per LSTM layer, first to last (default the study's 128-64-32-16-8).
        bidirectional: Run each layer in both directions and concatenate the two output sequences.
        dropout: Dropout probability applied between LSTM layers (training mode only; 0 disables it).
    """

    def __init__(
        self,
        n_inputs: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_inputs = int(n_inputs)
        self.hidden = tuple(int(h) for h in hidden)
        self.bidirectional = bool(bidirectional)
        directions = 2 if self.bidirectional else 1
        layers = []
        layer_inputs = self.n_inputs
        for cells in self.hidden:
            layers.append(nn.LSTM(layer_inputs, cells, batch_first=True, bidirectional=self.bidirectional))
            layer_inputs = cells * directions
        self.lstm_layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(layer_inputs, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Return the final recurrent state fed to the head.

        Args:
            x: Input of shape (B, T, F), float32.

        Returns:
            (B, H_last) for the LSTM; (B, 2 * H_last) for the BiLSTM: [forward state after phase T-1, backward state
            after phase 0].
        """
        _check_input(x, self.n_inputs)
        sequence = x
        final_state = None
        for layer_number, layer in enumerate(self.lstm_layers):
            if layer_number > 0:
                sequence = self.dropout(sequence)
            sequence, (h_n, _) = layer(sequence)
            final_state = h_n
        # h_n: (directions, B, H); for a BiLSTM index 0 is the forward and 1 the backward direction.
        return torch.cat(list(final_state), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (B,) for input x of shape (B, T, F)."""
        return self.head(self.encode(x)).squeeze(1)


class TransformerClassifier(nn.Module):
    """Transformer encoder over phases with a dense one-logit head.

    Args:
        n_inputs: Features per phase F.
        n_steps: Maximum number of phases T (length of the fixed positional encoding).
        d_model: Width of the token embedding.
        n_heads: Attention heads per block (must divide d_model).
        n_blocks: Number of encoder blocks.
        dim_feedforward: Width of the feed-forward layer in each block.
        dropout: Dropout probability inside the blocks (training mode only).
    """

    def __init__(
        self,
        n_inputs: int,
        n_steps: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_blocks: int = 4,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_inputs = int(n_inputs)
        self.n_steps = int(n_steps)
        self.input_projection = nn.Linear(self.n_inputs, d_model)
        self.register_buffer("positional_encoding", sinusoidal_positional_encoding(self.n_steps, d_model))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model, n_heads, dim_feedforward=dim_feedforward, dropout=dropout, batch_first=True
            )
            for _ in range(n_blocks)
        )
        self.head = nn.Linear(d_model, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Return the phase-averaged encoder output of shape (B, d_model) for x of shape (B, T, F)."""
        _check_input(x, self.n_inputs, self.n_steps)
        tokens = self.input_projection(x) + self.positional_encoding[: x.shape[1]]
        for block in self.blocks:
            tokens = block(tokens)
        return tokens.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (B,) for input x of shape (B, T, F)."""
        return self.head(self.encode(x)).squeeze(1)


class ProbabilityModel(nn.Module):
    """Wrap a logit model so that ``forward`` returns the defect probability sigmoid(logit), shape (B,).

    Args:
        model: A model returning logits of shape (B,).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return probabilities in [0, 1] of shape (B,) for x of shape (B, T, F)."""
        return torch.sigmoid(self.model(x))


def build_lstm(n_inputs: int, n_steps: int, params: Any) -> LSTMClassifier:
    """The study's stacked LSTM (``vent.models.registry.LSTMParams``); any number of phases."""
    del n_steps
    return LSTMClassifier(n_inputs, hidden=tuple(int(h) for h in params.hidden), dropout=float(params.dropout))


def build_bilstm(n_inputs: int, n_steps: int, params: Any) -> LSTMClassifier:
    """The same stack, bidirectional, final states of both directions concatenated."""
    del n_steps
    return LSTMClassifier(
        n_inputs, hidden=tuple(int(h) for h in params.hidden), bidirectional=True, dropout=float(params.dropout)
    )


def build_transformer(n_inputs: int, n_steps: int, params: Any) -> TransformerClassifier:
    """The Transformer-encoder ablation (``vent.models.registry.TransformerParams``)."""
    return TransformerClassifier(
        n_inputs,
        n_steps,
        d_model=params.d_model,
        n_heads=params.n_heads,
        n_blocks=params.n_blocks,
        dim_feedforward=params.dim_feedforward,
        dropout=params.dropout,
    )


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "DEFAULT_HIDDEN",
    "build_bilstm",
    "build_lstm",
    "build_transformer",
    "LSTMClassifier",
    "ProbabilityModel",
    "TransformerClassifier",
    "count_parameters",
    "sinusoidal_positional_encoding",
]
