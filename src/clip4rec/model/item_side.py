"""Item side: the table of item vectors that every user vector is scored against.

`id` variant: a learned ID embedding per item. Content variants (Stage 2) build the table from stored
encoder vectors (ContentIdItems); both expose `forward() -> [n_items, width]`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clip4rec.model.baselines import centred_unit, normalised_blocks, recency_cumsum


class IdItemTable(nn.Module):
    def __init__(self, n_items: int, hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(n_items, hidden)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self) -> torch.Tensor:
        return self.embedding.weight


# Each modality's content block keeps its top principal directions: cosines over 128 of them rank items as the
# full vectors do (ML-100K content-knn: validation NDCG@10 0.0297 vs 0.0305 with MiniLM's 384), and the
# table stays narrow (EfficientNet's 1280 dims would triple an epoch).
CONTENT_DIMS = 128


class ContentIdItems(nn.Module):
    """Item side of the content variants: every item is scored by a collaborative term and a content term,
    score(u, i) = u . r_i + sum over modalities m of knn_scale_m * cos(profile_u,m, c_i,m) / sqrt(M).

    Content c_i: each modality's frozen vectors, mean-centred, on their top CONTENT_DIMS principal directions
    and L2-normalised (as `content-knn` reads them, less the weakest directions), side by side, / sqrt(M); profile_u is the normalised sum of the history's content vectors.
    The content term is the training-free content-knn score with one learned scale: it keeps what the frozen
    encoder knows about which items are alike, which a map fitted to warm items alone loses (trained content
    maps rank unseen items far below content-knn). r_i is the item's ID embedding when it has one, else
    mapper(c_i), a linear content->ID map (every item, in the content-only variants). In the content-only
    variants a residual MLP (`mlp` wide, its output layer starting at zero, so the map starts at the PCA) is added
    to the linear map: with no ID rows, the table needs it to tell warm items apart.

    With `use_ids` (fused-id), each training step a random share `id_dropout` of the known items is scored as
    if it had no ID (DropoutNet): the mapper and the knn scale are trained by the recommendation loss to put an
    ID-less item on the same scale as items with IDs, which is all a cold item has. The tower always reads
    known items through their IDs.

    With `graph_k` (fused-id), every row also gets graph_weight x the mean ID row of the item's graph_k most
    content-similar known items (a frozen item-item graph, LATTICE/FREEDOM style): a rarely seen item borrows from
    well-trained neighbours, and a cold item gets, besides mapper(c_i), what its nearest known items learned.

    As a table (what serving scores against): rows [r_i, c_i]; the user vector is [tower output,
    knn_scale * profile]. One dot product gives both terms.

    With `cold_column` (model.cold_floor), rows are [r_i, c_i, 1 if item i had no training interactions else 0]
    and the user vector ends with `cold_boost` (fitted on validation after training): a constant added to every
    such item's score, items published later included.
    """

    def __init__(self, modalities: dict[str, tuple[np.ndarray, np.ndarray]], train_counts: np.ndarray,
                 hidden: int, use_ids: bool, id_dropout: float = 0.0, init_std: float = 0.02,
                 knn_scale: float = 1.0, graph_k: int = 0, whiten: float = 0.0, mlp: int = 0,
                 cold_column: bool = False):
        super().__init__()
        if not modalities:
            raise ValueError("a content item side needs at least one modality")
        self.names, self.use_ids, self.id_dropout = list(modalities), use_ids, id_dropout
        blocks = []
        self.raw_dims = [vectors.shape[1] for vectors, _ in modalities.values()]
        for i, (vectors, mask) in enumerate(modalities.values()):
            mean = vectors[mask].astype(np.float64).mean(0) if mask.any() else np.zeros(vectors.shape[1])
            basis = (principal_directions(vectors[mask].astype(np.float64) - mean, CONTENT_DIMS, whiten)
                     if mask.sum() > 1
                     else np.eye(vectors.shape[1])[:, :CONTENT_DIMS])  # no usable rows: nothing to learn from
            # Items published later are centred and projected the same way.
            self.register_buffer(f"mean_{i}", torch.from_numpy(mean.astype(np.float32)))
            self.register_buffer(f"basis_{i}", torch.from_numpy(basis.astype(np.float32)))
            blocks.append(self._content_block(vectors, mask, i))
        content = np.concatenate(blocks, axis=1)
        self.dims = [b.shape[1] for b in blocks]
        self.register_buffer("content", torch.from_numpy(content))
        self._add_cold_column(torch.from_numpy(np.asarray(train_counts) == 0) if cold_column else None)
        self.register_buffer("seen", torch.from_numpy(np.asarray(train_counts) > 0) if use_ids
                             else torch.zeros(len(train_counts), dtype=torch.bool))
        weight, bias = content_pca_init(content, hidden, init_std)
        self.mapper = nn.Linear(content.shape[1], hidden)
        with torch.no_grad():
            self.mapper.weight.copy_(torch.from_numpy(weight))
            self.mapper.bias.copy_(torch.from_numpy(bias))
        self.adapter = content_adapter(content.shape[1], hidden, mlp) if not use_ids else None
        # One scale per modality: the content term is a learned weighted mean of per-modality cosines, so a
        # weak modality (ML-100K's posters) cannot drown a strong one. It starts small: Adam moves it by about
        # lr per step, so a large start (5) took tens of epochs to undo where content helps little (ML-100K
        # cold split, seed 0, fused-id on MiniLM text: validation NDCG@10 0.121 from 1.0, 0.104 from 5).
        self.knn_scale = nn.Parameter(torch.full((len(self.dims),), float(knn_scale)))
        self._add_content_weight()
        if use_ids:
            # ID rows start at the item's mapped content (PCA init): an item starts where its content puts it.
            self.ids = nn.Embedding(len(train_counts), hidden)
            with torch.no_grad():
                self.ids.weight.copy_(self._map(self.content))
        self._add_graph(graph_k)
        if self.graph_k:
            self.neighbours.copy_(content_neighbours(self.content, self.content, self.seen, graph_k))

    @classmethod
    def empty(cls, names: list[str], raw_dims: list[int], dims: list[int], n_items: int, hidden: int,
              use_ids: bool, id_dropout: float = 0.0, graph_k: int = 0, mlp: int = 0,
              cold_column: bool = False) -> "ContentIdItems":
        """The same modules and buffer shapes, zero-filled and computed from nothing: the skeleton a saved Run
        fills with load_state_dict, so loading one needs neither its stores nor the standardisation and SVD."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.names, self.use_ids, self.id_dropout = list(names), use_ids, id_dropout
        self.raw_dims, self.dims = list(raw_dims), list(dims)
        for i, (raw, dim) in enumerate(zip(raw_dims, dims)):
            self.register_buffer(f"mean_{i}", torch.zeros(raw))
            self.register_buffer(f"basis_{i}", torch.zeros(raw, dim))
        self.register_buffer("content", torch.zeros(n_items, sum(dims)))
        self._add_cold_column(torch.zeros(n_items, dtype=torch.bool) if cold_column else None)
        self.register_buffer("seen", torch.zeros(n_items, dtype=torch.bool))
        self.mapper = nn.Linear(self.content.shape[1], hidden)
        self.adapter = content_adapter(self.content.shape[1], hidden, mlp) if not use_ids else None
        self.knn_scale = nn.Parameter(torch.zeros(len(dims)))
        self._add_content_weight()
        if use_ids:
            self.ids = nn.Embedding(n_items, hidden)
        self._add_graph(graph_k)
        return self

    def _add_cold_column(self, untrained: torch.Tensor | None) -> None:
        """channel_dims: the table's columns after the ID part (the content block, then the cold column if any)."""
        self.cold_column = untrained is not None
        self.channel_dims = self.content.shape[1] + int(self.cold_column)
        if self.cold_column:
            self.register_buffer("untrained", untrained)   # bool per item: no training interactions
            self.register_buffer("cold_boost", torch.zeros(()))  # set by train.calibrate.fit_cold_boost

    def _add_graph(self, k: int) -> None:
        # Only fused-id has ID rows to borrow. The weight starts small (0.2): on ML-100K, post hoc, mixing a fifth
        # of the neighbours' mean into a trained Run's rows was the best share on validation.
        self.graph_k = k if self.use_ids else 0
        if self.graph_k:
            self.register_buffer("neighbours", torch.zeros(len(self.seen), k, dtype=torch.long))
            self.graph_weight = nn.Parameter(torch.tensor(0.2))

    def _graph_term(self, neighbours: torch.Tensor) -> torch.Tensor:
        """[..., hidden]: graph_weight x the mean ID row of each row of `neighbours` ([..., k] item indices)."""
        return self.graph_weight * self.ids.weight[neighbours].mean(-2)

    def _add_content_weight(self) -> None:
        # A multiple of the learned knn scales, and the recency of the knn term's profile (the history item t
        # steps back weighs knn_recency^t; trained at 1, the plain sum), both fitted on validation after training
        # (train.calibrate), not by the loss. A Run saved before either existed loads with 1, what it computed.
        self.register_buffer("content_weight", torch.ones(()))
        self.register_buffer("knn_recency", torch.ones(()))
        self.register_load_state_dict_pre_hook(_default_content_weight)

    def _content_block(self, vectors: np.ndarray, mask: np.ndarray, i: int) -> np.ndarray:
        """Modality i's rows: centred, projected on its principal directions, L2-normalised, / sqrt(M)."""
        mean, basis = getattr(self, f"mean_{i}").numpy(), getattr(self, f"basis_{i}").numpy()
        projected = (vectors.astype(np.float64) - mean) @ basis
        return centred_unit(projected, mask, np.zeros(basis.shape[1])) / len(self.raw_dims) ** 0.5

    def _map(self, content: torch.Tensor) -> torch.Tensor:
        """[n, hidden]: the content->ID map of content rows (linear, plus the residual MLP if there is one)."""
        mapped = self.mapper(content)
        return mapped + self.adapter(content) if self.adapter is not None else mapped

    def _rows(self, known: torch.Tensor) -> torch.Tensor:
        mapped = self._map(self.content)
        if not self.use_ids:
            return mapped
        rows = torch.where(known[:, None], self.ids.weight, mapped)
        return rows + self._graph_term(self.neighbours) if self.graph_k else rows

    def input_table(self) -> torch.Tensor:
        """[n, hidden]: what the tower reads for each item (IDs for every known item, never dropped)."""
        return self._rows(self.seen)

    def forward(self) -> torch.Tensor:
        """[n, hidden + channel_dims]: the scoring table (while training, some known rows are scored ID-less)."""
        known = self.seen
        if self.training and self.id_dropout > 0 and self.use_ids:
            known = known & (torch.rand(len(known), device=known.device) >= self.id_dropout)
        columns = [self._rows(known), self.content]
        if self.cold_column:
            columns.append(self.untrained[:, None].to(self.content.dtype))
        return torch.cat(columns, dim=1)

    def profile(self, items: torch.Tensor, mask: torch.Tensor, content: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, channel_dims]: per modality, its knn_scale x the normalised sum of the history's content
        vectors so far (causal; the one t steps back weighted by knn_recency^t), so that profile . c_i =
        sum_m knn_scale_m * cos_m / sqrt(M); with a cold column, followed by cold_boost. `content`: the table's
        last channel_dims columns (default: the trained items'), which a service extends with every item it
        publishes, so that a history may hold one."""
        content = self.content if content is None else content[:, :self.content.shape[1]]
        history = recency_cumsum(F.embedding(items.clamp(min=0), content) * mask[..., None],
                                 float(self.knn_recency))
        profile = normalised_blocks(history, self.dims, self.knn_scale * self.content_weight)
        if not self.cold_column:
            return profile
        return torch.cat([profile, self.cold_boost.to(profile.dtype).expand(*profile.shape[:-1], 1)], dim=-1)

    def vector_for(self, content: dict[str, np.ndarray], index: int | None = None) -> torch.Tensor:
        """Scoring-table row of a new item from raw encoder vectors by modality name (missing: zero). For a
        trained item re-published with new content (`index` = its row), the learned ID row is kept."""
        if not any(name in content for name in self.names):
            raise ValueError(f"no known modality in {sorted(content)}; this Run uses {self.names}")
        blocks = []
        for i, (name, dim) in enumerate(zip(self.names, self.raw_dims)):
            raw = np.asarray(content.get(name, np.zeros(dim)), np.float32).reshape(1, -1)
            blocks.append(self._content_block(raw, np.array([name in content]), i))
        c = torch.from_numpy(np.concatenate(blocks, axis=1)[0].astype(np.float32))
        with torch.no_grad():
            known = self.use_ids and index is not None and bool(self.seen[index])
            row = self.ids.weight[index] if known else self._map(c)
            if self.graph_k:  # its neighbours by the content it is published with
                row = row + self._graph_term(content_neighbours(c[None], self.content, self.seen, self.graph_k,
                                                                exclude=index)[0])
            if not self.cold_column:
                return torch.cat([row, c])
            untrained = index is None or bool(self.untrained[index])  # a new item has no training interactions
            return torch.cat([row, c, torch.tensor([float(untrained)])])


def content_adapter(d_in: int, hidden: int, width: int) -> nn.Module | None:
    """A residual MLP beside the linear content map (None for width 0). Its output layer starts at zero, so the
    map starts exactly at the PCA init and the MLP adds only what training asks of it."""
    if width <= 0:
        return None
    mlp = nn.Sequential(nn.Linear(d_in, width), nn.GELU(), nn.Linear(width, hidden))
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp


def content_neighbours(queries: torch.Tensor, content: torch.Tensor, known: torch.Tensor, k: int,
                       exclude: int | None = None, chunk: int = 4096) -> torch.Tensor:
    """[q, k] row indices of the k `known` rows of `content` most cosine-similar to each query row. Called with
    queries = content, row i never picks itself; `exclude` also leaves out one row (a re-published item's)."""
    unit = F.normalize(content, dim=1)
    same = queries is content
    queries = F.normalize(queries, dim=1)
    if int(known.sum()) < k + 1:
        raise ValueError(f"a content graph of {k} neighbours needs at least {k + 1} items with IDs; "
                         f"this catalog has {int(known.sum())} (lower model.graph_k)")
    out = []
    for start in range(0, len(queries), chunk):  # [chunk, n] similarities at a time: Beauty's n^2 would be 0.6 GB
        sim = queries[start:start + chunk] @ unit.T
        sim[:, ~known] = float("-inf")
        if same:
            rows = torch.arange(start, start + len(sim))
            sim[rows - start, rows] = float("-inf")
        if exclude is not None:
            sim[:, exclude] = float("-inf")
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def _default_content_weight(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    """Load-time hook: a state dict saved before content_weight or knn_recency existed gets 1 for it (what that
    model computed)."""
    state_dict.setdefault(prefix + "content_weight", torch.ones(()))
    state_dict.setdefault(prefix + "knn_recency", torch.ones(()))


def principal_directions(centred: np.ndarray, k: int, whiten: float = 0.0) -> np.ndarray:
    """[d, min(k, d, n)] top principal directions of already-centred rows, signs fixed (each direction's largest
    entry positive) so that the same content always gives the same basis. Orthonormal with whiten 0; else
    direction j is divided by (s_j / s_0)^whiten, s the singular values, so projecting onto the basis whitens
    (partly, below 1). Directions without spread (s_j = 0) keep their unit length."""
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    kept = min(k, vt.shape[0])
    basis = vt[:kept].T
    signs = np.sign(basis[np.abs(basis).argmax(0), np.arange(basis.shape[1])])
    spread = s[:kept] / s[0] if s[0] > 0 else np.ones(kept)
    return basis * np.where(signs == 0, 1.0, signs) / np.where(spread > 0, spread, 1.0) ** whiten


def content_pca_init(content: np.ndarray, hidden: int, std: float) -> tuple[np.ndarray, np.ndarray]:
    """(weight [hidden, D], bias [hidden]) of the linear map onto the top `hidden` principal directions of
    the rows, each output scaled to standard deviation `std`. Directions beyond the content's rank stay 0."""
    x = content.astype(np.float64)
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = np.zeros((x.shape[1], hidden))
    k = min(hidden, vt.shape[0])
    basis[:, :k] = vt[:k].T
    # SVD signs are arbitrary: fix each direction's largest entry positive (same content, same init).
    signs = np.sign(basis[np.abs(basis).argmax(0), np.arange(hidden)])
    basis *= np.where(signs == 0, 1.0, signs)
    spread = ((x - mean) @ basis).std(0)
    scale = np.where(spread > 1e-8, std / np.maximum(spread, 1e-12), 0.0)
    weight = (basis * scale).T
    return weight.astype(np.float32), (-(mean @ basis) * scale).astype(np.float32)
