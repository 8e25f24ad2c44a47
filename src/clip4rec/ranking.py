"""The ranking kernel shared by training (validation), evaluation and bench: full ranking of every item for
each evaluation case (no sampled negatives), and the per-case metrics of a target's rank.

It sits below the stages (it imports none of them), so that train's validation and evaluate's test read
ranks and NDCG the same way without train importing evaluate.

One evaluation case = (history, target). The ranker calls a model's ``score_fn`` on batches of
histories, ranks *all* ``n_items`` items and records, per case, the full rank of the target plus the
top-``depth`` list (for beyond-accuracy metrics and TREC run files).

Order is total and deterministic: score descending, ties broken by the lower item index first. That is
the one tie rule of the project; :func:`top_k` is the one exact top-k that applies it (``rank_cases`` uses it
for evaluation and training's validation alike).

``exclude_seen``: items in the history get score ``-inf`` and are dropped from the ranking -- except
the target itself. Users do re-consume items; excluding a re-consumed target would make it unrankable
and silently turn every such case into a miss, so the target always stays in the candidate set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

PerCase = dict[str, np.ndarray]
ScoreFn = Callable[[list[np.ndarray]], torch.Tensor | np.ndarray]


@dataclass
class Rankings:
    """Result of :func:`rank_cases` for ``n`` cases.

    ranks: int64 [n], 1-based full rank of the target among the non-excluded items.
    top_items: int64 [n, depth], best first; padded with -1 when fewer than ``depth`` items are rankable.
    top_scores: float32 [n, depth], aligned with ``top_items``; -inf on padding.
    """

    ranks: np.ndarray
    top_items: np.ndarray
    top_scores: np.ndarray

    def __len__(self) -> int:
        return len(self.ranks)


def rank_cases(
    score_fn: ScoreFn,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    n_items: int,
    exclude_seen: bool,
    depth: int,
    batch_size: int = 256,
    progress: bool = False,
) -> Rankings:
    """Rank all items for every case; see the module docstring for the ordering and exclusion rules."""
    targets = np.asarray(targets, dtype=np.int64)
    n = len(targets)
    if len(histories) != n:
        raise ValueError(f"{len(histories)} histories but {n} targets")
    if n and (targets.min() < 0 or targets.max() >= n_items):
        raise ValueError("target item index out of range [0, n_items)")
    if depth < 1 or batch_size < 1:
        raise ValueError("depth and batch_size must be >= 1")
    depth = min(depth, n_items)

    ranks = np.empty(n, dtype=np.int64)
    top_items = np.empty((n, depth), dtype=np.int64)
    top_scores = np.empty((n, depth), dtype=np.float32)
    item_index: torch.Tensor | None = None
    bar = tqdm(total=n, unit="case", desc="ranking", disable=not progress)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch_hist = [np.asarray(h, dtype=np.int64) for h in histories[start:stop]]
        with torch.no_grad():
            scores = torch.as_tensor(score_fn(batch_hist)).detach()
        # Rank where the scores are (a GPU model ranks on the GPU); only ranks and top lists come back.
        device = scores.device
        t = torch.from_numpy(targets[start:stop]).to(device)
        if item_index is None or item_index.device != device:
            item_index = torch.arange(n_items, device=device)
        if scores.dtype not in (torch.float32, torch.float64):
            scores = scores.float()  # ints, half, bfloat16: exact in float32, and CPU kernels exist for it
        if scores.shape != (stop - start, n_items):
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected {(stop - start, n_items)}")
        if torch.isnan(scores).any():
            raise ValueError("score_fn returned NaN scores")  # NaN has no place in a total order

        excluded = None
        if exclude_seen:
            excluded = _exclusion_mask(batch_hist, t.cpu(), n_items).to(device)
            # Copy: score_fn may hand back a view of its own cache, which we must not overwrite.
            scores = scores.masked_fill(excluded, float("-inf"))

        ranks[start:stop] = _target_ranks(scores, t, item_index, excluded).cpu().numpy()
        items, vals = top_k(scores, depth, excluded)
        top_items[start:stop] = items.cpu().numpy()
        top_scores[start:stop] = vals.to(torch.float32).cpu().numpy()
        bar.update(stop - start)
    bar.close()
    return Rankings(ranks=ranks, top_items=top_items, top_scores=top_scores)


def target_ranks(scores: torch.Tensor, targets: np.ndarray,
                 histories: Sequence[np.ndarray] | None = None) -> torch.Tensor:
    """1-based rank of each row's target among all columns of a score matrix, by the order `rank_cases` uses;
    with `histories`, each row's history items (never its target) are excluded. For callers that rank one
    score matrix several ways (e.g. under several score offsets) without a top list."""
    t = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(scores.device)
    excluded = None
    if histories is not None:
        excluded = _exclusion_mask([np.asarray(h, dtype=np.int64) for h in histories], t.cpu(),
                                   scores.shape[1]).to(scores.device)
        scores = scores.masked_fill(excluded, float("-inf"))
    return _target_ranks(scores, t, torch.arange(scores.shape[1], device=scores.device), excluded)


def _exclusion_mask(histories: list[np.ndarray], targets: torch.Tensor, n_items: int) -> torch.Tensor:
    """Bool [b, n_items]: history items of each row, never the row's target."""
    mask = torch.zeros((len(histories), n_items), dtype=torch.bool)
    lengths = [len(h) for h in histories]
    if sum(lengths) == 0:
        return mask
    cols = torch.from_numpy(np.concatenate(histories))
    if cols.min() < 0 or cols.max() >= n_items:
        raise ValueError("history item index out of range [0, n_items)")
    rows = torch.repeat_interleave(torch.arange(len(histories)), torch.tensor(lengths))
    mask[rows, cols] = True
    mask[torch.arange(len(histories)), targets] = False
    return mask


