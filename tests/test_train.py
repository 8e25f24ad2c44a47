"""SASRec (`id` variant) end to end on a small generated dataset: it learns, it is deterministic,
a killed run resumes to the same result, and the exported TREC files reproduce the evaluator."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from clip4rec import Dataset
from clip4rec.cli import app
from clip4rec.config import Config
from clip4rec.evaluate.trec import metrics_from_trec
from clip4rec.api import evaluate, train
from clip4rec.train.trainer import training_windows

N_ITEMS = 60


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """Users walk the catalog in steps of +1 from a random start: a pattern a sequence model must learn."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(120):
        start, length = int(rng.integers(N_ITEMS)), int(rng.integers(6, 14))
        rows += [(f"u{u}", f"i{(start + t) % N_ITEMS}", t) for t in range(length)]
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(N_ITEMS)], "title": [f"item {k}" for k in range(N_ITEMS)]})
    path = tmp_path_factory.mktemp("ds") / "toy"
    Dataset(items, pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), {"source": "generated"}).save(path)
    return path


def small_config(epochs: int = 12) -> Config:
    cfg = Config(seed=5)
    cfg.model.hidden, cfg.model.dropout, cfg.model.max_len = 32, 0.1, 8
    cfg.train.max_epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.patience = epochs, 96, 1e-2, 100
    cfg.eval.n_boot, cfg.eval.run_depth = 50, N_ITEMS
    return cfg


@pytest.mark.parametrize("min_context", [0, 3, 7])
@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_training_windows_cover_every_target_once(min_context, seed):
    seq = np.arange(100, 123)  # positions 1..22 are targets
    rng = None if seed is None else np.random.default_rng(seed)
    windows = training_windows([seq, np.array([4])], max_len=8, rng=rng, min_context=min_context)
    counted = np.concatenate([w[1 + skip:] for w, skip in windows])
    assert sorted(counted.tolist()) == list(range(101, 123))
    assert all(len(w) <= 9 for w, _ in windows)
    for w, skip in windows:  # every counted target has min_context items before it, or the sequence start
        assert skip >= min_context or w[0] == 100 or len(w) == 1 + skip


def test_sasrec_learns_and_trec_export_reproduces_metrics(dataset_dir, tmp_path):
    metrics = train(dataset_dir, tmp_path / "run", small_config(), progress=False)
    overall = metrics["metrics"]["overall"]
    assert overall["recall@10"] > 0.8          # random ranking gives 10/60 = 0.17
    assert set(metrics["metrics"]) >= {"overall", "warm", "cold", "head", "tail"}
    for name in ("test", "valid"):
        from_files = metrics_from_trec(tmp_path / "run" / f"{name}.run.trec", tmp_path / "run" / f"{name}.qrels.trec")
        ours = metrics["metrics"]["overall"] if name == "test" else metrics["valid"]["metrics"]["overall"]
        for key in ("recall@5", "recall@10", "ndcg@10", "ndcg@20", "mrr"):
            assert from_files[key] == pytest.approx(ours[key], abs=1e-6)
    for artifact in ("config.json", "split.json", "model.safetensors", "item_table.safetensors", "metrics.json"):
        assert (tmp_path / "run" / artifact).exists()


def test_same_seed_same_numbers_and_resume_after_kill(dataset_dir, tmp_path):
    full = train(dataset_dir, tmp_path / "a", small_config(6), progress=False)
    again = train(dataset_dir, tmp_path / "b", small_config(6), progress=False)
    assert full["metrics"] == again["metrics"]
    # Simulate a kill after epoch 3: train 3 epochs, then continue the same run directory to 6.
    train(dataset_dir, tmp_path / "c", small_config(3), progress=False)
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["config"]["train"]["max_epochs"] = 6
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    resumed = train(dataset_dir, tmp_path / "c", small_config(6), progress=False)
    assert resumed["metrics"] == full["metrics"]
    assert resumed["training"]["epochs_run"] == 6


