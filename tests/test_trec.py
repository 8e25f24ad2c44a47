import numpy as np
import pytest
import torch

from clip4rec.evaluate.metrics import summarize
from clip4rec.ranking import case_metrics, rank_cases
from clip4rec.evaluate.trec import metrics_from_trec, read_qrels, read_run, write_qrels, write_run

KS = (5, 10, 20)


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_trec_round_trip_matches_vectorised_metrics(tmp_path, exclude_seen):
    rng = np.random.default_rng(7)
    n_users, n_items = 50, 40
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    targets = rng.integers(0, n_items, size=n_users)
    hists = [rng.integers(0, n_items, size=5) for _ in range(n_users)]
    batches = iter(np.split(scores, range(16, n_users, 16)))  # rank_cases calls score_fn in case order
    score_fn = lambda hs: torch.as_tensor(next(batches))  # noqa: E731
    rk = rank_cases(score_fn, hists, targets, n_items, exclude_seen=exclude_seen, depth=n_items, batch_size=16)

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
