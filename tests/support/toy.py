"""A generated catalog for tests, demos and benchmarks of the online stage (no downloads, seconds to build).

The catalog is a ring of N items. Users walk it in steps of +1 (with the odd skip), so "the next item" is
the neighbour on the ring. Every item has a poster (a PNG whose hue is its position on the ring, with its
number written on it) and a text ("item k"). The deterministic `RingEncoder` turns the poster's hue and the
text's number into Fourier features of the ring position: image and text vectors of nearby items are close,
which is all a content model needs to place an item it never saw in training.

    root = build_toy(tmp, n_items=48, n_users=150)          # root/ds (Dataset), root/store (EmbeddingStore)
    train_toy_run(root, "fused-id", root / "runs/fid", epochs=3)
    raw = ring_vectors(k=7, n_items=48)                       # {"ring:image": ..., "ring:llm_text": ...}
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clip4rec.config import EncodeConfig, EngineConfig
from clip4rec.encode.encoders.base import Encoder
from clip4rec.encode.images import ImagePrep

FREQS = 4  # Fourier frequencies: vectors have 2 * FREQS dims


def _fourier(position: np.ndarray, n_items: int, phase: float = 0.0) -> np.ndarray:
    angle = 2 * np.pi * np.asarray(position, np.float64)[:, None] * np.arange(1, FREQS + 1)[None, :] / n_items
    return np.concatenate([np.cos(angle + phase), np.sin(angle + phase)], 1).astype(np.float32)


class RingEncoder(Encoder):
    """Deterministic stand-in encoder: poster hue -> 'image', text 'item k' -> 'llm_text' (Fourier features)."""

    name = "ring"

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.n_items = n_items
        self.image_outputs = {"image": 2 * FREQS}
        self.text_outputs = {"llm_text": 2 * FREQS}
        self.text_fields = ("text",)
        self.image_prep = ImagePrep(size=(16, 16), mode="squash", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.note = "toy ring encoder (tests/benchmarks), not a real model"

    def identity(self) -> dict[str, Any]:
        return {"source": "tests.support.toy", "n_items": self.n_items}

    def encode_images(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        rgb = pixels.mean(axis=(2, 3))  # [B, 3] in 0..1; black/white text does not move the hue
        hue = np.array([colorsys.rgb_to_hsv(*map(float, c))[0] for c in rgb])
        return {"image": _fourier(hue * self.n_items, self.n_items, phase=0.3)}

    def encode_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        return {"llm_text": _fourier(np.array([float(t.split()[-1]) for t in texts]), self.n_items)}


def ring_vectors(k: float, n_items: int) -> dict[str, list[float]]:
    """The raw encoder vectors a brand-new item at ring position k gets (what `clip4rec encode` would store)."""
    return {"ring:image": _fourier(np.array([k]), n_items, phase=0.3)[0].tolist(),
            "ring:llm_text": _fourier(np.array([k]), n_items)[0].tolist()}


def poster(path: Path, k: int, n_items: int, size: int = 96) -> None:
    from PIL import Image, ImageDraw
    r, g, b = colorsys.hsv_to_rgb(k / n_items, 0.65, 0.9)
    img = Image.new("RGB", (size, int(size * 1.4)), (int(r * 255), int(g * 255), int(b * 255)))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, size // 2, size, size // 2 + 24], fill=(255, 255, 255))
    draw.text((8, size // 2 + 6), f"item {k}", fill=(0, 0, 0))
    img.save(path)


def build_toy(root: str | Path, n_items: int = 48, n_users: int = 150, seed: int = 1, images: bool = True,
              min_len: int = 6, max_len: int = 12) -> Path:
    """Write root/ds (a Dataset with posters under root/ds/posters) and root/store (RingEncoder vectors)."""
    from clip4rec import Dataset
    from clip4rec.encode.pipeline import encode_dataset

    root = Path(root)
    ds = root / "ds"
    (ds / "posters").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        pos, length = int(rng.integers(n_items)), int(rng.integers(min_len, max_len + 1))
        for t in range(length):
            rows.append((f"u{u}", f"i{pos % n_items}", t))
            pos += 1 if rng.random() < 0.9 else 2
    image_col = []
    for k in range(n_items):
        if images:
            poster(ds / "posters" / f"i{k}.png", k, n_items)
            image_col.append(f"posters/i{k}.png")
        else:
            image_col.append(None)
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(n_items)], "title": [f"Item {k}" for k in range(n_items)],
                          "text": [f"item {k}" for k in range(n_items)], "image": image_col})
    Dataset(items, pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), {"source": "generated ring"}).save(ds)
    encode_dataset(ds, RingEncoder(n_items), root / "store", EncodeConfig(engine=EngineConfig(workers=1)),
                   progress=False, log=lambda m: None)
    return root


def toy_config(variant: str, store: str | Path, epochs: int = 3, hidden: int = 32, max_len: int = 8,
               seed: int = 3, split: str = "loo"):
    from clip4rec.config import Config
    cfg = Config(seed=seed)
    cfg.split.kind = split
    if split == "cold":
        cfg.split.cold_fraction = 0.2
    cfg.model.variant, cfg.model.stores = variant, ([str(store)] if variant != "id" else [])
    cfg.model.hidden, cfg.model.dropout, cfg.model.max_len = hidden, 0.1, max_len
    cfg.model.layers, cfg.model.heads = 1, 2
    cfg.train.max_epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.patience = epochs, 32, 5e-3, 100
    cfg.eval.n_boot, cfg.eval.run_depth = 0, 20
    return cfg


def train_toy_run(root: str | Path, variant: str, out: str | Path, **options: Any) -> Path:
    """Train a tiny Run on the toy catalog (a few seconds) and return its directory."""
    from clip4rec.train.run import train
    root = Path(root)
    train(root / "ds", out, toy_config(variant, root / "store", **options), progress=False)
    return Path(out)
