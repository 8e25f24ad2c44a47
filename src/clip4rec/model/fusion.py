"""Item side for content variants: frozen encoder vectors -> fusion -> (optional) gated ID blend.

The content vectors are buffers (never trained: encoders stay frozen); fusion, the ID embeddings and
the gate are the learned parts. `forward()` returns the full item table [n_items, hidden], recomputed
each step during training and precomputed once for serving.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FusionKind = Literal["concat", "mean", "gated"]


def standardize(vectors: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit average norm over usable rows, so modalities of different scales mix evenly.

    Returns (standardized vectors, stats [2, d]: row 0 the mean, row 1 the scale) so that items added
    later are standardized the same way.
    """
    vectors = vectors.astype(np.float32, copy=True)
    mean = vectors[mask].mean(0) if mask.any() else np.zeros(vectors.shape[1], np.float32)
    vectors -= mean
    scale = float(np.linalg.norm(vectors[mask], axis=1).mean()) if mask.any() else 1.0
    vectors /= scale or 1.0
    vectors[~mask] = 0.0
    stats = np.stack([mean, np.full_like(mean, scale or 1.0)]).astype(np.float32)
    return vectors, stats


def principal_basis(rows: np.ndarray, rank: int) -> np.ndarray:
    """[d, rank] orthonormal basis of the top principal directions of (already centred) rows.

    A low-rank content input keeps the fusion from memorising individual training items through the many
    item-specific directions of a wide encoder vector (with d >= number of items, a linear projection can fit
    any table, like an ID embedding), so what it learns has to carry over to items it never saw. The basis
    comes from content alone (every catalog item's vectors, no interactions), so it leaks nothing.
    """
    rank = min(rank, *rows.shape)
    _, _, vt = np.linalg.svd(rows.astype(np.float64), full_matrices=False)
    basis = vt[:rank].T
    # SVD signs are arbitrary: fix each column's largest-magnitude entry positive (same input, same basis).
    signs = np.sign(basis[np.abs(basis).argmax(0), np.arange(rank)])
    return (basis * np.where(signs == 0, 1.0, signs)).astype(np.float32)


