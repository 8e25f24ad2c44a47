"""The parts of the RecBole peer benchmark (bench/peer_recbole.py) that run in clip4rec's own venv: the atomic-file
export of our leave-one-out split, the split/count checks and the report. RecBole itself is never needed here."""

import hashlib
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from clip4rec import Dataset
from clip4rec.data.splits import make_split
from tests.ring_data import save_ring_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from peer.export import counts_check, export_atomic, read_atomic_inter, split_check  # noqa: E402
from peer.report import render_markdown, summarize, time_to_reach  # noqa: E402


def _pairs_hash(pairs):  # the RecBole worker's definition (bench/peer/recbole_worker.py), restated without torch
    return hashlib.sha256("\n".join(sorted(f"{u}\t{i}" for u, i in pairs)).encode()).hexdigest()


@pytest.fixture()
def dataset(tmp_path):
    root = save_ring_dataset(tmp_path, n_items=40, n_users=30, lengths=(2, 9), seed=3)  # some users too short
    ds = Dataset.load(root / "ds")
    # timestamp ties, out-of-order timestamps and a repeated item: the export must keep our stored order as is
    extra = pd.DataFrame([("tie", "i1", 5), ("tie", "i2", 5), ("tie", "i1", 5), ("tie", "i3", 1), ("tie", "i4", 5)],
                         columns=["user_id", "item_id", "timestamp"])
    items = pd.concat([ds.items, pd.DataFrame({"item_id": ["never-seen"], "title": ["x"], "text": ["x"]})])
    Dataset(items, pd.concat([ds.interactions, extra]), {"source": "test"}).save(tmp_path / "ds2")
    return Dataset.load(tmp_path / "ds2")


def test_atomic_export_has_exactly_our_rows_in_our_order(dataset, tmp_path):
    info = export_atomic(dataset, tmp_path / "atomic", "ring")
    rows = read_atomic_inter(tmp_path / "atomic" / "ring" / "ring.inter")

    expected, short = [], 0
    for user, group in dataset.interactions.groupby("user_id", sort=False):
        if len(group) < 3:  # make_split skips these users entirely
            short += 1
            continue
        expected += [(user, item, t) for t, item in enumerate(group["item_id"])]
    assert rows == expected                      # same rows, same order, duplicates kept, nothing filtered
    assert short > 0 and info["users_too_short_skipped"] == short
    assert info["interactions"] == len(expected) and info["users"] == len({r[0] for r in rows})
    assert [r for r in rows if r[0] == "tie"] == [("tie", "i1", 0), ("tie", "i2", 1), ("tie", "i1", 2),
                                                  ("tie", "i3", 3), ("tie", "i4", 4)]
    per_user = defaultdict(list)
    for u, _, t in rows:
        per_user[u].append(t)
    assert all(ts == list(range(len(ts))) for ts in per_user.values())  # increasing per user, in our order

    item_lines = (tmp_path / "atomic" / "ring" / "ring.item").read_text().splitlines()
    assert item_lines[0] == "item_id:token"
    assert item_lines[1:] == dataset.items["item_id"].tolist()  # the whole catalog, incl. never-seen items
    assert info["items"] == dataset.n_items


def test_leave_one_out_of_the_export_is_our_split(dataset, tmp_path):
    """What RecBole's LS valid_and_test split (order TO, group_by user) does to the exported rows gives the
    same (user, target) pairs hash as our split."""
    export_atomic(dataset, tmp_path / "atomic", "ring")
    by_user = defaultdict(list)
    for u, i, t in read_atomic_inter(tmp_path / "atomic" / "ring" / "ring.inter"):
        by_user[u].append((t, i))
    seqs = {u: [i for _, i in sorted(v)] for u, v in by_user.items()}
    split = make_split(dataset, "loo", seed=0)
    assert _pairs_hash((u, s[-1]) for u, s in seqs.items()) == split.test.pairs_hash(split.item_ids)
    assert _pairs_hash((u, s[-2]) for u, s in seqs.items()) == split.valid.pairs_hash(split.item_ids)


def test_export_refuses_ids_that_break_the_files(tmp_path):
    items = pd.DataFrame({"item_id": ["a b", "c"], "title": ["x", "y"], "text": ["x", "y"]})
    inter = pd.DataFrame([("u", "a b", 0), ("u", "c", 1), ("u", "c", 2)], columns=["user_id", "item_id", "timestamp"])
    with pytest.raises(ValueError, match="whitespace"):
        export_atomic(Dataset(items, inter), tmp_path, "bad")


