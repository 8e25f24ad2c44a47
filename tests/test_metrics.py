import json
import math

import numpy as np
import pytest
import torch

from clip4rec.evaluate.metrics import (
    bootstrap_ci,
    coverage_at_k,
    gini_exposure,
    intra_list_diversity,
    summarize,
)
from clip4rec.evaluate.report import metrics_table
from clip4rec.evaluate.segments import evaluate_rankings, head_items, segment_masks
from clip4rec.ranking import Rankings, case_metrics, rank_cases, target_ranks, top_k


def fixed_scores(matrix):
    """score_fn that hands out the rows of a fixed score matrix, batch after batch, in case order."""
    m, pos = np.asarray(matrix), [0]

    def score_fn(hists):
        rows = m[pos[0] : pos[0] + len(hists)]
        pos[0] += len(hists)
        return torch.as_tensor(rows)

    return score_fn


def brute_force(scores, histories, targets, exclude_seen):
    """Reference: sort non-excluded items by (score desc, index asc) in plain Python."""
    ranks, orders = [], []
    for s, h, t in zip(scores, histories, targets):
        banned = {int(i) for i in h if i != t} if exclude_seen else set()
        order = sorted((i for i in range(len(s)) if i not in banned), key=lambda i: (-s[i], i))
        ranks.append(order.index(t) + 1)
        orders.append(order)
    return np.array(ranks), orders


# ---------- metrics on hand-computed ranks ----------


def test_case_metrics_hand_computed():
    per = case_metrics(np.array([1, 3, 11, 25]), ks=(5, 10, 20))
    s = summarize(per)
    assert s["recall@10"] == pytest.approx(2 / 4)
    assert s["hr@10"] == s["recall@10"]
    assert s["recall@20"] == pytest.approx(3 / 4)
    assert s["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert s["ndcg@20"] == pytest.approx((1 + 0.5 + 1 / math.log2(12)) / 4)
    assert s["mrr"] == pytest.approx(np.mean([1, 1 / 3, 1 / 11, 1 / 25]))
    assert set(per) == {f"{m}@{k}" for m in ("recall", "ndcg", "hr") for k in (5, 10, 20)} | {"mrr"}
    assert summarize(per, mask=np.array([True, False, False, True]))["recall@5"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        summarize(per, mask=np.zeros(4, bool))
    with pytest.raises(ValueError):
        case_metrics(np.array([0, 1]))
    with pytest.raises(ValueError):
        case_metrics(np.array([1.5]))


def test_case_metrics_of_an_unranked_target_are_zero():
    # np.inf: the target is absent from a truncated list (a TREC run file); reciprocal rank 0 as in trec_eval
    per = case_metrics(np.array([2, np.inf]), ks=(1, 5))
    assert per["ndcg@5"].tolist() == [1 / math.log2(3), 0.0] and per["recall@1"].tolist() == [0.0, 0.0]
    assert per["mrr"].tolist() == [0.5, 0.0] and per["hr@5"].tolist() == [1.0, 0.0]
    assert {k: v[:1].tolist() for k, v in per.items()} == {k: v.tolist() for k, v in case_metrics([2], (1, 5)).items()}


# ---------- ranking ----------


def test_ties_broken_by_lower_index():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1]], dtype=np.float32)
    r = rank_cases(fixed_scores(scores), [np.array([0])], np.array([2]), 5, exclude_seen=False, depth=5)
    assert r.top_items.tolist() == [[1, 3, 0, 2, 4]]
    assert r.ranks.tolist() == [4]  # 1 + two higher + item 0 tied at lower index
    assert r.top_scores.dtype == np.float32 and r.top_items.dtype == np.int64


def test_top_k_is_exact_with_one_tie_rule_and_pads():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1], [0.3, 0.3, 0.3, 0.3, 0.3]])
    items, vals = top_k(scores, 3)
    assert items.tolist() == [[1, 3, 0], [0, 1, 2]]  # score descending, the lower index first among ties
    assert vals.tolist() == scores.gather(1, items).tolist()
    excluded = torch.zeros(2, 5, dtype=torch.bool)
    excluded[1, :3] = True
    items, vals = top_k(scores.masked_fill(excluded, float("-inf")), 3, excluded)
    assert items[1].tolist() == [3, 4, -1] and torch.isneginf(vals[1, 2])  # only two rankable items
    with pytest.raises(ValueError):
        top_k(scores[0], 3)  # one row is [1, n_items], not [n_items]
    with pytest.raises(ValueError):
        top_k(scores, 6)


