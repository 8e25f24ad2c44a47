"""Training-free variants, built like every other model (item table + user tower, score = dot product), so
`train`, `evaluate`, `compare` and `serve` treat them like any trained variant.

`pop`: every user gets the training popularity of each item (a one-column table of counts, a constant user).
`content-knn`: the cosine between an item's frozen content vector and the user's profile, the mean of the
content vectors of the last `max_len` items of the history (or, with `model.knn_recency` below 1, their
recency-weighted sum); with several modalities, the cosines are averaged. Vectors are mean-centred over the
catalog first: raw encoder vectors share a large common direction that would make every item look alike.
Nothing is learned, so it is the bar a trained content model must clear.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def centred_unit(vectors: np.ndarray, mask: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Rows minus the mean of the usable rows (or the given `mean`), L2-normalised; unusable rows are zero."""
    x = vectors.astype(np.float64, copy=True)
    x -= x[mask].mean(0) if mean is None else mean
    x[~mask] = 0.0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms == 0, 1.0, norms)).astype(np.float32)


class PopularityItems(nn.Module):
    def __init__(self, train_counts: np.ndarray):
        super().__init__()
        self.register_buffer("counts", torch.from_numpy(np.asarray(train_counts, np.float32))[:, None])

    def forward(self) -> torch.Tensor:
        return self.counts


class ConstantTower(nn.Module):
    """Every position's user vector is [1]: score = the item's table value (its popularity)."""

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.ones(*inputs.shape[:2], 1, dtype=inputs.dtype, device=inputs.device)


class ContentKnnItems(nn.Module):
    """Table [n, sum of dims]: each modality's centred unit vectors scaled by 1/sqrt(M), side by side."""

    def __init__(self, modalities: dict[str, tuple[np.ndarray, np.ndarray]]):
        super().__init__()
        if not modalities:
            raise ValueError("content-knn needs at least one modality")
        self.names = list(modalities)
        scale = 1.0 / len(modalities) ** 0.5  # a Python float keeps the float32 dtype
        blocks, means = [], []
        for vectors, mask in modalities.values():
            means.append(vectors[mask].astype(np.float64).mean(0).astype(np.float32) if mask.any()
                         else np.zeros(vectors.shape[1], np.float32))
            blocks.append(centred_unit(vectors, mask, means[-1]) * scale)
        self.dims = [b.shape[1] for b in blocks]
        self.register_buffer("table", torch.from_numpy(np.concatenate(blocks, axis=1)))
        for i, mean in enumerate(means):  # so that an item published later is centred the same way
            self.register_buffer(f"mean_{i}", torch.from_numpy(mean))

    @classmethod
    def empty(cls, names: list[str], dims: list[int], n_items: int) -> "ContentKnnItems":
        """Zero-filled buffers of the right shapes: the skeleton a saved Run fills with load_state_dict."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.names, self.dims = list(names), list(dims)
        self.register_buffer("table", torch.zeros(n_items, sum(dims)))
        for i, dim in enumerate(dims):
            self.register_buffer(f"mean_{i}", torch.zeros(dim))
        return self

    def forward(self) -> torch.Tensor:
        return self.table

    def vector_for(self, content: dict[str, np.ndarray], index: int | None = None) -> torch.Tensor:
        """Table row of a new item from raw encoder vectors by modality name (missing modalities: zero);
        `index` (a re-published item's row) changes nothing: every row is its content alone."""
        if not any(name in content for name in self.names):
            raise ValueError(f"no known modality in {sorted(content)}; this Run uses {self.names}")
        blocks = []
        for i, (name, dim) in enumerate(zip(self.names, self.dims)):
            raw = np.asarray(content.get(name, np.zeros(dim)), np.float32).reshape(1, -1)
            present = np.array([name in content])
            blocks.append(centred_unit(raw, present, getattr(self, f"mean_{i}").numpy()) / len(self.names) ** 0.5)
        return torch.from_numpy(np.concatenate(blocks, axis=1)[0])


def normalised_blocks(x: torch.Tensor, dims: list[int], scales: torch.Tensor | None = None) -> torch.Tensor:
    """Each modality's block of the last dimension L2-normalised (times its scale), side by side."""
    blocks = [F.normalize(b, dim=-1) for b in x.split(dims, dim=-1)]
    if scales is not None:
        blocks = [scale * b for scale, b in zip(scales, blocks)]
    return torch.cat(blocks, dim=-1)


class ProfileTower(nn.Module):
    """User vector at each position = the per-modality normalised sum of the item vectors so far (causal), the
    item t steps back weighted by recency^t (1: every item alike); the sequence it sees is already cut to the
    last max_len items."""

    def __init__(self, dims: list[int], recency: float = 1.0):
        super().__init__()
        self.dims, self.recency = dims, recency

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        profile = recency_cumsum(inputs * mask[..., None], self.recency)
        return normalised_blocks(profile, self.dims) / len(self.dims) ** 0.5


def recency_cumsum(rows: torch.Tensor, recency: float) -> torch.Tensor:
    """[B, L, d] -> [B, L, d]: at each position t, sum over j <= t of recency^(t - j) * rows[:, j] (1: cumsum)."""
    if recency == 1.0:
        return rows.cumsum(dim=1)
    # [L, L] lower-triangular weights; L <= max_len, so the matrix is small
    steps = torch.arange(rows.shape[1], device=rows.device)
    back = steps[:, None] - steps[None, :]
    weights = torch.where(back >= 0, recency ** back.clamp(min=0).to(rows.dtype),
                          torch.zeros((), dtype=rows.dtype, device=rows.device))
    return torch.einsum("tj,bjd->btd", weights, rows)
