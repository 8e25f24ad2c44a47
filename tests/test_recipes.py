"""bench/recipes.py: recipe tables from Runs, and the choice by validation alone."""

import json
import sys
from pathlib import Path

import pytest

from clip4rec.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from recipes import main, recipe_rows  # noqa: E402


def fake_run(folder: Path, seed: int, valid: float, test: float, dropout: float, split: str = "loo") -> None:
    """The files a finished Run leaves that recipes.py reads (metrics, config, training)."""
    run = folder / "runs" / split / "id" / f"seed{seed}"
    run.mkdir(parents=True)
    cfg = Config(seed=seed)
    cfg.model.dropout = dropout
    overall = {"ndcg@10": test, "recall@10": 2 * test, "recall@20": 3 * test, "mrr": test / 2}
    metrics = {"metrics": {"overall": overall, "warm": overall, "cold": overall if split == "cold" else None},
               "counts": {"cold": 7 if split == "cold" else 0},
               "valid": {"metrics": {"overall": {"ndcg@10": valid}}},
               "training": {"stopped_by": "early_stopping", "best_epoch": 3, "machine": None}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.json").write_text(json.dumps({"config": cfg.model_dump()}))


def test_select_picks_best_validation_not_best_test(tmp_path, capsys):
    # Recipe "a": better validation, worse test. The choice must follow validation.
    for seed, (valid, test) in enumerate([(0.070, 0.050), (0.068, 0.052)]):
        fake_run(tmp_path / "a", seed, valid, test, dropout=0.5)
    for seed, (valid, test) in enumerate([(0.066, 0.070), (0.067, 0.072)]):
        fake_run(tmp_path / "b", seed, valid, test, dropout=0.2)
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--select", "--out", str(tmp_path / "sel")])
    result = json.loads((tmp_path / "sel.json").read_text())
    assert result["chosen"] == {"loo/id": 0}
    rows = result["rows"]
    assert rows[0]["valid_mean"] == pytest.approx(0.069) and rows[1]["valid_mean"] == pytest.approx(0.0665)
    assert rows[0]["settings"]["dropout"] == 0.5 and rows[1]["settings"]["dropout"] == 0.2
    assert rows[1]["test_ndcg@10_ci"][0] == pytest.approx(0.071)
    table = {line.split(" | ")[0]: line for line in (tmp_path / "sel.md").read_text().splitlines()
             if line.startswith("| a |") or line.startswith("| b |")}
    assert "**yes**" in table["| a"] and "**yes**" not in table["| b"]
    capsys.readouterr()


def test_select_refuses_recipes_on_different_seeds(tmp_path):
    fake_run(tmp_path / "a", 0, 0.07, 0.05, dropout=0.5)
    fake_run(tmp_path / "b", 1, 0.06, 0.05, dropout=0.2)
    with pytest.raises(SystemExit, match="different seeds"):
        main([str(tmp_path / "a"), str(tmp_path / "b"), "--select", "--out", str(tmp_path / "sel")])


def test_cold_rows_carry_the_cold_segment_and_split_filter(tmp_path):
    fake_run(tmp_path / "a", 0, 0.07, 0.04, dropout=0.5, split="cold")
    fake_run(tmp_path / "a", 0, 0.07, 0.05, dropout=0.5, split="loo")
    cold = recipe_rows(tmp_path / "a", "cold")
    assert len(cold) == 1 and cold[0]["cold_cases"] == [7] and cold[0]["cold_recall@10"] == pytest.approx(0.08)
    assert [r["split"] for r in recipe_rows(tmp_path / "a")] == ["cold", "loo"]
