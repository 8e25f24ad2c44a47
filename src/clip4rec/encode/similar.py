"""Nearest items in a store by image, text or both ("items that look alike"), exact cosine top-k (the ranking
kernel's: ties to the item stored first, as evaluation and serving break them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from clip4rec.encode.store import EmbeddingStore, StoreError
from clip4rec.ranking import top_k


def _l2(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def _space(store: EmbeddingStore, by: str, encoder: str | None) -> tuple[list[str], np.ndarray, np.ndarray, str]:
    """(ids, L2-normalised vectors, usable mask, description) for one way of comparing items."""
    if by in ("image", "text"):
        # raw modality of the chosen (or only) encoder that has it: raw image features are best for "looks alike"
        ids, v, m = store.vectors(by, encoder)
        return ids, _l2(v.astype(np.float32)), m, by
    if by == "fused":
        ids, img, txt, both = store.shared(encoder)
        fused = _l2(img + txt)
        return ids, fused, both, "fused (image + text in the shared space)"
    if by in store.modalities(encoder):
        ids, v, m = store.vectors(by, encoder)
        return ids, _l2(v.astype(np.float32)), m, by
    raise StoreError(f"--by must be image, text, fused or a modality of the store {store.modalities(encoder)}")


def similar_items(store: EmbeddingStore | str, item_id: str, by: str = "image", k: int = 10,
                  encoder: str | None = None) -> list[dict[str, Any]]:
    """The k items most similar to ``item_id`` (itself excluded), best first: [{item_id, score}]."""
    if not isinstance(store, EmbeddingStore):
        store = EmbeddingStore.load(store)
    ids, vecs, mask, _ = _space(store, by, encoder)
    try:
        q = ids.index(str(item_id))
    except ValueError:
        raise StoreError(f"item {item_id!r} is not in the store") from None
    if not mask[q]:
        try:
            why = store.bad_inputs(encoder).get("image" if by == "image" else "text", {}).get(str(item_id))
        except StoreError:
            why = None
        raise StoreError(f"item {item_id!r} has no usable {by} vector" + (f" ({why})" if why else ""))
    scores = vecs @ vecs[q]
    scores[~mask] = -np.inf
    scores[q] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if not k:
        return []
    top = top_k(torch.from_numpy(scores)[None], k)[0][0].tolist()
    return [{"item_id": ids[i], "score": float(scores[i])} for i in top]
