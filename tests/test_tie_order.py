"""One exact top-k, one tie rule: items with exactly equal scores come out of evaluation (the ranking kernel,
its TREC run file) and out of the service (/recommend, the exact index) in the same order, the lower item
index first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

from clip4rec.api import Run, train  # noqa: E402
from clip4rec.ranking import rank_cases  # noqa: E402
from clip4rec.serve.index import ExactIndex  # noqa: E402
from clip4rec.serve.state import ServiceState  # noqa: E402
from tests.support.toy import build_toy, toy_config  # noqa: E402

N = 40


def test_two_tied_items_come_out_of_the_kernel_and_the_exact_index_in_one_order():
    # rows 1 and 2 are the same vector, so their scores are exactly equal (small integers: no rounding at all)
    table = torch.tensor([[1.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    user = torch.tensor([1.0, 0.0])
    ranked = rank_cases(lambda hs: (user @ table.T)[None].repeat(len(hs), 1), [np.array([3])], np.array([0]),
                        len(table), exclude_seen=True, depth=4)
    items, scores = ExactIndex(table).search(user, 4, exclude=[3])
    assert ranked.top_items[0].tolist() == items.tolist() == [1, 2, 4, 0]
    assert scores.tolist() == [2.0, 2.0, 2.0, 1.0]


def test_evaluation_and_serving_list_tied_items_in_the_same_order(tmp_path):
    """Popularity scores are training counts: many items share one, exactly. For every test case, /recommend's
    exact top-k (same history, same exclusion) is the list the evaluation wrote to test.run.trec."""
    root = build_toy(tmp_path / "toy", n_items=N, n_users=60, images=False)
    cfg = toy_config("pop", root / "store")
    cfg.eval.run_depth = N
    train(root / "ds", tmp_path / "pop", cfg, progress=False)  # trains (nothing to learn), then evaluates
    run = Run.load(tmp_path / "pop")
    written: dict[str, list[str]] = {}
    for line in (tmp_path / "pop" / "test.run.trec").read_text().splitlines():
        user, _, item, rank, _, _ = line.split()
        assert int(rank) == len(written.setdefault(user, [])) + 1
        written[user].append(item)

    state = ServiceState.from_run(tmp_path / "pop", index="exact")
    compared = tied = 0
    for user, history, target in zip(run.test.user_ids, run.test.histories, run.test.targets):
        if cfg.eval.exclude_seen and target in history:
            continue  # evaluation keeps a re-consumed target rankable; the service knows no target
        answer = state.recommend([run.item_ids[i] for i in history], k=N, exclude_seen=cfg.eval.exclude_seen)
        served = [item["item_id"] for item in answer["items"]]
        assert served == written[user], user
        scores = [item["score"] for item in answer["items"]]
        tied += sum(a == b for a, b in zip(scores, scores[1:]))
        compared += 1
    assert compared > 20 and tied > compared  # ties everywhere, so the order among them was really compared
