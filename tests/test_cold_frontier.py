"""bench/cold_frontier.py: a cold floor's boost is the smallest one whose validation cold R@10 reaches the floor."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "cold_frontier.py"
spec = importlib.util.spec_from_file_location("cold_frontier", BENCH)
cold_frontier = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cold_frontier)


def row(boost: float, valid_cold: float, valid_warm: float, test_ndcg: float = 0.1) -> dict[str, float]:
    return {"boost": boost, "valid_ndcg@10": 0.1, "valid_cold_recall@10": valid_cold,
            "valid_warm_recall@10": valid_warm, "test_ndcg@10": test_ndcg, "test_cold_recall@10": valid_cold,
            "test_warm_recall@10": valid_warm}


def test_floor_picks_the_smallest_boost_that_reaches_it_on_validation():
    rows = [row(2.0, 0.30, 0.20), row(0.0, 0.02, 0.20), row(1.0, 0.10, 0.20), row(0.5, 0.09, 0.20)]
    assert cold_frontier.floor_choice(rows, 0.5)["boost"] == 1.0  # 0.10 >= 0.5 x 0.20; 0.5's 0.09 is not
    assert cold_frontier.floor_choice(rows, 1.0)["boost"] == 2.0
    assert cold_frontier.floor_choice(rows, 2.0) is None


def test_floor_section_shows_each_seed_and_a_mean_only_when_every_seed_reached_it():
    per_seed = {"seed0": [row(0.0, 0.0, 0.2, test_ndcg=0.10), row(1.0, 0.1, 0.2, test_ndcg=0.08)],
                "seed1": [row(0.0, 0.0, 0.2, test_ndcg=0.12), row(1.0, 0.0, 0.2, test_ndcg=0.09)]}
    floor = {"cold_floor": 0.5, "per_seed": {s: cold_frontier.floor_choice(r, 0.5) for s, r in per_seed.items()},
             "mean": None}
    result = {"floor": floor, "per_seed": per_seed, "content_knn_per_seed": {"seed0": 0.05},
              "mean": [{"test_ndcg@10": 0.11}]}
    lines = cold_frontier.render_floor(result, knn=None)
    assert "| seed0 | 1 | 0.50 | 0.0800 | 0.800 | 0.1000 | 0.2000 | 0.50 | 2.00 |" in lines
    assert any(line.startswith("| seed1 | none on the grid (up to 3)") for line in lines)
    assert not any(line.startswith("| mean") for line in lines)