def test_exclude_seen_drops_history_but_not_target():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]], dtype=np.float32)
    scores = np.repeat(scores, 2, axis=0)
    # Case 0: history [0, 1, 3], target 2. Case 1: history [1, 0, 2] re-consumes target 0.
    hists = [np.array([0, 1, 3]), np.array([1, 0, 2])]
    score_fn = lambda hs: torch.as_tensor(scores[: len(hs)])  # noqa: E731
    r = rank_cases(score_fn, hists, np.array([2, 0]), 5, exclude_seen=True, depth=3)
    assert r.ranks.tolist() == [1, 1]
    assert r.top_items.tolist() == [[2, 4, -1], [0, 3, 4]]  # -1 pads when fewer items are rankable
    assert np.isneginf(r.top_scores[0, 2])
    r = rank_cases(score_fn, hists, np.array([2, 0]), 5, exclude_seen=False, depth=3)
    assert r.ranks.tolist() == [3, 1]
    assert r.top_items.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_score_fn_output_not_mutated():
    cache = np.arange(10, dtype=np.float32)[None].repeat(3, 0)
    before = cache.copy()
    rank_cases(lambda hs: cache[: len(hs)], [np.array([0, 9])] * 3, np.array([1, 2, 3]), 10, True, 4)
    np.testing.assert_array_equal(cache, before)


@pytest.mark.parametrize("exclude_seen", [False, True])
@pytest.mark.parametrize("depth", [1, 7, 30])
def test_ranks_and_top_lists_match_brute_force(exclude_seen, depth):
    rng = np.random.default_rng(depth)
    n_cases, n_items = 40, 30
    # Integer scores in a small range: many ties, including ties straddling the top-k cutoff.
    scores = rng.integers(0, 6, size=(n_cases, n_items)).astype(np.float32)
    scores[:5] = rng.normal(size=(5, n_items))  # and some tie-free rows (the topk fast path)
    scores[5, :] = float("-inf")  # a model may itself score items -inf
    scores[5, :4] = 1.0
    targets = rng.integers(0, n_items, size=n_cases)
    hists = [rng.integers(0, n_items, size=rng.integers(0, 25)) for _ in range(n_cases)]
    hists[6] = np.arange(n_items)  # history covers the whole catalogue
    hists[7] = np.array([targets[7], targets[7]])  # re-consumed target

    r = rank_cases(fixed_scores(scores), hists, targets, n_items, exclude_seen, depth, batch_size=8)
    ref_ranks, ref_orders = brute_force(scores, hists, targets, exclude_seen)
    np.testing.assert_array_equal(r.ranks, ref_ranks)
    for i, order in enumerate(ref_orders):
        expected = (order + [-1] * depth)[:depth]
        assert r.top_items[i].tolist() == expected, i
        valid = r.top_items[i] >= 0
        np.testing.assert_array_equal(r.top_scores[i][valid], scores[i, r.top_items[i][valid]])


def test_rank_cases_input_checks():
    fn = fixed_scores(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError):
        rank_cases(fn, [np.array([0]), np.array([1])], np.array([0, 5]), 5, False, 3)
    with pytest.raises(ValueError):
        rank_cases(fn, [np.array([0])], np.array([0, 1]), 5, False, 3)
    with pytest.raises(ValueError, match="shape"):
        rank_cases(fn, [np.array([0])], np.array([0]), 6, False, 3)
    nan_fn = lambda hs: torch.full((len(hs), 5), float("nan"))  # noqa: E731
    with pytest.raises(ValueError, match="NaN"):
        rank_cases(nan_fn, [np.array([0])], np.array([0]), 5, False, 3)


# ---------- bootstrap ----------


