"""Score shifts on a finished Run (evaluate.shifted), which the bench frontiers read: a shift moves exactly the
items it touches, seen items stay excluded, and batching does not change a rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clip4rec.evaluate.shifted import shifted_ranks
from clip4rec.model.artifact import Run
from clip4rec.ranking import target_ranks
from tests.support.toy import build_toy, toy_config


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory):
    from clip4rec.train.run import train
    root = build_toy(tmp_path_factory.mktemp("shifted"), n_items=30, n_users=60, images=False)
    config = toy_config("pop", root / "store")
    config.eval.exclude_seen = True
    train(root / "ds", root / "pop", config, progress=False)
    return Run.load(root / "pop")


def test_a_large_shift_on_one_item_moves_it_to_the_top_and_everything_else_down_by_one(pop_run):
    cases, item = pop_run.test, 7
    shift = torch.zeros(pop_run.n_items)
    shift[item] = 1e9
    ranks = shifted_ranks(pop_run, cases, {"none": torch.zeros(pop_run.n_items), "up": shift}, batch=7)
    scores = pop_run.model.score(cases.histories, pop_run.item_table)
    expected = target_ranks(scores, cases.targets, cases.histories).numpy()  # unbatched, seen excluded
    np.testing.assert_array_equal(ranks["none"], expected)
    hits = cases.targets == item
    assert hits.any() and (~hits).any()
    assert (ranks["up"][hits] == 1).all()
    seen = np.array([item in h for h in cases.histories])
    # Every other case moves one place down where the item was ranked below its target, not at all where it was
    # above or is excluded (seen).
    rows = np.arange(len(cases.targets))
    target_score, item_score = scores[rows, cases.targets].numpy(), scores[:, item].numpy()
    below, above = ~hits & ~seen & (item_score < target_score), ~hits & (seen | (item_score > target_score))
    assert below.any() and above.any()
    np.testing.assert_array_equal(ranks["up"][below], expected[below] + 1)
    np.testing.assert_array_equal(ranks["up"][above], expected[above])


def test_a_shift_shared_by_every_item_changes_no_rank(pop_run):
    ranks = shifted_ranks(pop_run, pop_run.valid, {"none": torch.zeros(pop_run.n_items),
                                                   "all": torch.full((pop_run.n_items,), 3.0)})
    np.testing.assert_array_equal(ranks["none"], ranks["all"])
