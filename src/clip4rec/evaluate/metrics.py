"""Summaries of per-case metrics (means, bootstrap CIs over users) and beyond-accuracy metrics from top-k
lists; the per-case metrics of a rank are `clip4rec.ranking.case_metrics`.

Per-case values are kept (not only means) so that segments and bootstrap CIs are computed from the
same numbers. With a single target, recall@k == hr@k; both names are reported because papers use both.
"""

from __future__ import annotations

import numpy as np

from clip4rec.ranking import PerCase


def _select(per_case: PerCase, mask: np.ndarray | None) -> PerCase:
    if mask is None:
        return per_case
    m = np.asarray(mask, dtype=bool)
    return {name: v[m] for name, v in per_case.items()}


def summarize(per_case: PerCase, mask: np.ndarray | None = None) -> dict[str, float]:
    """Mean of each metric over the (masked) cases. Raises on an empty selection rather than return NaN."""
    sel = _select(per_case, mask)
    if not sel or len(next(iter(sel.values()))) == 0:
        raise ValueError("no cases selected")
    return {name: float(v.mean()) for name, v in sel.items()}


def bootstrap_ci(
    per_case: PerCase,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    mask: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CI of each metric's mean, resampling cases (= users) with replacement.

    All metrics share the same resamples (so CIs are jointly consistent). Each resample is stored
    as per-case counts, so one matrix product gives every metric's mean; blocks bound the memory.
    """
    sel = _select(per_case, mask)
    names = list(sel)
    values = np.stack([sel[k] for k in names], axis=1).astype(np.float64)  # [n, n_metrics]
    n = len(values)
    if n == 0:
        raise ValueError("no cases selected")
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, len(names)))
    block = max(1, min(n_boot, 2_000_000 // n))
    for b0 in range(0, n_boot, block):
        b = min(block, n_boot - b0)
        draws = rng.integers(0, n, size=(b, n))
        counts = np.bincount((draws + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        means[b0 : b0 + b] = counts @ values / n
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=0)
    return {name: (float(lo[j]), float(hi[j])) for j, name in enumerate(names)}


def _valid_topk(top_items: np.ndarray, k: int) -> np.ndarray:
    """Flat array of the items in the first k columns, without the -1 padding."""
    top = np.asarray(top_items)
    if top.ndim != 2 or top.shape[0] == 0:
        raise ValueError("top_items must be a non-empty [n_lists, depth] array")
    if k > top.shape[1]:
        raise ValueError(f"k={k} exceeds the ranking depth {top.shape[1]}")
    flat = top[:, :k].ravel()
    return flat[flat >= 0]


def coverage_at_k(top_items: np.ndarray, k: int, n_items: int) -> float:
    """Share of the catalogue that appears in at least one top-k list."""
    return len(np.unique(_valid_topk(top_items, k))) / n_items


def gini_exposure(top_items: np.ndarray, k: int, n_items: int) -> float:
    """Gini coefficient of per-item exposure counts in top-k lists, over all ``n_items`` items.

    Never-shown items count as zero exposure, so 0 = every item shown equally often and
    (n_items - 1) / n_items = every slot filled by one item.
    """
    x = np.sort(np.bincount(_valid_topk(top_items, k), minlength=n_items)).astype(np.float64)
    total = x.sum()
    if total == 0:
        raise ValueError("no items in the top-k lists")
    i = np.arange(1, n_items + 1)
    return float((2.0 * (i * x).sum()) / (n_items * total) - (n_items + 1) / n_items)


def intra_list_diversity(top_items: np.ndarray, k: int, item_vectors: np.ndarray) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cos) among each list's top-k items.

    Works with any [n_items, d] vector table (content, fused, ID embeddings). Zero vectors are
    treated as orthogonal to everything (distance 1). Lists with fewer than two items are skipped.
    Uses sum_{i != j} <x_i, x_j> = |sum_i x_i|^2 - sum_i |x_i|^2, which avoids the k x k matrix.
    """
    top = np.asarray(top_items)
    _valid_topk(top, k)  # validates shape and k
    vec = np.asarray(item_vectors, dtype=np.float64)
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    unit = np.divide(vec, norms, out=np.zeros_like(vec), where=norms > 0)

    total, n_lists = 0.0, 0
    block = max(1, 4_000_000 // max(1, k * vec.shape[1]))
    for s in range(0, len(top), block):
        items = top[s : s + block, :k]
        valid = items >= 0
        x = unit[np.where(valid, items, 0)] * valid[..., None]  # [b, k, d]
        c = valid.sum(1)
        pair_sim = (x.sum(1) ** 2).sum(-1) - (x**2).sum((1, 2))
        keep = c >= 2
        total += float((1.0 - pair_sim[keep] / (c[keep] * (c[keep] - 1))).sum())
        n_lists += int(keep.sum())
    if n_lists == 0:
        raise ValueError("no list has two or more items")
    return total / n_lists
