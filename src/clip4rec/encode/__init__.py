"""Stage 1: offline, frozen item encoding into an EmbeddingStore.

Python API (the CLI is a thin layer over it)::

    from clip4rec.encode import encode_dataset, EmbeddingStore
    report = encode_dataset(dataset_or_dir, encoder="lite", out="artifacts/store")   # or "clip", "item-llm", "auto"
    report = encode_dataset(ds, "lite", "store", EncodeConfig(engine=EngineConfig(name="ray", address="auto")))
                                                      # same store, on a Ray cluster (clip4rec.config's settings)
    store = EmbeddingStore.load("artifacts/store")
    ids, vecs, mask = store.vectors("image")          # float32 [n,d], bool mask [n] (False: no usable image)
    ids, vecs, mask = store.vectors("text")
    ids, vecs, mask = store.vectors("llm_text")       # item-llm (SmolLM2-135M) text vectors
    ids, img, txt, both = store.shared()              # image & text in one space (CLIP; lite via learned heads)

Encoders (``clip4rec.encode.encoders``): ``clip`` (real CLIP via transformers), ``lite`` (EfficientNet-Lite0 +
MiniLM, a stand-in for CLIP, NOT CLIP), ``item-llm`` (SmolLM2-135M pooled hidden state of the item text),
``auto`` (clip when its weights are available offline, else lite, and it says so).
Also: ``clip4rec.encode.mismatch`` (image/text mismatch scores, contact sheet, swap-injection AUC) and
``clip4rec.encode.similar`` (nearest items by image, text or both).

Imports are lazy so that ``import clip4rec.encode`` does not load torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["encode_dataset", "EmbeddingStore", "load_encoder", "available_encoders", "similar_items",
           "mismatch_scores"]


def __getattr__(name: str) -> Any:
    if name == "encode_dataset":
        from clip4rec.encode.pipeline import encode_dataset
        return encode_dataset
    if name == "EmbeddingStore":
        from clip4rec.encode.store import EmbeddingStore
        return EmbeddingStore
    if name in ("load_encoder", "available_encoders"):
        from clip4rec.encode import encoders
        return getattr(encoders, name)
    if name == "similar_items":
        from clip4rec.encode.similar import similar_items
        return similar_items
    if name == "mismatch_scores":
        from clip4rec.encode.mismatch import mismatch_scores
        return mismatch_scores
    raise AttributeError(name)