def test_bootstrap_deterministic_contains_mean_and_shrinks():
    rng = np.random.default_rng(1)
    small = case_metrics(rng.integers(1, 50, size=200), ks=(10,))
    big = case_metrics(rng.integers(1, 50, size=5000), ks=(10,))
    a, b = bootstrap_ci(small, n_boot=300, seed=3), bootstrap_ci(small, n_boot=300, seed=3)
    assert a == b
    assert bootstrap_ci(small, n_boot=300, seed=4) != a
    means = summarize(small)
    for name, (lo, hi) in a.items():
        assert lo <= means[name] <= hi
        assert lo < hi
    wide, narrow = a["ndcg@10"], bootstrap_ci(big, n_boot=300, seed=3)["ndcg@10"]
    assert narrow[1] - narrow[0] < 0.5 * (wide[1] - wide[0])
    # Constant metric: degenerate interval at the value.
    assert bootstrap_ci({"x": np.ones(10)}, n_boot=50)["x"] == (1.0, 1.0)


def test_bootstrap_width_matches_normal_approximation():
    # 400 cases, half hits: the mean's standard error is 0.025, so a 95% CI spans about 2 * 1.96 * 0.025.
    per = {"hit": np.tile([0.0, 1.0], 200)}
    lo, hi = bootstrap_ci(per, n_boot=2000, seed=0)["hit"]
    assert hi - lo == pytest.approx(2 * 1.96 * 0.025, rel=0.15)
    lo50, hi50 = bootstrap_ci(per, n_boot=2000, seed=0, alpha=0.5)["hit"]
    assert hi50 - lo50 == pytest.approx(2 * 0.674 * 0.025, rel=0.15)


def test_bootstrap_mask_uses_only_selected_cases():
    per = {"x": np.array([0.0, 0.0, 1.0, 1.0])}
    assert bootstrap_ci(per, n_boot=20, mask=np.array([False, False, True, True]))["x"] == (1.0, 1.0)


# ---------- beyond accuracy ----------


def test_coverage_and_gini():
    top = np.array([[0, 1, 2], [1, 0, 3], [1, 2, -1]])
    assert coverage_at_k(top, 2, n_items=5) == pytest.approx(3 / 5)  # items {0, 1, 2}
    assert coverage_at_k(top, 3, n_items=5) == pytest.approx(4 / 5)  # padding -1 ignored
    uniform = np.array([[0, 1], [2, 3], [1, 0], [3, 2]])
    assert gini_exposure(uniform, 2, n_items=4) == pytest.approx(0.0)
    assert gini_exposure(np.array([[2], [2], [2]]), 1, n_items=4) == pytest.approx(3 / 4)
    # exposures [0, 0, 1, 3] over 4 items: mean abs difference / (2 * mean)
    x = np.array([0, 0, 1, 3])
    expected = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
    assert gini_exposure(np.array([[3], [3], [3], [2]]), 1, n_items=4) == pytest.approx(expected)
    with pytest.raises(ValueError):
        coverage_at_k(top, 4, n_items=5)


def test_intra_list_diversity():
    vecs = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [-1.0, 0.0]])
    assert intra_list_diversity(np.array([[0, 2]]), 2, vecs) == pytest.approx(0.0)  # same direction
    assert intra_list_diversity(np.array([[0, 1]]), 2, vecs) == pytest.approx(1.0)  # orthogonal
    assert intra_list_diversity(np.array([[0, 3]]), 2, vecs) == pytest.approx(2.0)  # opposite
    # List [0, 1, 2]: distances 1, 0, 1 -> 2/3; list [0, 3, -1]: only one pair -> 2. Mean = 4/3.
    top = np.array([[0, 1, 2], [0, 3, -1]])
    assert intra_list_diversity(top, 3, vecs) == pytest.approx((2 / 3 + 2) / 2)
    assert intra_list_diversity(top, 3, torch.tensor(vecs)) == pytest.approx((2 / 3 + 2) / 2)


# ---------- segments ----------


def test_head_tail_definition():
    # 10 items; 6 have count > 0 -> head size ceil(0.2 * 6) = 2. Counts 5 tie: lower index (1) wins.
    counts = np.array([0, 5, 3, 5, 9, 0, 1, 1, 0, 0])
    assert np.flatnonzero(head_items(counts)).tolist() == [1, 4]
    assert np.flatnonzero(head_items(counts, head_share=0.5)).tolist() == [1, 3, 4]
    targets = np.array([4, 3, 1, 0, 2])
    cold = np.zeros(10, bool)
    cold[[0, 2]] = True
    m = segment_masks(targets, counts, cold)
    assert m["head"].tolist() == [True, False, True, False, False]
    assert m["tail"].tolist() == [False, True, False, True, True]
    assert m["cold"].tolist() == [False, False, False, True, True]
    assert m["warm"].tolist() == [True, True, True, False, False]
    assert m["overall"].all()
    m = segment_masks(targets, counts, None)
    assert m["warm"].all() and not m["cold"].any()


