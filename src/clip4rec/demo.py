"""`make demo`: the pipeline end to end on the bundled real data (ML-100K with posters)."""

from __future__ import annotations

from pathlib import Path

from clip4rec.config import Config
from clip4rec.data.importers import import_dataset
from clip4rec.evaluate.report import metrics_table
from clip4rec.train.run import train

DEMO_METRICS = ("recall@10", "ndcg@10", "hr@10", "recall@20", "ndcg@20", "mrr")


def run_demo(data_root: Path, out: Path, seed: int = 42, max_epochs: int = 200) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    src = data_root / "ml100k-posters"
    if not src.exists():
        raise FileNotFoundError(f"ML-100K posters not found at {src} (pass --data to the folder holding it)")
    print(f"[1/3] import {src}")
    dataset = import_dataset("ml100k-posters", str(src))
    dataset.save(out / "ml100k")
    print(f"      {dataset.n_users} users, {dataset.n_items} items, {dataset.n_interactions} interactions")
    config = Config(seed=seed)
    config.train.max_epochs = max_epochs
    config.eval.n_boot = 1000
    print("[2/3] train SASRec (variant id, leave-one-out, full-softmax CE)")
    metrics = train(out / "ml100k", out / "runs" / "id", config)
    print("[3/3] test metrics, full ranking over all items, 95% bootstrap CIs")
    print(metrics_table(metrics, metrics=DEMO_METRICS))
    return metrics