def test_evaluate_cli_json_and_reevaluation_is_identical(dataset_dir, tmp_path):
    first = train(dataset_dir, tmp_path / "run", small_config(2), progress=False)
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["metrics"] == first["metrics"]
    assert {"recall@10", "ndcg@10", "mrr", "recall@20", "hr@5"} <= set(printed["metrics"]["overall"])
    # A Run of the format before Runs carried their data (no run.json, data.*) is rebuilt from its Dataset.
    for name in ("run.json", "data.safetensors", "data.json"):
        (tmp_path / "run" / name).unlink()
    assert evaluate(tmp_path / "run", progress=False) == first


def test_train_refuses_to_mix_runs(dataset_dir, tmp_path):
    train(dataset_dir, tmp_path / "run", small_config(1), progress=False)
    other = small_config(1)
    other.model.hidden = 16
    with pytest.raises(ValueError, match="another config"):
        train(dataset_dir, tmp_path / "run", other, progress=False)


def test_cli_rejects_bad_config_key(dataset_dir, tmp_path):
    (tmp_path / "c.yaml").write_text("trian:\n  lr: 0.1\n")
    result = CliRunner().invoke(app, ["train", str(dataset_dir), "--out", str(tmp_path / "r"),
                                      "--config", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2 and "trian" in result.output


def test_train_takes_a_full_backbone_name_and_refuses_a_bad_one(dataset_dir, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["train", str(dataset_dir), "--out", str(tmp_path / "bad"), "--backbone", "smollm2-2L"])
    assert bad.exit_code == 2 and "smollm2-<N>L-" in bad.output and not (tmp_path / "bad" / "config.json").exists()
    result = runner.invoke(app, ["train", str(dataset_dir), "--out", str(tmp_path / "llm"), "--backbone",
                                 "smollm2-1L-frozen", "--epochs", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    model = json.loads((tmp_path / "llm" / "config.json").read_text())["config"]["model"]
    assert (model["backbone"], model["llm_layers"], model["llm_train"], model["llm_dtype"]) == (
        "smollm2", 1, "frozen", "float32")


def test_device_option_is_validated_and_missing_cuda_is_a_clear_error(dataset_dir, tmp_path):
    runner = CliRunner()
    typo = runner.invoke(app, ["train", str(dataset_dir), "--out", str(tmp_path / "a"), "--device", "gpu"])
    assert typo.exit_code == 2 and "train.device" in typo.output
    if torch.cuda.is_available():
        return
    result = runner.invoke(app, ["train", str(dataset_dir), "--out", str(tmp_path / "b"), "--device", "cuda",
                                 "--epochs", "1"])
    assert result.exit_code == 2 and "no CUDA device" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_learns_is_repeatable_and_resumes_on_cpu(dataset_dir, tmp_path):
    cfg = small_config(6)
    cfg.train.device = "cuda"
    first = train(dataset_dir, tmp_path / "a", cfg, progress=False)
    again = train(dataset_dir, tmp_path / "b", cfg, progress=False)
    assert first["metrics"]["overall"]["recall@10"] > 0.8
    assert first["metrics"] == again["metrics"]
    # The TREC files written from GPU rankings still reproduce the evaluator.
    from_files = metrics_from_trec(tmp_path / "a" / "test.run.trec", tmp_path / "a" / "test.qrels.trec")
    assert from_files["ndcg@10"] == pytest.approx(first["metrics"]["overall"]["ndcg@10"], abs=1e-6)
    # A Run trained on the GPU re-evaluates on a CPU-only process (weights are saved from CPU copies).
    assert evaluate(tmp_path / "a", progress=False)["metrics"]["overall"]["ndcg@10"] == pytest.approx(
        first["metrics"]["overall"]["ndcg@10"], abs=1e-5)


def test_post_norm_tower_ends_normalised_and_learns(dataset_dir, tmp_path):
    from clip4rec.model.user_tower import CausalTransformer
    torch.manual_seed(0)
    tower = CausalTransformer(16, 2, 2, 0.0, 8, post_norm=True).eval()
    out = tower(torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool))
    # Every position leaves the last block through a LayerNorm with its initial affine (1, 0).
    torch.testing.assert_close(out.mean(-1), torch.zeros(3, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(3, 5), atol=1e-3, rtol=0)
    cfg = small_config()
    cfg.model.norm = "post"
    assert train(dataset_dir, tmp_path / "run", cfg, progress=False)["metrics"]["overall"]["recall@10"] > 0.8
