"""After training: the content term's weight and its profile's recency, fitted on validation.

A content item side scores u . r_i + sum_m a_m cos(profile_u,m, c_i,m) (model.item_side.ContentIdItems). The
scales a_m are learned by the full-softmax loss, where the popular items' many targets dominate. Ranked on
validation, a larger content weight was often better: on Amazon Beauty (leave-one-out, 3 seeds, runs capped at
18 minutes) validation NDCG@10 rose at 2-3x the learned scale (paired p 7e-7 to 0.04), with test NDCG@10
+2-3.5% and tail R@10 +9-18%. So after training, each Run tries a few multiples of its learned scales and keeps
the one with the best validation NDCG@10 if it beats the learned scales on validation by a paired test, as the
item side's `content_weight`: the saved model, its evaluation and serving all use it, at no cost per request.
Without the test, ML-100K moved 5 of 10 Runs for validation gains under 1% (paired p 0.3-0.5), and lost 0.9%
of test NDCG@10 doing so; with it, no ML-100K Run moves.

With model.cold_floor, the cold boost is fitted last (fit_cold_boost), on the content weight chosen here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import ttest_rel

from clip4rec.data.splits import EvalCases
from clip4rec.model.recommender import SequentialRecommender
from clip4rec.ranking import case_metrics, target_ranks

CONTENT_WEIGHTS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
# The knn term's profile weighs the history item t steps back by recency^t. Trained with the plain sum (1), a
# recency-weighted profile was much better on Amazon Beauty, where the next purchase follows the last few
# (cold split, seed 0, text: validation NDCG@10 0.0391 -> 0.0429 at 0.5, p 1e-10), and no better on ML-100K
# (docs/content_recipes.md, item 14). So the fit tries these too, jointly with the weights.
KNN_RECENCIES = (1.0, 0.9, 0.7, 0.5)
MAX_P = 0.05
# Names the selection rule in each Run's record; a Run fitted under another rule is fitted again
# (experiments.pipeline.fit_content_weight_of_finished).
RULE = ("best validation NDCG@10 over content weight x knn recency, kept if better than the trained setting by a "
        "one-sided paired t-test, p < 0.05")


def fit_content_weight(model: SequentialRecommender, cases: EvalCases, exclude_seen: bool,
                       batch_size: int = 1024, weights: tuple[float, ...] = CONTENT_WEIGHTS,
                       recencies: tuple[float, ...] = KNN_RECENCIES) -> dict[str, Any] | None:
    """Set the model's content weight (item_side.content_weight, a multiple of its learned knn scales) and the
    recency of its knn profile (item_side.knn_recency) to the pair with the best NDCG@10 on `cases` (validation),
    if that beats the trained setting (weight 1, recency 1: the plain sum) by a one-sided paired t-test over the
    cases at p < MAX_P; else to the trained setting. Sets, never multiplies, so
    fitting twice gives the same model. Returns what was tried and chosen, or None for a model without a
    content term."""
    side = model.item_side
    if getattr(side, "content_weight", None) is None or not len(cases.targets):
        return None
    model.eval()
    if side.cold_column:
        side.cold_boost.zero_()  # the content columns' product then holds the content term alone; refit after
    channel = side.channel_dims
    trained = 1.0  # every content variant is trained with the plain sum (docs/content_recipes.md, item 14)
    tried = tuple(dict.fromkeys((trained, *recencies)))
    ranks: dict[tuple[float, float], list[np.ndarray]] = {(r, w): [] for r in tried for w in weights}
    with torch.inference_mode():
        side.content_weight.fill_(1.0)
        table = model.item_table()
        for r in tried:
            side.knn_recency.fill_(r)
            for start in range(0, len(cases.targets), batch_size):
                histories = cases.histories[start:start + batch_size]
                targets = cases.targets[start:start + batch_size]
                users = model.user_vectors(histories, table)  # each weight rescales one term of these
                learned = model.with_repeat_term(users[:, :-channel] @ table[:, :-channel].T, histories)
                content = users[:, -channel:] @ table[:, -channel:].T
                for w in weights:
                    ranks[(r, w)].append(target_ranks(learned + w * content, targets,
                                                      histories if exclude_seen else None).cpu().numpy())
        per_case = {key: case_metrics(np.concatenate(parts), ks=(10,))["ndcg@10"] for key, parts in ranks.items()}
        ndcg = {key: float(values.mean()) for key, values in per_case.items()}
        base = (trained, 1.0)
        best = max(ranks, key=lambda key: (ndcg[key], key == base))
        p = 1.0
        if best != base:
            # Validation sets can be small (943 users on ML-100K), and a setting that wins by noise costs on test.
            p = float(ttest_rel(per_case[best], per_case[base], alternative="greater").pvalue)
        chosen = best if p < MAX_P else base
        side.knn_recency.fill_(chosen[0])
        side.content_weight.fill_(chosen[1])
    return {"rule": RULE, "weights": list(weights), "recencies": list(tried), "trained_recency": trained,
            "valid_ndcg@10": [ndcg[(trained, w)] for w in weights],
            "valid_ndcg@10_by_recency": {f"{r:g}": [ndcg[(r, w)] for w in weights] for r in tried},
            "best": best[1], "best_recency": best[0], "paired_p": p, "chosen": chosen[1],
            "chosen_recency": chosen[0], "knn_scale": [float(v) for v in side.knn_scale.detach().cpu()]}


# Boosts tried for the cold floor, smallest first: fine steps where the published Runs' choices fell (0.625-1.75 on
# ML-100K, 0 on Beauty; bench/cold_frontier.py), then coarser ones for a catalogue whose scores are larger.
COLD_BOOSTS = tuple(k / 8 for k in range(25)) + (4.0, 6.0, 8.0, 12.0, 16.0)


def cold_floor_cases(untrained: np.ndarray, cases: EvalCases) -> np.ndarray:
    """Bool per case: its target had no training interactions. Raises if the cases hold no such target or only
    such targets (a cold floor compares cold with warm recall), naming what to change."""
    cold_case = untrained[np.asarray(cases.targets, dtype=np.int64)]
    if not cold_case.any() or cold_case.all():
        raise ValueError(f"model.cold_floor is fitted on validation cases with cold and warm targets; this split's "
                         f"validation has {int(cold_case.sum())} of {len(cold_case)} targets without training "
                         "interactions (use split.kind cold, or unset model.cold_floor)")
    return cold_case


def fit_cold_boost(model: SequentialRecommender, cases: EvalCases, floor: float, exclude_seen: bool,
                   batch_size: int = 1024, boosts: tuple[float, ...] = COLD_BOOSTS) -> dict[str, Any]:
    """Set the model's cold boost (item_side.cold_boost, added to the score of every item without training
    interactions) to the smallest of `boosts` whose R@10 on the validation `cases` with such a target is at least
    `floor` x R@10 on the others; to the largest if none is (recorded as not reached: the model is kept either
    way). Sets, never adds, so fitting twice gives the same model. Returns what was tried and chosen."""
    side = model.item_side
    cold_case = cold_floor_cases(side.untrained.cpu().numpy(), cases)
    model.eval()
    side.cold_boost.zero_()
    hits: dict[float, list[np.ndarray]] = {b: [] for b in boosts}
    with torch.inference_mode():
        table = model.item_table()
        flag = side.untrained.to(table.dtype)
        for start in range(0, len(cases.targets), batch_size):
            histories = cases.histories[start:start + batch_size]
            targets = cases.targets[start:start + batch_size]
            scores = model.score(histories, table)  # at boost 0; a boost b adds b to each cold item's score
            for b in boosts:
                ranks = target_ranks(scores + b * flag, targets, histories if exclude_seen else None)
                hits[b].append((ranks <= 10).cpu().numpy())
    cold = {b: float(np.concatenate(h)[cold_case].mean()) for b, h in hits.items()}
    warm = {b: float(np.concatenate(h)[~cold_case].mean()) for b, h in hits.items()}
    met = [b for b in boosts if cold[b] >= floor * warm[b]]
    chosen = min(met) if met else max(boosts)
    side.cold_boost.fill_(chosen)
    return {"floor": floor, "boosts": list(boosts), "valid_cold_recall@10": [cold[b] for b in boosts],
            "valid_warm_recall@10": [warm[b] for b in boosts], "valid_cold_cases": int(cold_case.sum()),
            "chosen": chosen, "reached": bool(met)}
