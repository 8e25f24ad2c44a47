import numpy as np
import pytest
import torch

from clip4rec.evaluate.metrics import summarize
from clip4rec.ranking import case_metrics, rank_cases
from clip4rec.evaluate.trec import metrics_from_trec, read_qrels, read_run, target_ranks, write_qrels, write_run

KS = (5, 10, 20)


def _random_rankings(n_users: int, n_items: int, depth: int, exclude_seen: bool, seed: int):
    """Rankings of tie-free random scores (so any tool's sort agrees with ours), and their targets."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    targets = rng.integers(0, n_items, size=n_users)
    hists = [rng.integers(0, n_items, size=5) for _ in range(n_users)]
    batches = iter(np.split(scores, range(16, n_users, 16)))  # rank_cases calls score_fn in case order
    score_fn = lambda hs: torch.as_tensor(next(batches))  # noqa: E731
    rk = rank_cases(score_fn, hists, targets, n_items, exclude_seen=exclude_seen, depth=depth, batch_size=16)
    assert all(len(set(row)) == len(row) for row in scores.tolist()), "ties: another tool may order them otherwise"
    return rk, targets


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_trec_round_trip_matches_vectorised_metrics(tmp_path, exclude_seen):
    n_users, n_items = 50, 40
    rk, targets = _random_rankings(n_users, n_items, n_items, exclude_seen, seed=7)

    user_ids = [f"u{u:03d}" for u in range(n_users)]
    item_ids = [f"item-{i}" for i in range(n_items)]
    run, qrels = tmp_path / "run.trec", tmp_path / "qrels.trec"
    write_run(run, user_ids, rk, item_ids, tag="test")
    write_qrels(qrels, user_ids, targets, item_ids)

    expected = summarize(case_metrics(rk.ranks, KS))
    got = metrics_from_trec(run, qrels, KS)
    assert set(got) == set(expected)
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-6), name
    assert 0 < expected["recall@5"] < expected["recall@20"] < 1  # non-trivial data


def test_trec_hand_example_and_format(tmp_path):
    run, qrels = tmp_path / "run", tmp_path / "qrels"
    run.write_text("a Q0 x 1 0.9 t\na Q0 y 2 0.5 t\na Q0 z 3 0.1 t\nb Q0 x 1 0.9 t\nb Q0 y 2 0.5 t\n")
    # a: hit at 3; b: target absent from the run; c: no run at all (counts as 0).
    qrels.write_text("a 0 z 1\nb 0 w 1\nc 0 x 1\n")
    m = metrics_from_trec(run, qrels, ks=(2, 3))
    assert m["recall@2"] == 0.0
    assert m["recall@3"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx(0.5 / 3)
    assert m["mrr"] == pytest.approx(1 / 9)
    assert read_run(run)["a"][2] == ("z", 3, pytest.approx(0.1))
    assert read_qrels(qrels) == {"a": {"z": 1}, "b": {"w": 1}, "c": {"x": 1}}


def test_write_run_lines_and_padding(tmp_path):
    scores = np.array([[0.1, 0.7, 0.3]], dtype=np.float32)
    rk = rank_cases(lambda hs: scores, [np.array([1, 2])], np.array([0]), 3, exclude_seen=True, depth=3)
    path = tmp_path / "run"
    write_run(path, ["u1"], rk, ["a", "b", "c"], tag="m")
    assert path.read_text() == "u1 Q0 a 1 0.100000001 m\n"  # excluded items (padding) not written
    with pytest.raises(ValueError):
        write_run(path, ["u 1"], rk, ["a", "b", "c"], tag="m")
    with pytest.raises(ValueError):
        write_qrels(path, ["u1", "u1"], np.array([0, 1]), ["a", "b", "c"])


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_trec_metrics_equal_trec_eval(tmp_path, exclude_seen):
    """The independent check: trec_eval's own code (pytrec_eval) reads the same run and qrels files and must find
    our NDCG@k, recall@k, HR@k and MRR. Depth 15 of 60 items, so some targets are absent from the run (a miss
    for every metric in both), and one user has no run line at all (0, as with `trec_eval -c`)."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    n_users, n_items = 80, 60
    rk, targets = _random_rankings(n_users, n_items, 15, exclude_seen, seed=11)
    user_ids = [f"u{u:03d}" for u in range(n_users)]
    item_ids = [f"item-{i}" for i in range(n_items)]
    run, qrels = tmp_path / "run.trec", tmp_path / "qrels.trec"
    write_run(run, user_ids, rk, item_ids, tag="test")
    write_qrels(qrels, user_ids + ["nobody"], np.append(targets, 0), item_ids)

    ours = metrics_from_trec(run, qrels, KS)
    with open(qrels) as f:
        judged = pytrec_eval.parse_qrel(f)
    with open(run) as f:
        ranked = pytrec_eval.parse_run(f)
    names = {f"ndcg_cut_{k}": f"ndcg@{k}" for k in KS} | {f"recall_{k}": f"recall@{k}" for k in KS} \
        | {f"success_{k}": f"hr@{k}" for k in KS} | {"recip_rank": "mrr"}
    measures = {"ndcg_cut." + ",".join(map(str, KS)), "recall." + ",".join(map(str, KS)),
                "success." + ",".join(map(str, KS)), "recip_rank"}
    per_query = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(ranked)
    assert "nobody" not in per_query and len(judged) == n_users + 1
    for theirs, name in names.items():
        mean = sum(q[theirs] for q in per_query.values()) / len(judged)  # queries absent from the run count 0
        assert ours[name] == pytest.approx(mean, abs=1e-12), name
    assert 0 < ours["recall@5"] < ours["recall@10"] < ours["recall@20"] < 1  # hits, misses and absent targets


def test_target_ranks_and_one_target_per_query(tmp_path):
    run, qrels = tmp_path / "run", tmp_path / "qrels"
    run.write_text("a Q0 x 1 0.9 t\na Q0 y 2 0.5 t\nb Q0 x 1 0.9 t\n")
    qrels.write_text("a 0 y 1\nb 0 w 1\nc 0 x 0\n")  # c: nothing relevant, not a query
    users, ranks = target_ranks(run, qrels)
    assert users == ["a", "b"] and ranks.tolist() == [2.0, float("inf")]
    qrels.write_text("a 0 y 1\na 0 x 1\n")
    with pytest.raises(ValueError, match="one target per query"):
        metrics_from_trec(run, qrels)
