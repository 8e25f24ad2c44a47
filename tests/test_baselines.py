"""Training-free variants (`pop`, `content-knn`): exact scores, and they go through train/evaluate/load like any Run."""

import json

import numpy as np
import pytest
import torch

from clip4rec.config import Config
from clip4rec.encode.store import EmbeddingStore
from clip4rec.model.baselines import ContentKnnItems
from clip4rec.api import Run, train
from tests.ring_data import save_ring_dataset
from tests.test_variants import N_ITEMS, RingTextEncoder


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    return save_ring_dataset(tmp_path_factory.mktemp("ring"), N_ITEMS, 120, (6, 12), seed=2, encoder=RingTextEncoder())


def config(variant: str, store) -> Config:
    cfg = Config(seed=5)
    cfg.split.kind, cfg.split.cold_fraction = "cold", 0.2
    cfg.model.variant, cfg.model.stores, cfg.model.max_len = variant, [str(store)], 8
    cfg.model.modalities = ["llm_text"] if variant == "content-knn" else []
    cfg.eval.n_boot, cfg.eval.exclude_seen = 0, True
    return cfg


def test_pop_scores_are_training_counts_and_nothing_is_trained(ring, tmp_path):
    metrics = train(ring / "ds", tmp_path / "pop", config("pop", ring / "store"), progress=False)
    training = json.loads((tmp_path / "pop" / "training.json").read_text())
    assert training["epochs_run"] == 0 and training["stopped_by"] == "training_free" and training["parameters"] == 0
    run = Run.load(tmp_path / "pop")
    scores = run.model.score([np.array([0, 1]), np.array([5])])
    assert torch.equal(scores, torch.from_numpy(run.train_counts.astype(np.float32)).expand(2, -1))
    assert metrics["training"]["best_epoch"] == 0


def test_content_knn_score_is_the_cosine_to_the_history_profile(ring, tmp_path):
    train(ring / "ds", tmp_path / "knn", config("content-knn", ring / "store"), progress=False)
    run = Run.load(tmp_path / "knn")
    _, raw, mask = EmbeddingStore.load(ring / "store").vectors("llm_text")
    order = [int(i[1:]) for i in run.item_ids]  # store rows are in catalog order: i0, i1, ...
    vectors = raw[order] - raw[order][mask[order]].mean(0)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    history = np.array([3, 4, 5, 6, 7, 8, 9, 10, 11, 12])  # longer than max_len: only the last 8 count
    profile = unit[history[-8:]].mean(0)
    expected = unit @ (profile / np.linalg.norm(profile))
    np.testing.assert_allclose(run.model.score([history])[0].numpy(), expected, atol=1e-5)


def test_content_knn_recency_weighs_the_item_t_steps_back_by_recency_to_the_t(ring, tmp_path):
    cfg = config("content-knn", ring / "store")
    cfg.model.knn_recency = 0.5
    train(ring / "ds", tmp_path / "knn_recent", cfg, progress=False)
    run = Run.load(tmp_path / "knn_recent")  # the saved config carries the recency back
    _, raw, mask = EmbeddingStore.load(ring / "store").vectors("llm_text")
    order = [int(i[1:]) for i in run.item_ids]
    vectors = raw[order] - raw[order][mask[order]].mean(0)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    history = np.array([3, 4, 5, 6, 7, 8, 9, 10, 11, 12])  # only the last 8 count; 12 weighs 1, 11 0.5, ...
    profile = sum(0.5 ** back * unit[item] for back, item in enumerate(history[::-1][:8]))
    expected = unit @ (profile / np.linalg.norm(profile))
    np.testing.assert_allclose(run.model.score([history])[0].numpy(), expected, atol=1e-5)
    plain = Run.load(tmp_path / "knn_recent")
    plain.model.tower.recency = 1.0  # the same Run with the plain mean ranks differently
    assert not np.allclose(plain.model.score([history])[0].numpy(), expected, atol=1e-3)


def test_content_knn_ranks_a_cold_item_that_matches_the_history_above_a_far_one(ring, tmp_path):
    metrics = train(ring / "ds", tmp_path / "knn2", config("content-knn", ring / "store"), progress=False)
    run = Run.load(tmp_path / "knn2")
    cold = np.flatnonzero(run.cold_items)
    index = {item: i for i, item in enumerate(run.item_ids)}
    target = int(cold[0])
    k = int(run.item_ids[target][1:])
    history = np.array([index[f"i{(k - d) % N_ITEMS}"] for d in range(4, 0, -1)])  # the 4 items before it
    far = index[f"i{(k + N_ITEMS // 2) % N_ITEMS}"]
    scores = run.model.score([history])[0]
    assert scores[target] > scores[far]
    # And it lifts cold items as a whole: most cold test cases land in the top 10 of 48 items.
    assert metrics["counts"]["cold"] > 5 and metrics["metrics"]["cold"]["recall@10"] > 0.5


def test_content_knn_new_item_vector_is_its_table_row(ring, tmp_path):
    train(ring / "ds", tmp_path / "knn3", config("content-knn", ring / "store"), progress=False)
    run = Run.load(tmp_path / "knn3")
    side = run.model.item_side
    assert isinstance(side, ContentKnnItems)
    row = 7
    k = int(run.item_ids[row][1:])
    raw = RingTextEncoder().encode_texts([f"item {k}"])["llm_text"][0]
    torch.testing.assert_close(side.vector_for({side.names[0]: raw}), side()[row], atol=1e-6, rtol=1e-5)


def test_knn_recency_bench_reproduces_the_runs_own_metrics_at_recency_1(ring, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    report = tmp_path / "report"
    metrics = train(ring / "ds", report / "runs" / "cold" / "content-knn" / "seed0",
                    config("content-knn", ring / "store"), progress=False)
    bench = Path(__file__).resolve().parents[1] / "bench" / "knn_recency.py"
    subprocess.run([sys.executable, str(bench), str(report), "--split", "cold"], check=True, capture_output=True)
    result = json.loads((report / "knn_recency_cold.json").read_text())
    plain = result["mean"][0]
    assert plain["recency"] == 1.0
    assert plain["test_ndcg@10"] == pytest.approx(metrics["metrics"]["overall"]["ndcg@10"], abs=1e-9)
    assert plain["test_cold_recall@10"] == pytest.approx(metrics["metrics"]["cold"]["recall@10"], abs=1e-9)
    assert plain["test_tail_recall@10"] == pytest.approx(metrics["metrics"]["tail"]["recall@10"], abs=1e-9)
    assert result["chosen"]["valid_ndcg@10"] == max(row["valid_ndcg@10"] for row in result["mean"])
    assert "| 1 |" in (report / "knn_recency_cold.md").read_text()
