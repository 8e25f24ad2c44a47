"""`make demo`: the whole pipeline on the bundled real data (ML-100K with posters and plot text).

import -> encode offline with the frozen offline encoders (`lite`: EfficientNet-Lite0 + MiniLM, a stand-in
for CLIP; `item-llm`: SmolLM2-135M) -> compare `id`, `text`, `fused`, `fused-id` (one seed, leave-one-out,
a short fixed epoch budget so it fits in minutes on 2 cores) -> print the table.
Every stage writes its artifact under --out and is skipped when that artifact is already complete.
"""

from __future__ import annotations

from pathlib import Path

from clip4rec.config import Config
from clip4rec.data.dataset import Dataset
from clip4rec.data.importers import import_dataset

DEMO_VARIANTS = ("id", "text", "fused", "fused-id")
DEMO_LLM_TOKENS = 64


def demo_config(seed: int, max_epochs: int) -> Config:
    config = Config(seed=seed)
    config.train.max_epochs, config.train.patience = max_epochs, 5
    config.eval.n_boot = 500
    return config


def run_demo(data_root: Path, out: Path, seed: int = 42, max_epochs: int = 12,
             encoders: tuple[str, ...] = ("lite", "item-llm")) -> dict:
    from clip4rec.encode.pipeline import encode_dataset
    from clip4rec.evaluate.compare import compare

    out.mkdir(parents=True, exist_ok=True)
    src = data_root / "ml100k-posters"
    if not src.exists():
        raise FileNotFoundError(f"ML-100K posters not found at {src} (pass --data to the folder holding it)")
    dataset_dir = out / "ml100k"
    if not (dataset_dir / "dataset.json").exists():
        print(f"[1/3] import {src}")
        import_dataset("ml100k-posters", str(src)).save(dataset_dir)
    dataset = Dataset.load(dataset_dir)
    print(f"      {dataset.n_users} users, {dataset.n_items} items, {dataset.n_interactions} interactions")
    store = out / "store"
    for name in encoders:
        print(f"[2/3] encode items offline with frozen encoder `{name}` -> {store}")
        # The demo's only shortcut: item-llm reads the first 64 tokens (title, year, genres, start of the plot).
        options = {"max_tokens": DEMO_LLM_TOKENS} if name == "item-llm" else {}
        encode_dataset(dataset_dir, name, store, **options)  # resumable; re-encodes only new or changed items
    print(f"[3/3] compare {', '.join(DEMO_VARIANTS)} (seed {seed}, leave-one-out, <= {max_epochs} epochs each)")
    report = compare(dataset_dir, DEMO_VARIANTS, [seed], ["loo"], [str(store)], demo_config(seed, max_epochs),
                     out / "report", progress=False)
    print((out / "report" / "report.md").read_text())
    return report
