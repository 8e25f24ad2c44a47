"""Splits: leave-one-out, and the cold-start variant of it.

Leave-one-out (the standard protocol on both bundled datasets): per user, in chronological order,
the last interaction is the test target, the second-to-last the validation target, the rest is training.
Test histories include the validation item (as in SASRec and RecBole).

Cold start: a seeded fraction of the items that have interactions is held out. Those items are removed
from every training sequence and from every evaluation history; validation and test cases that target
them are the "cold" cases of each. Validation keeps its cold cases so that early stopping and recipe
choice see the same warm/cold mix as the test (validation data, never trained on). Nothing about a cold
item reaches the model except its content (for content-based variants).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from clip4rec.data.dataset import Dataset

SplitKind = Literal["loo", "cold"]


@dataclass
class EvalCases:
    user_ids: list[str]
    histories: list[np.ndarray]   # item indices the model reads, oldest first
    targets: np.ndarray           # item index to be ranked

    def __len__(self) -> int:
        return len(self.targets)

    def pairs_hash(self, item_ids: list[str]) -> str:
        """sha256 of the sorted (user_id, target item_id) pairs: proves two toolkits used one split."""
        pairs = sorted(f"{u}\t{item_ids[t]}" for u, t in zip(self.user_ids, self.targets.tolist()))
        return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


@dataclass
class Split:
    kind: SplitKind
    seed: int
    item_ids: list[str]                 # index -> item_id, the full catalog (full ranking is over all of it)
    train_users: list[str]
    train_sequences: list[np.ndarray]   # per user, item indices in order (inputs and next-item targets)
    train_counts: np.ndarray            # per item, occurrences in training sequences (popularity)
    cold_items: np.ndarray              # bool per item; all False for "loo"
    valid: EvalCases
    test: EvalCases
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "seed": self.seed, "n_items": self.n_items,
            "train_users": len(self.train_users),
            "train_interactions": int(sum(len(s) for s in self.train_sequences)),
            "valid_cases": len(self.valid), "test_cases": len(self.test),
            "cold_items": int(self.cold_items.sum()),
            "test_pairs_sha256": self.test.pairs_hash(self.item_ids),
            "valid_pairs_sha256": self.valid.pairs_hash(self.item_ids),
            **self.report,
        }


def user_sequences(dataset: Dataset) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Per-user item-index sequences in stored (chronological) order."""
    item_ids = dataset.items["item_id"].tolist()
    index = {item: i for i, item in enumerate(item_ids)}
    inter = dataset.interactions
    codes = inter["item_id"].map(index)
    if codes.isna().any():
        unknown = inter.loc[codes.isna(), "item_id"].unique()[:5].tolist()
        raise ValueError(f"interactions reference items missing from the catalog: {unknown}")
    frame = inter[["user_id"]].assign(code=codes.astype(np.int64).to_numpy())
    users, sequences = [], []
    for user, group in frame.groupby("user_id", sort=False):
        users.append(str(user))
        sequences.append(group["code"].to_numpy(dtype=np.int64))
    return users, sequences, item_ids


def make_split(dataset: Dataset, kind: SplitKind = "loo", seed: int = 42,
               cold_fraction: float = 0.1) -> Split:
    users, sequences, item_ids = user_sequences(dataset)
    n_items = len(item_ids)
    cold = np.zeros(n_items, dtype=bool)
    if kind == "cold":
        if not 0.0 < cold_fraction < 1.0:
            raise ValueError(f"cold_fraction must be in (0, 1), got {cold_fraction}")
        interacted = np.unique(np.concatenate(sequences)) if sequences else np.array([], dtype=np.int64)
        rng = np.random.default_rng(seed)
        n_cold = int(round(cold_fraction * len(interacted)))
        cold[rng.choice(interacted, size=n_cold, replace=False)] = True
    elif kind != "loo":
        raise ValueError(f"unknown split kind {kind!r}; use 'loo' or 'cold'")

    train_users, train_seqs = [], []
    valid = EvalCases([], [], np.empty(0, dtype=np.int64))
    test = EvalCases([], [], np.empty(0, dtype=np.int64))
    valid_targets: list[int] = []
    test_targets: list[int] = []
    too_short = cold_valid = empty_valid = empty_test = 0
    for user, seq in zip(users, sequences):
        if len(seq) < 3:  # needs a training item, a validation target and a test target
            too_short += 1
            continue
        train, valid_target, test_target = seq[:-2], int(seq[-2]), int(seq[-1])
        keep = ~cold[train]
        train = train[keep]
        if len(train):
            train_users.append(user)
            train_seqs.append(train)
        valid_history = train
        test_history = np.append(train, valid_target) if not cold[valid_target] else train
        if len(valid_history):
            cold_valid += int(cold[valid_target])
            valid.user_ids.append(user)
            valid.histories.append(valid_history)
            valid_targets.append(valid_target)
        else:
            empty_valid += 1
        if len(test_history):
            test.user_ids.append(user)
            test.histories.append(test_history)
            test_targets.append(test_target)
        else:  # only possible in the cold split, when every earlier item was held out
            empty_test += 1
    valid.targets = np.asarray(valid_targets, dtype=np.int64)
    test.targets = np.asarray(test_targets, dtype=np.int64)
    counts = np.bincount(np.concatenate(train_seqs), minlength=n_items) if train_seqs else np.zeros(n_items, int)
    report = {
        "users_too_short_skipped": too_short,
        "valid_cases_with_cold_target": cold_valid,
        "valid_cases_empty_history_skipped": empty_valid,
        "test_cases_empty_history_skipped": empty_test,
        "test_cases_with_cold_target": int(cold[test.targets].sum()) if len(test) else 0,
    }
    return Split(kind, seed, item_ids, train_users, train_seqs, counts.astype(np.int64), cold, valid, test, report)