def test_head_items_matches_python_reference_with_many_ties():
    counts = np.random.default_rng(0).integers(0, 4, size=1000)
    order = sorted((i for i in range(1000) if counts[i] > 0), key=lambda i: (-counts[i], i))
    expected = sorted(order[: math.ceil(0.2 * len(order))])
    assert np.flatnonzero(head_items(counts)).tolist() == expected


def test_evaluate_rankings_structure_and_values():
    ranks = np.array([1, 3, 11, 25])
    top = np.array([[0, 1, 2, 3, 4]] * 2 + [[5, 6, 7, 8, 9]] * 2)
    rk = Rankings(ranks=ranks, top_items=top, top_scores=np.zeros(top.shape, np.float32))
    counts = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 1])  # head = items 0, 1
    targets = np.array([0, 1, 5, 9])
    res = evaluate_rankings(rk, targets, counts, None, ks=(5,), item_vectors=np.eye(10), n_boot=50)
    assert res["counts"] == {"overall": 4, "warm": 4, "cold": 0, "head": 2, "tail": 2}
    assert res["metrics"]["cold"] is None and res["ci"]["cold"] is None
    assert res["metrics"]["head"]["recall@5"] == pytest.approx(1.0)
    assert res["metrics"]["tail"]["mrr"] == pytest.approx((1 / 11 + 1 / 25) / 2)
    assert res["metrics"]["overall"]["ndcg@5"] == pytest.approx((1 + 0.5) / 4)
    assert res["beyond"] == pytest.approx({"coverage@5": 1.0, "gini@5": 0.0, "ild@5": 1.0})
    lo, hi = res["ci"]["overall"]["mrr"]
    assert lo <= res["metrics"]["overall"]["mrr"] <= hi
    json.loads(json.dumps(res, allow_nan=False))  # JSON-clean: no NaN, no numpy types
    table = metrics_table(res, metrics=["recall@5", "mrr"])
    assert table.splitlines()[0] == "| segment | n | recall@5 | mrr |"
    assert "| cold | 0 | - | - |" in table
    assert metrics_table(res, fmt="text", with_ci=False).splitlines()[1].startswith("overall  4")


def test_low_precision_and_numpy_scores():
    scores = np.array([[1, 3, 3, 0]], dtype=np.int64)
    r = rank_cases(lambda hs: scores, [np.array([], dtype=np.int64)], np.array([2]), 4, True, 2)
    assert r.ranks.tolist() == [2] and r.top_items.tolist() == [[1, 2]]
    half = lambda hs: torch.tensor([[0.5, 0.25, 0.75, 0.75]], dtype=torch.bfloat16)  # noqa: E731
    r = rank_cases(half, [np.array([0])], np.array([3]), 4, True, 4, progress=True)
    assert r.ranks.tolist() == [2] and r.top_items.tolist() == [[2, 3, 1, -1]]


def test_target_ranks_equal_rank_cases_with_ties_and_seen_items_excluded():
    # small integer scores: many exact ties, so the tie rule (lower index first) decides most ranks
    gen = np.random.default_rng(3)
    scores = torch.from_numpy(gen.integers(0, 4, size=(30, 12)).astype(np.float32))
    targets = gen.integers(0, 12, size=30)
    histories = [gen.choice(12, size=gen.integers(0, 5), replace=False) for _ in range(30)]
    for exclude in (True, False):
        kernel = rank_cases(lambda hs: scores, histories, targets, 12, exclude_seen=exclude, depth=3, batch_size=30)
        ranks = target_ranks(scores, targets, histories if exclude else None)
        assert ranks.tolist() == kernel.ranks.tolist()
    # a target in its own history stays rankable, as in rank_cases
    assert target_ranks(torch.tensor([[1.0, 5.0, 3.0]]), np.array([1]), [np.array([1, 2])]).tolist() == [1]
