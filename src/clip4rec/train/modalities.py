"""Which content modalities a variant reads when the user names none: chosen from what the stores hold.

Each variant has slots (text: one text slot; fused: an image slot and a text slot); each slot lists the
modality names it accepts, best first. The text slot prefers the item-LLM's `llm_text` and falls back to the
sentence encoder's `text`, so a store made by `clip4rec encode --encoder lite` alone trains every variant.
"""

from __future__ import annotations

from collections.abc import Sequence

from clip4rec.encode.store import EmbeddingStore

IMAGE_SLOT = ("image",)
TEXT_SLOT = ("llm_text", "text")
SLOTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "text": (TEXT_SLOT,), "image": (IMAGE_SLOT,), "fused": (IMAGE_SLOT, TEXT_SLOT),
    "fused-id": (IMAGE_SLOT, TEXT_SLOT), "content-knn": (("text",),)}


class StoreDefault(list):
    """A variant's default modality list: reads as the first choice of each slot (what older code expects),
    and carries the slots so that `train.run.load_modalities` can fall back to what the stores hold."""

    def __init__(self, slots: tuple[tuple[str, ...], ...]):
        super().__init__(slot[0] for slot in slots)
        self.slots = slots


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
