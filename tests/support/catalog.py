"""Helpers for tests and examples: a tiny randomly initialised CLIP saved like a real one, and a small
synthetic catalog (with every kind of bad input) written as a clip4rec Dataset. No network, seconds to build."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def make_tiny_clip(folder: str | os.PathLike[str], seed: int = 0, image_size: int = 32) -> Path:
    """A real ``CLIPModel`` (tiny, random weights) + CLIP tokenizer + image processor, via save_pretrained."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor  # transformers >= 5 without torchvision
    except ImportError:  # pragma: no cover - older transformers
        from transformers import CLIPImageProcessor as ImageProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    merges: list[str] = []
    try:
        tok = CLIPTokenizer(vocab=vocab, merges=merges)
    except TypeError:  # pragma: no cover - transformers < 5 wants files
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\n")
        tok = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    improc = ImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=improc, tokenizer=tok).save_pretrained(folder)
    return folder


def _poster(rng: np.random.Generator, w: int = 46, h: int = 69) -> "Any":
    from PIL import Image
    base = rng.integers(0, 255, 3)
    arr = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


WORDS = ("space war robot love story family comedy horror ghost detective crime city night heist western desert "
         "ocean ship music dance school friends dragon magic king queen prison escape").split()


def make_catalog(root: str | os.PathLike[str], n: int = 24, seed: int = 0, bad: bool = True) -> Any:
    """A Dataset of ``n`` good items (JPEG posters + short texts); with ``bad=True`` also items with each kind of
    bad input. Returns the saved Dataset. Images live in ``root/images``; the Dataset in ``root/dataset``."""
    import pandas as pd

    from clip4rec.data.dataset import Dataset

    root = Path(root)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        path = img_dir / f"{i}.jpg"
        _poster(rng).save(path, quality=90)
        words = " ".join(rng.choice(WORDS, 8))
        rows.append({"item_id": f"m{i}", "title": f"Movie {i}", "text": f"A film about {words}.",
                     "image": str(path), "genres": "Action|Comedy" if i % 2 else "Drama"})
    if bad:
        bad_rows = _bad_inputs(img_dir, rng)
        rows += bad_rows
    items = pd.DataFrame(rows)
    inter = pd.DataFrame({"user_id": ["u1"] * len(rows), "item_id": [r["item_id"] for r in rows],
                          "timestamp": list(range(len(rows)))})
    ds = Dataset(items, inter, meta={"source": "tests.support.catalog.make_catalog"})
    ds.save(root / "dataset")
    return ds


BAD_IMAGE_REASONS = {
    "b_missing": "missing",
    "b_noimage": "missing",
    "b_empty": "empty file",
    "b_truncated": "truncated or corrupt",
    "b_notimage": "not an image",
    "b_1x1": "too small",
    "b_bomb": "too large",
}


def _bad_inputs(img_dir: Path, rng: np.random.Generator) -> list[dict[str, Any]]:
    from PIL import Image

    def row(item_id: str, image: str | None, text: Any = "An ordinary film about a heist.") -> dict[str, Any]:
        return {"item_id": item_id, "title": item_id, "text": text, "image": image, "genres": "Crime"}

    out = [row("b_missing", str(img_dir / "does-not-exist.jpg")), row("b_noimage", None)]
    (img_dir / "empty.jpg").write_bytes(b"")
    out.append(row("b_empty", str(img_dir / "empty.jpg")))
    buf = img_dir / "full.jpg"
    _poster(rng, 200, 300).save(buf, quality=95)
    data = buf.read_bytes()
    (img_dir / "truncated.jpg").write_bytes(data[: len(data) // 3])
    out.append(row("b_truncated", str(img_dir / "truncated.jpg")))
    (img_dir / "notimage.jpg").write_text("<html>this is not a JPEG</html>")
    out.append(row("b_notimage", str(img_dir / "notimage.jpg")))
    Image.new("RGB", (1, 1), (255, 0, 0)).save(img_dir / "one.png")
    out.append(row("b_1x1", str(img_dir / "one.png")))
    Image.new("1", (12000, 12000)).save(img_dir / "bomb.png")  # 144 Mpx, a few KB on disk
    out.append(row("b_bomb", str(img_dir / "bomb.png")))
    # usable but unusual images
    Image.new("CMYK", (40, 60), (0, 255, 255, 0)).save(img_dir / "cmyk.jpg")
    out.append(row("g_cmyk", str(img_dir / "cmyk.jpg")))
    Image.new("RGBA", (40, 60), (255, 0, 0, 0)).save(img_dir / "alpha.png")
    out.append(row("g_alpha", str(img_dir / "alpha.png")))
    Image.new("RGB", (40, 60), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE).save(img_dir / "palette.png")
    out.append(row("g_palette", str(img_dir / "palette.png")))
    # text problems (images fine)
    _poster(rng).save(img_dir / "t.jpg")
    out.append(row("t_empty", str(img_dir / "t.jpg"), text="   "))
    out[-1]["title"] = None
    out.append(row("t_html", str(img_dir / "t.jpg"), text="Tom &amp; Jerry&#39;s <b>big</b> caf&eacute; night"))
    out.append(row("t_bytes", str(img_dir / "t.jpg"), text="caf\u00e9 na\u00efve\x00 r\u00e9sum\u00e9\x07"))
    return out
