"""How much of the exact top-k an approximate index finds (the FAISS test and bench/serve_latency.py)."""

from __future__ import annotations

import torch

from clip4rec.serve.index import ExactIndex, TopK


def recall_vs_exact(index: TopK, table: torch.Tensor, queries: torch.Tensor, k: int = 10) -> float:
    """Mean |approx top-k ∩ exact top-k| / k over the query vectors (1.0 for an exact index)."""
    exact = ExactIndex(table)
    hits = 0
    for q in queries:
        truth = set(exact.search(q, k)[0].tolist())
        hits += len(truth & set(index.search(q, k)[0].tolist()))
    return hits / (k * len(queries)) if len(queries) else float("nan")
