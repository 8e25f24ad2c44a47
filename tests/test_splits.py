"""Splits: leave-one-out positions, cold-start hold-out, determinism, no leakage."""

import numpy as np
import pandas as pd
import pytest

from clip4rec import Dataset
from clip4rec.data.splits import make_split


def toy_dataset() -> Dataset:
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(30)]})
    rows = []
    rng = np.random.default_rng(7)
    for u in range(40):
        seq = rng.choice(30, size=int(rng.integers(2, 12)), replace=False)
        # Equal timestamps on purpose: order must follow row order (stable).
        rows += [(f"u{u}", f"i{item}", 100 + pos // 2) for pos, item in enumerate(seq)]
    return Dataset(items, pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


def test_leave_one_out_positions_on_hand_example():
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"]})
    inter = pd.DataFrame({"user_id": ["x"] * 4 + ["y"] * 2, "item_id": ["a", "b", "c", "d", "a", "b"],
                          "timestamp": [1, 2, 2, 3, 5, 6]})
    split = make_split(Dataset(items, inter), "loo")
    assert split.train_users == ["x"]
    assert split.train_sequences[0].tolist() == [0, 1]          # a, b
    assert split.valid.targets.tolist() == [2]                   # c
    assert split.valid.histories[0].tolist() == [0, 1]
    assert split.test.targets.tolist() == [3]                    # d
    assert split.test.histories[0].tolist() == [0, 1, 2]         # history includes the validation item
    assert split.report["users_too_short_skipped"] == 1          # y has only 2 interactions
    assert split.train_counts.tolist() == [1, 1, 0, 0]


def test_no_test_or_valid_target_interaction_leaks_into_training():
    ds = toy_dataset()
    split = make_split(ds, "loo")
    inter = ds.interactions
    for user, target, hist in zip(split.test.user_ids, split.test.targets, split.test.histories):
        seq = inter.loc[inter.user_id == user, "item_id"].map(lambda s: int(s[1:])).tolist()
        train = split.train_sequences[split.train_users.index(user)].tolist()
        assert train == seq[:-2] and target == seq[-1] and hist.tolist() == seq[:-1]


def test_cold_split_removes_cold_items_from_all_model_input_and_is_seeded():
    ds = toy_dataset()
    a, b, c = make_split(ds, "cold", seed=3), make_split(ds, "cold", seed=3), make_split(ds, "cold", seed=4)
    assert np.array_equal(a.cold_items, b.cold_items) and not np.array_equal(a.cold_items, c.cold_items)
    interacted = np.unique(np.concatenate(
        [np.array([int(s[1:]) for s in g]) for _, g in ds.interactions.groupby("user_id").item_id]))
    assert a.cold_items.sum() == round(0.1 * len(interacted))
    cold = set(np.flatnonzero(a.cold_items).tolist())
    for seq in a.train_sequences + a.valid.histories + a.test.histories:
        assert not cold & set(seq.tolist())
    # Validation keeps its cold cases (as the test does), counted in the report.
    n_cold_valid = int(a.cold_items[a.valid.targets].sum())
    assert n_cold_valid == a.report["valid_cases_with_cold_target"] > 0
    assert len(a.valid) == len(make_split(ds, "loo").valid)
    assert a.train_counts[a.cold_items].sum() == 0
    n_cold_cases = int(a.cold_items[a.test.targets].sum())
    assert n_cold_cases == a.report["test_cases_with_cold_target"] > 0


def test_pairs_hash_identifies_the_split():
    ds = toy_dataset()
    assert make_split(ds).test.pairs_hash(ds.items.item_id.tolist()) == \
        make_split(ds).test.pairs_hash(ds.items.item_id.tolist())
    assert make_split(ds).test.pairs_hash(ds.items.item_id.tolist()) != \
        make_split(ds).valid.pairs_hash(ds.items.item_id.tolist())


def test_bad_split_arguments_fail_clearly():
    with pytest.raises(ValueError, match="cold_fraction"):
        make_split(toy_dataset(), "cold", cold_fraction=1.5)
    with pytest.raises(ValueError, match="unknown split kind"):
        make_split(toy_dataset(), "random")  # type: ignore[arg-type]
