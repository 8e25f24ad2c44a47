"""The content tables a model is built from: read from the embedding stores (stage 1's artifact), aligned to the
catalog's item order, and which modalities a variant reads when the user names none.

Each variant has slots (text: one text slot; fused: an image slot and a text slot); each slot lists the
modality names it accepts, best first. The text slot prefers the sentence encoder's `text` (MiniLM in `lite`) and
falls back to the item-LLM's `llm_text`: on ML-100K validation the training-free content-knn ranks better on MiniLM
text (NDCG@10 0.032) than on the SmolLM2 mean-pooled vector (0.020).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clip4rec.encode.store import EmbeddingStore

# item_id-aligned (vectors [n_items, d], usable mask [n_items]) per "encoder:name" modality
Content = dict[str, tuple[np.ndarray, np.ndarray]]

IMAGE_SLOT = ("image",)
TEXT_SLOT = ("text", "llm_text")
SLOTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "text": (TEXT_SLOT,), "image": (IMAGE_SLOT,), "fused": (IMAGE_SLOT, TEXT_SLOT),
    "fused-id": (IMAGE_SLOT, TEXT_SLOT), "content-knn": (("text",),)}


class StoreDefault(list):
    """A variant's default modality list: reads as the first choice of each slot (what older code expects),
    and carries the slots so that `load_modalities` can fall back to what the stores hold."""

    def __init__(self, slots: tuple[tuple[str, ...], ...]):
        super().__init__(slot[0] for slot in slots)
        self.slots = slots


# Each reads as its first choices (["image", "text"] for fused); load_modalities falls back per slot to what
# the stores hold (text: the sentence encoder's text, else the item-LLM's llm_text).
DEFAULT_MODALITIES = {variant: StoreDefault(slots) for variant, slots in SLOTS.items()}


def available_modalities(stores: Sequence[EmbeddingStore]) -> list[str]:
    """Every stored modality as the `--modality` value that names it ("encoder:name")."""
    return [f"{enc}:{name}" for st in stores for enc in st.encoders for name in st.modalities(enc)]


def find_modality(stores: Sequence[EmbeddingStore], spec: str) -> list[tuple[EmbeddingStore, str]]:
    """(store, encoder) pairs holding `spec` ("name" or "encoder:name")."""
    encoder, _, name = spec.rpartition(":")
    return [(st, enc) for st in stores for enc in st.encoders
            if (not encoder or enc == encoder) and name in st.modalities(enc)]


def missing_modality_error(spec: str, stores: Sequence[EmbeddingStore], variant: str | None = None) -> ValueError:
    paths = [str(st.root) for st in stores]
    have = available_modalities(stores)
    options = " ".join(f"--modality {m}" for m in have) or "(none: the stores are empty)"
    what = f"variant {variant!r} needs modality {spec!r}" if variant else f"modality {spec!r} is in none of the stores"
    return ValueError(f"{what}, which is in none of the stores {paths}; they hold: {options}")


def resolve_slots(slots: Sequence[Sequence[str]], stores: Sequence[EmbeddingStore],
                  variant: str | None = None) -> list[str]:
    """One "encoder:name" per slot: the first accepted name found in the stores (in exactly one encoder)."""
    chosen: list[str] = []
    for slot in slots:
        for name in slot:
            found = find_modality(stores, name)
            if len(found) > 1:
                raise ValueError(f"modality {name!r} is in several stores/encoders ({[e for _, e in found]}); "
                                 f"choose one with --modality ENCODER:{name}")
            if found:
                chosen.append(f"{found[0][1]}:{name}")
                break
        else:
            raise missing_modality_error(" or ".join(slot), stores, variant)
    return chosen


def default_modalities(variant: str, store_paths: Sequence[str]) -> list[str]:
    """The modalities `variant` reads from these stores when none are named ([] for `id`)."""
    if variant not in SLOTS:
        return []
    if not store_paths:
        raise ValueError(f"variant {variant!r} reads content vectors: pass --store (made by `clip4rec encode`)")
    return resolve_slots(SLOTS[variant], [EmbeddingStore.load(p) for p in store_paths], variant)


def load_modalities(stores: Sequence[str], wanted: Sequence[str], item_ids: Sequence[str]) -> Content:
    """Content tables aligned to the catalog's item order; items a store lacks get mask False (counted).

    `wanted` as DEFAULT_MODALITIES gives it (a StoreDefault) is resolved against what the stores hold; named
    modalities must be there, else the error lists the `--modality` values that would work."""
    if not stores:
        raise ValueError(f"content modalities {list(wanted)} need --store (run `clip4rec encode` first)")
    opened = [EmbeddingStore.load(path) for path in stores]
    if isinstance(wanted, StoreDefault):
        wanted = resolve_slots(wanted.slots, opened)
    out: Content = {}
    for spec in wanted:
        found = find_modality(opened, spec)
        if not found:
            raise missing_modality_error(spec, opened)
        name = spec.rpartition(":")[2]
        if len(found) > 1:
            raise ValueError(f"modality {spec!r} is in several stores/encoders "
                             f"({[e for _, e in found]}); write it as ENCODER:{name}")
        store, enc = found[0]
        ids, vectors, mask = store.vectors(name, encoder=enc)
        row = {item: i for i, item in enumerate(ids)}
        index = np.array([row.get(item, -1) for item in item_ids])
        table = np.zeros((len(item_ids), vectors.shape[1]), np.float32)
        usable = np.zeros(len(item_ids), bool)
        present = index >= 0
        table[present] = vectors[index[present]]
        usable[present] = mask[index[present]]
        out[f"{enc}:{name}"] = (table, usable)
    return out


def content_for(variant: str, stores: Sequence[str], modalities: Sequence[str],
                item_ids: Sequence[str]) -> Content | None:
    """The content tables a variant is built from (None for `id` and `pop`, which read none)."""
    if variant not in SLOTS:
        return None
    return load_modalities(stores, modalities or DEFAULT_MODALITIES[variant], item_ids)
