"""model.cold_floor: a boost for items without training interactions, fitted on validation after training as the
smallest one whose validation cold R@10 reaches floor x warm R@10, carried as one more table column, so that
evaluation and serving (published items included) apply it without any other code path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clip4rec.data.splits import EvalCases
from clip4rec.experiments.compare import cold_boosts
from clip4rec.experiments.report import _cold_boost_lines
from clip4rec.model.artifact import Run
from clip4rec.ranking import rank_cases
from clip4rec.serve.state import ServiceState
from clip4rec.train.calibrate import COLD_BOOSTS, fit_cold_boost
from clip4rec.train.run import made_with, train
from tests.support.toy import build_toy, ring_vectors, toy_config

N = 40
FLOOR = 0.5


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = build_toy(tmp_path_factory.mktemp("cold_floor"), n_items=N, n_users=100, images=False)
    for variant in ("fused-id", "text"):
        cfg = toy_config(variant, root / "store", epochs=2, split="cold")
        cfg.model.cold_floor, cfg.eval.exclude_seen = FLOOR, True
        train(root / "ds", root / variant, cfg, progress=False)
    return root


def valid_recalls(run: Run, boost: float, cases: EvalCases | None = None) -> tuple[float, float]:
    """R@10 on validation (or `cases`) targets without / with training interactions at `boost`, through the
    evaluation's ranking path (the Run's saved table and the model's own scores)."""
    cases = run.valid if cases is None else cases
    with torch.no_grad():
        run.model.item_side.cold_boost.fill_(boost)
    rankings = rank_cases(lambda hs: run.model.score(hs, run.item_table), cases.histories, cases.targets,
                          run.n_items, exclude_seen=True, depth=10)
    hit = rankings.ranks <= 10
    cold = (run.train_counts == 0)[cases.targets]
    return float(hit[cold].mean()), float(hit[~cold].mean())


@pytest.mark.parametrize("variant", ["fused-id", "text"])
def test_training_keeps_the_smallest_boost_that_reaches_the_floor(toy, variant):
    record = json.loads((toy / variant / "training.json").read_text())["cold_boost"]
    assert record["floor"] == FLOOR and record["boosts"] == list(COLD_BOOSTS)
    run = Run.load(toy / variant)
    assert float(run.model.item_side.cold_boost) == record["chosen"]
    # what was recorded per boost is what evaluation ranks at that boost
    for i in (0, 4, 8, 16):
        cold, warm = valid_recalls(run, COLD_BOOSTS[i])
        assert (cold, warm) == pytest.approx((record["valid_cold_recall@10"][i], record["valid_warm_recall@10"][i]))
    met = [b for b, c, w in zip(COLD_BOOSTS, record["valid_cold_recall@10"], record["valid_warm_recall@10"])
           if c >= FLOOR * w]
    assert record["reached"] == bool(met) and record["chosen"] == (min(met) if met else max(COLD_BOOSTS))
    assert record["valid_cold_cases"] == int((run.train_counts == 0)[run.valid.targets].sum()) > 0


def test_the_boost_is_one_table_column_and_one_user_entry(toy):
    run = Run.load(toy / "fused-id")
    side, table = run.model.item_side, run.item_table
    untrained = torch.from_numpy(run.train_counts == 0)
    assert untrained.any() and torch.equal(table[:, -1], untrained.float())
    assert table.shape[1] == 32 + side.content.shape[1] + 1 == 32 + side.channel_dims
    histories = run.test.histories[:20]
    with torch.no_grad():
        side.cold_boost.fill_(0.0)
        plain = run.model.score(histories, table)
        side.cold_boost.fill_(2.5)
        boosted = run.model.score(histories, table)
        assert torch.allclose(run.model.user_vectors(histories, table)[:, -1], torch.tensor(2.5))
    torch.testing.assert_close(boosted, plain + 2.5 * untrained.float(), atol=1e-5, rtol=0)
    # the item vectors used for similarity leave the column out
    assert run.model.item_vectors(table).shape[1] == table.shape[1] - 1


def test_fitting_again_sets_the_same_boost(toy):
    run = Run.load(toy / "text")
    first = fit_cold_boost(run.model, run.valid, FLOOR, exclude_seen=True)
    with torch.no_grad():
        run.model.item_side.cold_boost.fill_(7.0)  # a boost left from elsewhere does not move the fit
    again = fit_cold_boost(run.model, run.valid, FLOOR, exclude_seen=True)
    assert again == first and float(run.model.item_side.cold_boost) == first["chosen"]


def test_the_fit_keeps_the_smallest_boost_reaching_the_floor_on_cases_where_it_matters(toy):
    """On the ring the next item is found at any boost; with random targets the floor decides. The recalls
    recorded for the chosen boost and for the one before it are recomputed through evaluation's ranking."""
    run = Run.load(toy / "text")
    targets = np.random.default_rng(0).integers(0, N, len(run.valid.targets))
    cases = EvalCases(run.valid.user_ids, run.valid.histories, targets)
    record = fit_cold_boost(run.model, cases, 1.5, exclude_seen=True)
    cold, warm = record["valid_cold_recall@10"], record["valid_warm_recall@10"]
    i = COLD_BOOSTS.index(record["chosen"])
    assert record["reached"] and i > 0 and cold[i] >= 1.5 * warm[i]
    assert all(c < 1.5 * w for c, w in zip(cold[:i], warm[:i]))
    for j in (i - 1, i):
        assert valid_recalls(run, COLD_BOOSTS[j], cases) == pytest.approx((cold[j], warm[j]))