def _target_ranks(
    scores: torch.Tensor, targets: torch.Tensor, item_index: torch.Tensor, excluded: torch.Tensor | None
) -> torch.Tensor:
    """1 + #(score > s_t) + #(score == s_t and index < t), counted over non-excluded items."""
    s_t = scores.gather(1, targets[:, None])
    ties_before = (scores == s_t) & (item_index[None, :] < targets[:, None])
    if excluded is not None:
        # Excluded items sit at -inf; they only tie with a target the model itself scored -inf.
        ties_before &= ~excluded
    # count_nonzero, not bool.sum(): the latter widens to int64 first and is several times slower.
    return 1 + torch.count_nonzero(scores > s_t, dim=1) + torch.count_nonzero(ties_before, dim=1)


def top_k(
    scores: torch.Tensor, depth: int, excluded: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``depth`` (items, scores) of each row of ``scores`` [b, n_items], in the total order (score
    descending, lower item index first among ties).

    ``excluded`` (bool [b, n_items], optional) marks items that must not be returned; their scores must already
    be ``-inf``. Rows with fewer than ``depth`` rankable items are padded with item -1 and score ``-inf``; an item
    the model itself scored ``-inf`` is still rankable (it is listed after every finite score).
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [rows, n_items], got shape {tuple(scores.shape)}")
    n_items = scores.shape[1]
    if not 1 <= depth <= n_items:
        raise ValueError(f"depth must be in [1, {n_items}], got {depth}")
    _, idx = torch.topk(scores, depth, dim=1, sorted=False)
    # topk's choice among scores tied at the cutoff is arbitrary, and a -inf cutoff may pull in
    # excluded items. Rows where that can happen are selected again on an integer key: above the
    # cutoff beats tied-at-cutoff, and among the tied the lower index wins (no full sort, so
    # tie-heavy scorers such as popularity stay cheap).
    kth = scores.gather(1, idx).min(1, keepdim=True).values
    ambiguous = torch.count_nonzero(scores >= kth, dim=1) > depth
    redo = (ambiguous | torch.isneginf(kth.squeeze(1))).nonzero().squeeze(1)
    if len(redo):
        s, k = scores[redo], kth[redo]
        tied = s == k
        if excluded is not None:
            tied &= ~excluded[redo]
        key = torch.where(tied, n_items - torch.arange(n_items, dtype=torch.int32, device=s.device), 0)
        key.masked_fill_(s > k, n_items + 1)
        sel_key, sel = torch.topk(key, depth, dim=1)
        idx[redo] = sel.masked_fill(sel_key == 0, n_items)  # key 0: excluded, i.e. padding

    # Order the selected set: index ascending, then a stable sort on score descending. Padding
    # (index n_items, score -inf) starts last and stays last among the -inf scores.
    idx = idx.sort(dim=1).values
    is_pad = idx == n_items
    vals = scores.gather(1, idx.clamp(max=n_items - 1)).masked_fill(is_pad, float("-inf"))
    vals, perm = vals.sort(dim=1, descending=True, stable=True)
    return idx.gather(1, perm).masked_fill(is_pad.gather(1, perm), -1), vals


def case_metrics(ranks: np.ndarray, ks: Sequence[int] = (5, 10, 20)) -> PerCase:
    """Per-case recall@k, ndcg@k, hr@k for each k, and mrr (1/rank over the full ranking, no cutoff), from the
    1-based rank of each case's single target.

    This is the project's one definition of these metrics: evaluation, training's validation, the TREC-file
    reader and the paired tests all call it. A rank of ``np.inf`` is a target absent from a truncated ranking
    (a TREC run file): every metric is 0 there, reciprocal rank included, as trec_eval counts it.
    """
    rf = np.asarray(ranks, dtype=np.float64)
    if rf.size and (rf.min() < 1 or np.any(np.isnan(rf)) or np.any((rf != np.floor(rf)) & np.isfinite(rf))):
        raise ValueError("ranks are 1-based integers (np.inf for an unranked target); got a rank < 1 or a fraction")
    out: PerCase = {}
    for k in ks:
        # With one target, recall@k and hr@k are both the hit indicator; papers use both names.
        hit = (rf <= k).astype(np.float64)
        out[f"recall@{k}"] = hit
        out[f"ndcg@{k}"] = np.where(rf <= k, 1.0 / np.log2(rf + 1.0), 0.0)
        out[f"hr@{k}"] = hit.copy()
    out["mrr"] = 1.0 / rf
    return out