def test_split_and_count_checks():
    ours = {"valid_pairs_sha256": "v", "test_pairs_sha256": "t"}
    assert split_check(ours, dict(ours))["identical"]
    bad = split_check(ours, {"valid_pairs_sha256": "v", "test_pairs_sha256": "x"})
    assert not bad["identical"] and bad["valid"]["equal"] and not bad["test"]["equal"]
    c = {"users": 3, "items": 5, "interactions": 12}
    assert counts_check(c, {**c, "train_targets": 6})["equal"]
    assert not counts_check(c, {**c, "interactions": 11})["equal"]


def _entry(toolkit, model, ndcg, valid, epoch_s, best_epoch, stopped="early_stopping"):
    history = [{"epoch": e + 1, "valid_ndcg@10": v, "epoch_s": epoch_s} for e, v in enumerate(valid)]
    metrics = {f"{m}@{k}": ndcg for m in ("recall", "ndcg") for k in (5, 10, 20)} | {"mrr": ndcg}
    return {"toolkit": toolkit, "model": model, "test_ours": metrics, "test_own": dict(metrics),
            "best_epoch": best_epoch, "best_valid_ndcg@10": max(valid), "epochs_run": len(valid),
            "seconds_per_epoch": epoch_s, "train_seconds": epoch_s * len(valid), "stopped_by": stopped,
            "time_to_best_s": epoch_s * best_epoch, "history": history, "settings": "fixture"}


def test_summary_and_report_from_fixture_results():
    assert time_to_reach([{"epoch": 2, "valid_ndcg@10": 0.3, "epoch_s": 2.0},
                          {"epoch": 1, "valid_ndcg@10": 0.1, "epoch_s": 1.0}], 0.25) == {"epoch": 2, "seconds": 3.0}
    assert time_to_reach([{"epoch": 1, "valid_ndcg@10": 0.1, "epoch_s": 1.0}], 0.5) is None
    models = [
        _entry("recbole", "SASRec", 0.040, [0.02, 0.04, 0.05, 0.049], 100.0, 3),   # best 0.05 at 300 s
        _entry("recbole", "GRU4Rec", 0.030, [0.03, 0.035], 50.0, 2, stopped="time_limit"),
        _entry("clip4rec", "id", 0.044, [0.03, 0.051, 0.06], 10.0, 3),          # reaches 0.05 at 20 s
        _entry("clip4rec", "fused-id", 0.060, [0.01, 0.02], 10.0, 2),          # never reaches 0.05
    ]
    summary = summarize(models)
    reach = summary["time_to_recbole_best"]
    assert reach["id"]["SASRec"]["seconds"] == 20.0 and reach["id"]["SASRec"]["ratio"] == pytest.approx(20 / 300)
    assert reach["id"]["GRU4Rec"]["epoch"] == 2
    assert not reach["fused-id"]["SASRec"]["reached"] and reach["fused-id"]["SASRec"]["ratio"] is None
    goals = summary["goals"]
    assert goals["id_vs_sasrec_ndcg10_ratio"] == pytest.approx(1.1)
    assert goals["best_recbole_model"] == "SASRec"
    assert goals["fused-id_vs_best_recbole_ndcg10_ratio"] == pytest.approx(1.5)

    pair = {"clip4rec": "abc", "recbole": "abc", "equal": True}
    report = {
        "dataset": {"name": "beauty", "dir": "/d"}, "command": "bench/peer_recbole.py --dataset /d",
        "split_check": {"valid": pair, "test": pair, "identical": True},
        "counts_check": counts_check({"users": 1, "items": 2, "interactions": 3}, {"users": 1, "items": 2, "interactions": 3}),
        "machine": {"summary": "test cpu"}, "threads": 1,
        "versions": {"clip4rec": "0", "torch": "t", "recbole": "1.2.1", "recbole_torch": "t"},
        "caps": {"cap_minutes": 30.0, "max_epochs": 200, "capped_runs": ["recbole GRU4Rec"]},
        "matched_settings": "hidden 64", "models": models, "summary": summary,
        "notes": ["`text` skipped: no --store given"],
    }
    md = render_markdown(report)
    assert "| test | `abc` | `abc` | yes |" in md
    assert "runs stopped by the cap: recbole GRU4Rec" in md
    assert "0.067 (goal <= 0.1: met)" in md and "1.100 (goal >= 1.0: met)" in md
    assert "1.500 (goal >= 1.25: met)" in md and "not reached" in md
    assert "`text` skipped" in md