def test_an_unreachable_floor_keeps_the_largest_boost_and_says_so(toy):
    run = Run.load(toy / "text")
    buried = fit_cold_boost(run.model, run.valid, FLOOR, exclude_seen=True, boosts=(-60.0, -50.0))
    assert buried["valid_cold_recall@10"] == [0.0, 0.0]  # every cold item below every warm one
    assert not buried["reached"] and buried["chosen"] == -50.0 == float(run.model.item_side.cold_boost)


def test_a_published_item_gets_the_boost_and_a_republished_trained_one_does_not(toy):
    state = ServiceState.from_run(toy / "fused-id")
    side = state.model.item_side
    with torch.no_grad():
        side.cold_boost.fill_(100.0)  # large enough to put any item without interactions first
    state.publish("brand-new", ring_vectors(7, N))
    warm = next(f"i{k}" for k in range(N) if not bool(side.untrained[state.lookup(f"i{k}")]))
    state.publish(warm, ring_vectors(int(warm[1:]), N))
    table = state.snapshot.table
    assert float(table[state.lookup("brand-new"), -1]) == 1.0 and float(table[state.lookup(warm), -1]) == 0.0
    history = [f"i{k}" for k in range(20, 26) if not bool(side.untrained[state.lookup(f"i{k}")])]
    top = [item["item_id"] for item in state.recommend(history, k=int(side.untrained.sum()) + 1)["items"]]
    cold_ids = {state.item_ids[i] for i in np.flatnonzero(side.untrained.numpy())} | {"brand-new"}
    assert set(top) == cold_ids  # the boost reaches every item without interactions, the published one too


def test_a_split_without_cold_validation_targets_is_refused_before_training(toy, tmp_path):
    cfg = toy_config("fused-id", toy / "store", epochs=2, split="loo")
    cfg.model.cold_floor = FLOOR
    with pytest.raises(ValueError, match="split.kind cold"):
        train(toy / "ds", tmp_path / "loo", cfg, progress=False)
    assert not (tmp_path / "loo" / "checkpoint.pt").exists()


def test_variants_without_a_content_item_side_ignore_the_floor(toy, tmp_path):
    """An id or pop cell of a comparison grid with a cold floor is the same Run as without one (reused)."""
    from clip4rec.data.dataset import Dataset
    dataset = Dataset.load(toy / "ds")
    for variant in ("id", "pop"):
        plain = toy_config(variant, toy / "store", split="cold")
        floored = plain.model_copy(deep=True)
        floored.model.cold_floor = FLOOR
        assert made_with({"config": plain.model_dump(), "dataset": str(dataset.root)}, floored, dataset)
    content = toy_config("text", toy / "store", split="cold")
    floored = content.model_copy(deep=True)
    floored.model.cold_floor = FLOOR
    assert not made_with({"config": content.model_dump(), "dataset": str(dataset.root)}, floored, dataset)


def test_a_comparison_report_shows_each_seeds_boost(toy):
    fitted = json.loads((toy / "fused-id" / "training.json").read_text())
    record = fitted["cold_boost"]
    i = record["boosts"].index(record["chosen"])
    summary = cold_boosts([fitted, {"cold_boost": None}])  # a seed trained without a floor shows as "-"
    assert summary == {"floor": FLOOR, "boost": [record["chosen"], None], "reached": [record["reached"], None],
                       "valid_cold_recall@10": [record["valid_cold_recall@10"][i], None],
                       "valid_warm_recall@10": [record["valid_warm_recall@10"][i], None]}
    assert cold_boosts([{"cold_boost": None}]) is None
    lines = _cold_boost_lines({"fused-id": {"cold_boost": summary}, "id": {"cold_boost": None}}, ["fused-id", "id"])
    row = next(line for line in lines if line.startswith("| fused-id"))
    assert row == (f"| fused-id | {record['chosen']:g}, - | {'yes' if record['reached'] else 'no'}, - | "
                   f"{record['valid_cold_recall@10'][i]:.4f}, - | {record['valid_warm_recall@10'][i]:.4f}, - |")
    assert not any(line.startswith("| id") for line in lines)


def test_a_refit_of_the_knn_term_fits_the_boost_again(toy, tmp_path):
    """compare refits a finished Run's knn term when its rule changed; the boost, fitted on that term, follows."""
    import shutil

    from clip4rec.experiments.pipeline import fit_content_weight_of_finished
    old = tmp_path / "old"
    shutil.copytree(toy / "fused-id", old)
    training = json.loads((old / "training.json").read_text())
    training["content_weight"]["rule"] = "an older rule"
    training["cold_boost"] = None
    (old / "training.json").write_text(json.dumps(training))
    run = Run.load(old)
    with torch.no_grad():
        run.model.item_side.cold_boost.fill_(9.0)
    run.save(old)
    assert fit_content_weight_of_finished(old) is True
    refit = json.loads((old / "training.json").read_text())["cold_boost"]
    expected = json.loads((toy / "fused-id" / "training.json").read_text())["cold_boost"]
    assert refit == expected and float(Run.load(old).model.item_side.cold_boost) == expected["chosen"]
    assert json.loads((old / "metrics.json").read_text())["training"]["cold_boost"] == expected


def test_the_bench_frontier_of_a_floor_run_starts_from_no_boost(toy):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("cold_frontier",
                                                  Path(__file__).resolve().parents[1] / "bench" / "cold_frontier.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run = Run.load(toy / "text")
    with torch.no_grad():
        run.model.item_side.cold_boost.fill_(0.0)
    plain = bench.frontier(run)
    with torch.no_grad():
        run.model.item_side.cold_boost.fill_(40.0)
    assert bench.frontier(run) == plain
