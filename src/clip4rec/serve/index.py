"""Top-k over the item table: exact (one matrix-vector product + partial sort) or FAISS (optional).

Both answer `search(query [h], k, exclude) -> (indices, scores)` over the rows of a float32 table, by inner
product (the model's score). Rows published after an index was built are not in a FAISS index: the service
scans those few exactly and merges (see `state.py`), so no index is ever mutated while it is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import torch

IndexKind = Literal["exact", "faiss"]


class TopK(Protocol):
    name: str
    n: int

    def search(self, query: torch.Tensor, k: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]: ...


class ExactIndex:
    """Scores every row: table @ query, excluded rows set to -inf, then torch.topk (a partial sort)."""

    name = "exact"

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.n = int(table.shape[0])

    def scores(self, query: torch.Tensor) -> torch.Tensor:
        return torch.mv(self.table, query)

    def search(self, query: torch.Tensor, k: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            scores = self.scores(query)
            if len(exclude):
                scores[torch.as_tensor(np.asarray(exclude, dtype=np.int64))] = float("-inf")
            k = min(k, self.n)
            top = torch.topk(scores, k, sorted=True)
            values, indices = top.values.numpy(), top.indices.numpy()
        keep = np.isfinite(values)
        return indices[keep].astype(np.int64), values[keep].astype(np.float32)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FaissIndex:
    """Inner-product FAISS index over a snapshot of the table.

    `kind="ivf"` (default): IndexIVFFlat with ~sqrt(n) lists, `nprobe` probed per query: approximate, its
    recall against exact is measured by `recall_vs_exact`. `kind="flat"`: IndexFlatIP, exact (a baseline).
    """

    name = "faiss"

    def __init__(self, table: torch.Tensor | np.ndarray, kind: Literal["ivf", "flat"] = "ivf",
                 nlist: int | None = None, nprobe: int = 16, seed: int = 0):
        try:
            import faiss
        except ImportError as err:
            raise RuntimeError("the FAISS index needs the `faiss-cpu` package (pip install faiss-cpu), "
                               "or use the default exact index") from err
        faiss.omp_set_num_threads(max(1, torch.get_num_threads()))  # same thread budget as the torch path
        data = np.ascontiguousarray(table.numpy() if isinstance(table, torch.Tensor) else table, dtype=np.float32)
        self.n, dim = data.shape
        self.kind = kind
        if kind == "flat" or self.n < 1000:
            self.index = faiss.IndexFlatIP(dim)
            self.kind = "flat"
        else:
            nlist = nlist or int(max(16, min(65536, np.sqrt(self.n))))
            quantizer = faiss.IndexFlatIP(dim)
            self.index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = data if self.n <= 64 * nlist else data[rng.choice(self.n, 64 * nlist, replace=False)]
            self.index.cp.seed = seed
            self.index.train(sample)
            self.index.nprobe = min(nprobe, nlist)
        self.index.add(data)
        self.nprobe = getattr(self.index, "nprobe", None)

    def search(self, query: torch.Tensor, k: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        excluded = set(int(i) for i in exclude)
        want = min(self.n, k + len(excluded))
        q = np.ascontiguousarray(query.detach().numpy().reshape(1, -1), dtype=np.float32)
        scores, indices = self.index.search(q, want)
        scores, indices = scores[0], indices[0]
        keep = indices >= 0
        if excluded:
            keep &= ~np.isin(indices, np.fromiter(excluded, np.int64, len(excluded)))
        return indices[keep][:k].astype(np.int64), scores[keep][:k].astype(np.float32)


def build_index(table: torch.Tensor, index: IndexKind = "exact", **options) -> ExactIndex | FaissIndex:
    """`options` go to FaissIndex (kind="ivf"|"flat", nprobe, nlist)."""
    if index == "exact":
        return ExactIndex(table)
    if index == "faiss":
        return FaissIndex(table, **options)
    raise ValueError(f"unknown index {index!r}; use exact or faiss")


def recall_vs_exact(index: TopK, table: torch.Tensor, queries: torch.Tensor, k: int = 10) -> float:
    """Mean |approx top-k ∩ exact top-k| / k over the query vectors (1.0 for an exact index)."""
    exact = ExactIndex(table)
    hits = 0
    for q in queries:
        truth = set(exact.search(q, k)[0].tolist())
        hits += len(truth & set(index.search(q, k)[0].tolist()))
    return hits / (k * len(queries)) if len(queries) else float("nan")
