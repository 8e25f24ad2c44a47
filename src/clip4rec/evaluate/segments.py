"""Case segments (overall / warm / cold / head / tail) and the one-call evaluation of a Rankings.

Head/tail definition (by *target* item popularity in the training data):
  take the items with a training count > 0, sort them by count descending, ties by lower item index
  (stable, so the split is deterministic), and call the first ceil(head_share * #items with count > 0)
  of them the head. A case is "head" when its target is a head item, "tail" otherwise -- which
  includes targets never seen in training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from clip4rec.evaluate.metrics import (
    bootstrap_ci,
    coverage_at_k,
    gini_exposure,
    intra_list_diversity,
    summarize,
)
from clip4rec.ranking import Rankings, case_metrics

SEGMENTS = ("overall", "warm", "cold", "head", "tail")


def head_items(train_counts: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Bool [n_items]: the head items as defined in the module docstring."""
    counts = np.asarray(train_counts)
    order = np.argsort(-counts, kind="stable")
    n_head = math.ceil(head_share * int((counts > 0).sum()))
    head = np.zeros(len(counts), dtype=bool)
    head[order[:n_head]] = True
    return head


def segment_masks(
    targets: np.ndarray,
    train_counts: np.ndarray,
    cold_items: np.ndarray | None,
    head_share: float = 0.2,
) -> dict[str, np.ndarray]:
    """Bool masks over cases. cold = target in ``cold_items`` (none when it is None); warm = not cold."""
    t = np.asarray(targets, dtype=np.int64)
    cold = np.zeros(len(t), dtype=bool) if cold_items is None else np.asarray(cold_items, dtype=bool)[t]
    head = head_items(train_counts, head_share)[t]
    return {"overall": np.ones(len(t), dtype=bool), "warm": ~cold, "cold": cold, "head": head, "tail": ~head}


def evaluate_rankings(
    rankings: Rankings,
    targets: np.ndarray,
    train_counts: np.ndarray,
    cold_items: np.ndarray | None,
    ks: Sequence[int] = (5, 10, 20),
    item_vectors: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    head_share: float = 0.2,
) -> dict[str, Any]:
    """Metrics, bootstrap CIs and counts per segment, plus beyond-accuracy metrics over all lists.

    JSON-ready: empty segments get ``None`` for metrics and CIs (not NaN); CIs are [lo, hi] lists;
    ``n_boot=0`` skips CIs (all None). Beyond-accuracy metrics need ``max(ks) <= depth``.
    """
    n_items = len(train_counts)
    per_case = case_metrics(rankings.ranks, ks)
    masks = segment_masks(targets, train_counts, cold_items, head_share)
    out: dict[str, Any] = {"metrics": {}, "ci": {}, "counts": {}, "beyond": {}}
    for name, mask in masks.items():
        n = int(mask.sum())
        out["counts"][name] = n
        out["metrics"][name] = summarize(per_case, mask) if n else None
        if n and n_boot > 0:
            ci = bootstrap_ci(per_case, n_boot=n_boot, seed=seed, mask=mask)
            out["ci"][name] = {m: [lo, hi] for m, (lo, hi) in ci.items()}
        else:
            out["ci"][name] = None
    if len(rankings):
        for k in ks:
            out["beyond"][f"coverage@{k}"] = coverage_at_k(rankings.top_items, k, n_items)
            out["beyond"][f"gini@{k}"] = gini_exposure(rankings.top_items, k, n_items)
            if item_vectors is not None:
                out["beyond"][f"ild@{k}"] = intra_list_diversity(rankings.top_items, k, item_vectors)
    return out
