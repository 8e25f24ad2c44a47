"""Top-k over the item table: exact (one matrix-vector product + partial sort) or FAISS (optional).

Both answer `search(query [h], k, exclude) -> (indices, scores)` over the rows of a float32 table, by inner
product (the model's score). Rows published after an index was built are not in a FAISS index: the service
scans those few exactly and merges (see `state.py`), so no index is ever mutated while it is read.

Exact top-k is the ranking kernel's (clip4rec.ranking.top_k): score descending, ties to the lower item index,
so the service lists tied items in the order evaluation ranks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from clip4rec.config import FaissKind, IndexKind
from clip4rec.ranking import top_k

__all__ = ["ExactIndex", "FaissIndex", "TopK", "build_index", "exact_top_k", "faiss_available", "in_rank_order"]


class TopK(Protocol):
    name: str
    n: int

    def search(self, query: torch.Tensor, k: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]: ...


def exact_top_k(scores: torch.Tensor, k: int, exclude: Sequence[Sequence[int]] = ()) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row of `scores` [b, n]: its top `k` (indices, scores), best first, ties to the lower index (the
    ranking kernel's order). `exclude[r]` lists row r's indices never to return; rows scored -inf are left out
    too (a service lists only what it can rank), so a row may hold fewer than k."""
    b, n = scores.shape
    depth = min(k, n)
    if depth < 1:
        return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(b)]
    excluded = None
    if any(len(e) for e in exclude):
        excluded = torch.zeros((b, n), dtype=torch.bool)
        for row, items in enumerate(exclude):
            excluded[row, torch.as_tensor(np.asarray(items, dtype=np.int64))] = True
        scores = scores.masked_fill(excluded, float("-inf"))  # a copy: the caller's scores stay as they were
    items, values = (t.numpy() for t in top_k(scores, depth, excluded))
    keep = np.isfinite(values)
    return [(items[r][keep[r]].astype(np.int64), values[r][keep[r]].astype(np.float32)) for r in range(b)]


def in_rank_order(indices: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best `k` of a few (index, score) candidates (a FAISS answer merged with an exact scan), in the ranking
    kernel's order: score descending, then the lower index."""
    order = np.lexsort((indices, -scores))[:k]
    return indices[order], scores[order]


class ExactIndex:
    """Scores every row: table @ query, excluded rows set to -inf, then the ranking kernel's exact top-k."""

    name = "exact"

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.n = int(table.shape[0])

    def scores(self, query: torch.Tensor) -> torch.Tensor:
        return torch.mv(self.table, query)

    def search(self, query: torch.Tensor, k: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            return exact_top_k(self.scores(query)[None], k, [exclude])[0]


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FaissIndex:
    """Inner-product FAISS index over a snapshot of the table.

    `kind="ivf"` (default): IndexIVFFlat with ~sqrt(n) lists, `nprobe` probed per query (tables under 1000 rows
    get flat: too few points to train lists). `kind="hnsw"`: IndexHNSWFlat, graph with `m` links per node,
    `ef_construction` at build, `ef_search` per query. Both approximate: bench/serve_latency.py measures their recall.
    `kind="flat"`: IndexFlatIP, exact (a baseline). `clip4rec index` persists one beside a Run (index_store.py).
    """

    name = "faiss"

    def __init__(self, table: torch.Tensor | np.ndarray, kind: FaissKind = "ivf", nlist: int | None = None,
                 nprobe: int = 16, seed: int = 0, m: int = 32, ef_construction: int = 80, ef_search: int = 64):
        faiss = _faiss()
        faiss.omp_set_num_threads(max(1, torch.get_num_threads()))  # same thread budget as the torch path
        data = np.ascontiguousarray(table.numpy() if isinstance(table, torch.Tensor) else table, dtype=np.float32)
        n, dim = data.shape
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        elif kind == "flat" or n < 1000:
            index, kind = faiss.IndexFlatIP(dim), "flat"
        elif kind == "ivf":
            nlist = nlist or int(max(16, min(65536, np.sqrt(n))))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = data if n <= 64 * nlist else data[rng.choice(n, 64 * nlist, replace=False)]
            index.cp.seed = seed
            index.train(sample)
            index.nprobe = min(nprobe, nlist)
        else:
            raise ValueError(f"unknown faiss kind {kind!r}; use ivf, hnsw or flat")
        index.add(data)
        self._wrap(index, kind)

    @classmethod
    def from_faiss(cls, index, kind: str) -> "FaissIndex":
        """Wrap a faiss index read from disk (see index_store.py)."""
        self = cls.__new__(cls)
        self._wrap(index, kind)
        return self

    def _wrap(self, index, kind: str) -> None:
        self.index, self.kind, self.n = index, kind, int(index.ntotal)
        self.nprobe = getattr(index, "nprobe", None)

    def params(self) -> dict[str, int]:
        """The settings that shape results, as recorded beside a persisted index."""
        if self.kind == "ivf":
            return {"nlist": int(self.index.nlist), "nprobe": int(self.index.nprobe)}
        if self.kind == "hnsw":
            h = self.index.hnsw
            return {"m": int(h.nb_neighbors(1)), "ef_construction": int(h.efConstruction), "ef_search": int(h.efSearch)}
        return {}

    def set_search(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Query-time knobs (no rebuild): IVF lists probed, HNSW candidate list size."""
        if nprobe is not None and self.kind == "ivf":
            self.index.nprobe = min(nprobe, int(self.index.nlist))
            self.nprobe = self.index.nprobe
        if ef_search is not None and self.kind == "hnsw":
            self.index.hnsw.efSearch = ef_search

    def search(self, query: torch.Tensor, k: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        excluded = set(int(i) for i in exclude)
        want = min(self.n, k + len(excluded))
        q = np.ascontiguousarray(query.detach().numpy().reshape(1, -1), dtype=np.float32)
        scores, indices = self.index.search(q, want)
        scores, indices = scores[0], indices[0]
        keep = indices >= 0
        if excluded:
            keep &= ~np.isin(indices, np.fromiter(excluded, np.int64, len(excluded)))
        return in_rank_order(indices[keep].astype(np.int64), scores[keep].astype(np.float32), k)


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise RuntimeError("the FAISS index needs the `faiss-cpu` package (pip install faiss-cpu), "
                           "or use the default exact index") from err
    return faiss


def build_index(table: torch.Tensor, index: IndexKind = "exact", **options) -> ExactIndex | FaissIndex:
    """`options` go to FaissIndex (kind="ivf"|"hnsw"|"flat", nprobe, nlist, m, ef_construction, ef_search)."""
    if index == "exact":
        return ExactIndex(table)
    if index == "faiss":
        return FaissIndex(table, **options)
    raise ValueError(f"unknown index {index!r}; use exact or faiss")