class ContentFusion(nn.Module):
    """Fuses M modality tables ([n, d_m] each, with a usable-mask) into one [n, hidden] table."""

    def __init__(self, modalities: dict[str, tuple[np.ndarray, np.ndarray]], hidden: int,
                 kind: FusionKind = "gated", dropout: float = 0.1, rank: int | None = None):
        super().__init__()
        if not modalities:
            raise ValueError("a content item side needs at least one modality")
        self.names, self.kind = list(modalities), kind
        dims = []
        for i, (vectors, mask) in enumerate(modalities.values()):
            table, stats = standardize(vectors, mask)
            if rank is not None and rank < table.shape[1]:
                basis = principal_basis(table[mask], rank)
                table = table @ basis
                self.register_buffer(f"basis_{i}", torch.from_numpy(basis))
            self.register_buffer(f"content_{i}", torch.from_numpy(np.ascontiguousarray(table)))
            self.register_buffer(f"stats_{i}", torch.from_numpy(stats))
            self.register_buffer(f"mask_{i}", torch.from_numpy(mask.astype(bool)))
            dims.append(table.shape[1])
        self.drop = nn.Dropout(dropout)
        if kind == "concat":
            self.proj = nn.Linear(sum(dims), hidden)
        elif kind in ("mean", "gated"):
            self.projs = nn.ModuleList(nn.Linear(d, hidden) for d in dims)
            self.out = nn.Linear(hidden, hidden)
            if kind == "mean":
                self.weights = nn.Parameter(torch.zeros(len(dims)))
            else:
                self.gate = nn.Linear(hidden * len(dims), len(dims))
        else:
            raise ValueError(f"unknown fusion {kind!r}; use concat, mean or gated")
        self.norm = nn.LayerNorm(hidden)

    def tables(self) -> list[torch.Tensor]:
        return [getattr(self, f"content_{i}") for i in range(len(self.names))]

    def masks(self) -> torch.Tensor:
        return torch.stack([getattr(self, f"mask_{i}") for i in range(len(self.names))], dim=1)  # [n, M]

    def fuse(self, tables: list[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
        tables = [self.drop(t) for t in tables]
        if self.kind == "concat":
            return self.norm(self.proj(torch.cat(tables, dim=1)))
        projected = torch.stack([p(t) for p, t in zip(self.projs, tables)], dim=1)  # [n, M, H]
        if self.kind == "mean":
            logits = self.weights.expand(len(masks), -1)
        else:
            logits = self.gate(projected.flatten(1))
        # Modalities an item lacks get zero weight; an item with none gets a zero content vector.
        weights = torch.softmax(logits.masked_fill(~masks, float("-inf")), dim=1).nan_to_num(0.0)
        return self.norm(self.out((weights[..., None] * projected).sum(1)))

    def forward(self) -> torch.Tensor:
        return self.fuse(self.tables(), self.masks())

    def modality_weights(self) -> torch.Tensor | None:
        """Per-item weight of each modality (mean/gated), for reports; None for concat."""
        if self.kind == "concat":
            return None
        with torch.no_grad():
            tables, masks = self.tables(), self.masks()
            projected = torch.stack([p(t) for p, t in zip(self.projs, tables)], dim=1)
            logits = self.weights.expand(len(masks), -1) if self.kind == "mean" else self.gate(projected.flatten(1))
            return torch.softmax(logits.masked_fill(~masks, float("-inf")), dim=1).nan_to_num(0.0)


class GatedIdBlend(nn.Module):
    """item = (1 - g) * content + g * id, with g = sigmoid(a * log1p(train count) + b).

    Items never seen in training have g = 0 exactly (their ID embedding is untrained noise), so cold items
    are pure content; for popular items the learned ID embedding can take over.
    """

    def __init__(self, content: ContentFusion, train_counts: np.ndarray, hidden: int, id_dropout: float = 0.0):
        super().__init__()
        self.content, self.id_dropout = content, id_dropout
        self.ids = nn.Embedding(len(train_counts), hidden)
        nn.init.normal_(self.ids.weight, std=0.02)
        self.register_buffer("log_count", torch.from_numpy(np.log1p(train_counts).astype(np.float32)))
        self.register_buffer("seen", torch.from_numpy(train_counts > 0))
        self.slope = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.tensor(-2.0))
        # Normalise after blending: otherwise pure-content (unseen) items keep the larger norm of the fused
        # vector and outscore blended ones, which would push every new item to the top.
        self.out_norm = nn.LayerNorm(hidden)

    def gate(self) -> torch.Tensor:
        return torch.sigmoid(self.slope * self.log_count + self.bias) * self.seen

    def forward(self) -> torch.Tensor:
        g = self.gate()
        if self.training and self.id_dropout > 0:
            g = g * (torch.rand_like(g) >= self.id_dropout)
        g = g[:, None]
        return self.out_norm((1 - g) * self.content() + g * self.ids.weight)


def content_vector_for_new_item(item_side: nn.Module, content: dict[str, np.ndarray],
                                index: int | None = None) -> torch.Tensor:
    """Item vector from fresh encoder vectors, through the trained fusion (the live cold-start path).

    `content` maps modality name -> raw encoder vector (as stored by `clip4rec encode`); missing modalities
    are allowed. For a brand-new item (`index` None) this is exactly the table row an unseen item with that
    content would get (gate 0: pure content). For a trained item re-published with new content (`index` =
    its row), a `fused-id` side blends the new content with the item's learned ID part through its gate.
    """
    if hasattr(item_side, "vector_for"):  # an item side with its own new-item path (content-knn)
        return item_side.vector_for(content)
    fusion = item_side.content if isinstance(item_side, GatedIdBlend) else item_side
    if not isinstance(fusion, ContentFusion):
        raise ValueError("this Run's item side has no content path (variant `id`): new items need a content variant")
    tables, present = [], []
    for i, name in enumerate(fusion.names):
        stored = getattr(fusion, f"content_{i}")
        if name in content:
            raw = torch.as_tensor(np.asarray(content[name], dtype=np.float32)).reshape(1, -1)
            tables.append(_standardize_like(fusion, i, raw))
            present.append(True)
        else:
            tables.append(torch.zeros(1, stored.shape[1]))
            present.append(False)
    if not any(present):
        raise ValueError(f"no known modality in {sorted(content)}; this Run uses {fusion.names}")
    item_side.eval()
    with torch.no_grad():
        vector = fusion.fuse(tables, torch.tensor([present]))[0]
        if not isinstance(item_side, GatedIdBlend):
            return vector
        if index is not None:
            g = item_side.gate()[index]
            vector = (1 - g) * vector + g * item_side.ids.weight[index]
        return item_side.out_norm(vector)


def _standardize_like(fusion: ContentFusion, i: int, raw: torch.Tensor) -> torch.Tensor:
    stats = getattr(fusion, f"stats_{i}")
    mean, scale = stats[0], stats[1, 0]
    standardized = (raw - mean) / scale
    basis = getattr(fusion, f"basis_{i}", None)
    return standardized if basis is None else standardized @ basis
