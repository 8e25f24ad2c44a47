"""What a store's ``manifest.json`` records per encoder, as a typed entry; and what identifies an encoder's vectors.

The entry's fields are written in this order and dumped as they are, so the manifest reads the same as before
it was typed (reports quote it). Readers still take the manifest as plain JSON (``store.read_manifest``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from clip4rec import machine
from clip4rec.encode.encoders.base import Encoder
from clip4rec.encode.store import FORMAT_VERSION


# The libraries an encoder's vectors depend on, recorded in the manifest beside the encoder's identity.
ENCODER_LIBRARIES = ("clip4rec", "torch", "transformers", "numpy", "pillow", "safetensors", "gguf")


def versions() -> dict[str, str | None]:
    return machine.versions(ENCODER_LIBRARIES)


def encoder_fingerprint(enc: Encoder, text_fields: tuple[str, ...] | None = None) -> str:
    """What, besides an item's input, determines its vectors. Text fields change only the text rows: the
    per-kind fingerprint is derived from this one (image rows do not depend on ``text_fields``)."""
    blob = json.dumps({"name": enc.name, "identity": enc.identity(), "settings": enc.settings(),
                       "format": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def kind_fingerprint(fingerprint: str, kind: str, text_fields: tuple[str, ...]) -> str:
    """Image rows depend on the encoder alone; text rows also on which item columns make the text."""
    tail = "image" if kind == "image" else f"text:{json.dumps(list(text_fields))}"
    return hashlib.sha256(f"{fingerprint}:{tail}".encode()).hexdigest()


def align_fingerprint(fingerprint: str, text_fields: tuple[str, ...]) -> str:
    return hashlib.sha256(f"{fingerprint}:align:{json.dumps(list(text_fields))}".encode()).hexdigest()


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KindCounts(_Entry):
    usable: int
    bad: int


class LastRun(_Entry):
    # extra: the engine's own description (engine name, workers, decode / Ray address, actors, ...)
    model_config = ConfigDict(extra="allow")
    encoded: dict[str, int]
    reused: dict[str, int]
    items_reencoded: int
    rows_encoded: int
    resumed_shards: dict[str, int]
    wall_s: float
    items_per_s: float
    batch_size: int


class EncoderEntry(_Entry):
    """``manifest["encoders"][name]``: what made this encoder's files, with which settings, from what."""

    encoder: str
    is_clip: bool
    stand_in_for_clip: bool
    note: str
    auto_choice: str | None
    identity: dict[str, Any]
    settings: dict[str, Any]
    fingerprint: str
    text_fields: list[str]
    dims: dict[str, int]                    # modality -> width
    kinds: dict[str, str]                   # modality -> "image" | "text" (what it is computed from)
    files: dict[str, str]                   # modality -> file name in the store
    shared: list[str] | None                # image and text modality in one space (CLIP), if any
    alignment: dict[str, Any] | None        # lite: the alignment heads (align.py)
    items: int
    counts: dict[str, KindCounts]           # per kind: rows with a usable input, rows masked
    bad_inputs: dict[str, dict[str, str]]   # per kind: item id -> why its input was unusable
    duplicate_item_ids: list[str]
    created: str
    updated: str
    versions: dict[str, str | None]
    dataset: str | None
    last_run: LastRun
