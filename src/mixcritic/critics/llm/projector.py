"""Learnable layer weights, optional temporal pooling, the MLP projector and the auxiliary loss.

Paper, section III-B: a softmax-weighted average of MERT's 25 hidden states, then an MLP
1024 -> 4 x (Linear 2048, ReLU, LayerNorm, Dropout 0.1) -> LLM hidden size, no residuals,
trained with an auxiliary loss of weight 0.05. The authors' published run differs (widths
2048, 4096, 4096, 2048 with GELU; aux norms divided by d): both are settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mixcritic.critics.llm.settings import AUX_LOSS_NORMS, PROJECTOR_ACTIVATIONS

class LayerWeights(nn.Module):
    """Softmax-normalised learnable weights over the encoder's hidden states (uniform at start)."""

    def __init__(self, num_states: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_states))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """``states``: (layers + 1, batch, frames, hidden) -> (batch, frames, hidden)."""
        if states.shape[0] != self.logits.shape[0]:
            raise ValueError(f"expected {self.logits.shape[0]} hidden states, got {states.shape[0]}")
        weights = torch.softmax(self.logits, dim=0).to(states.dtype)
        return torch.einsum("l,lbfh->bfh", weights, states)


class FeatureStandardizer(nn.Module):
    """Fixed per-state, per-dimension standardisation of encoder hidden states (optional).

    ``mean`` and ``std`` are fitted once on training clips (:meth:`fit`) and stored with the
    trained tensors. It removes the clip-independent component that can dominate the features
    (see docs/performance.md, "Does the audio path carry information?").
    """

    def __init__(self, num_states: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_states, 1, 1, hidden))
        self.register_buffer("std", torch.ones(num_states, 1, 1, hidden))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(layers + 1, batch, frames, hidden) -> same shape, standardised."""
        return (states - self.mean.to(states.dtype)) / self.std.to(states.dtype)

    @torch.no_grad()
    def fit(self, batches) -> int:
        """Fit on an iterable of hidden-state tensors (layers + 1, batch, frames, hidden); returns frames seen."""
        total, sums, squares = 0, None, None
        for states in batches:
            flat = states.double().flatten(1, 2)  # (states, frames, hidden)
            sums = flat.sum(1) if sums is None else sums + flat.sum(1)
            squares = flat.pow(2).sum(1) if squares is None else squares + flat.pow(2).sum(1)
            total += flat.shape[1]
        if not total:
            raise ValueError("no clips to fit the feature standardisation on")
        mean = sums / total
        std = (squares / total - mean.pow(2)).clamp(min=0).sqrt().clamp(min=1e-6)
        self.mean.copy_(mean[:, None, None, :].to(self.mean.dtype))
        self.std.copy_(std[:, None, None, :].to(self.std.dtype))
        return total


def pool_frames(frames: torch.Tensor, pool: int) -> torch.Tensor:
    """Average every ``pool`` consecutive frames: (batch, frames, hidden) -> (batch, frames // pool, hidden).

    A trailing remainder shorter than ``pool`` frames is dropped (749 frames, pool 4 -> 187).
    """
    if pool == 1:
        return frames
    batch, count, hidden = frames.shape
    kept = (count // pool) * pool
    return frames[:, :kept].reshape(batch, count // pool, pool, hidden).mean(dim=2)


def pooled_frame_count(frames: int, pool: int) -> int:
    """Frames left after :func:`pool_frames`."""
    return frames // pool


class Projector(nn.Module):
    """MLP from encoder width to LLM width: one (Linear, activation, LayerNorm, Dropout) block per
    hidden width, then Linear. ``hidden_dim``: a list of widths, or one width used ``depth`` times."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | Sequence[int] = 2048, depth: int = 4,
                 dropout: float = 0.1, activation: str = "relu") -> None:
        super().__init__()
        if activation not in PROJECTOR_ACTIVATIONS:
            raise ValueError(f"activation must be one of {PROJECTOR_ACTIVATIONS}, got {activation!r}")
        widths = [hidden_dim] * depth if isinstance(hidden_dim, int) else list(hidden_dim)
        layers: list[nn.Module] = []
        width = in_dim
        for hidden in widths:
            act = nn.ReLU() if activation == "relu" else nn.GELU()
            layers += [nn.Linear(width, hidden), act, nn.LayerNorm(hidden), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(batch, frames, in_dim) -> (batch, frames, out_dim)."""
        return self.net(frames)


def mean_rms_norm(vectors: torch.Tensor, norm: str = "sqrt_d") -> torch.Tensor:
    """Mean over vectors of the scaled L2 norm: ``||v||_2 / sqrt(dim)`` (the RMS of each vector,
    ``norm="sqrt_d"``) or ``||v||_2 / dim`` (``norm="d"``, the authors' published run).

    ``vectors``: (..., dim). Returns a scalar.
    """
    if norm not in AUX_LOSS_NORMS:
        raise ValueError(f"norm must be one of {AUX_LOSS_NORMS}, got {norm!r}")
    dim = vectors.shape[-1]
    return (vectors.float().norm(dim=-1) / (dim**0.5 if norm == "sqrt_d" else dim)).mean()


def norm_matching_loss(audio_embeds: torch.Tensor, text_embeds: torch.Tensor, norm: str = "sqrt_d") -> torch.Tensor:
    """Auxiliary loss: squared difference of the mean per-dimension L2 norms of audio vs. text embeddings.

    ``aux = (mean_rms_norm(audio, norm) - mean_rms_norm(text, norm).detach()) ** 2``. It pulls the projected
    audio embeddings to the scale of the LLM's own token embeddings; the text side is detached so
    the (frozen) embedding table is never pushed towards the audio. Example: audio vectors of all
    ones (norm 1 per dimension) and text vectors of all twos (norm 2) give aux = 1.0 with "sqrt_d";
    with "d" each side is a further sqrt(dim) smaller, so aux = 1 / dim.
    """
    return (mean_rms_norm(audio_embeds, norm) - mean_rms_norm(text_embeds, norm).detach()) ** 2
