"""Registry of frozen item encoders, selected by name (or a local CLIP folder), like open_clip / HF Auto*.

    from clip4rec.encode.encoders import load_encoder, available_encoders
    enc = load_encoder("lite")                 # EfficientNet-Lite0 + all-MiniLM-L6-v2 (a stand-in for CLIP)
    enc = load_encoder("clip", model="openai/clip-vit-base-patch32")   # hub id or local folder
    enc = load_encoder("/path/to/clip-folder") # a folder with a CLIP config.json -> clip
    enc = load_encoder("item-llm")             # SmolLM2-135M-Instruct, pooled hidden state of the item text
    enc = load_encoder("auto")                 # clip if its weights are available offline/locally, else lite

Registering a new encoder: ``@register("name")`` on a factory ``(**options) -> Encoder``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from clip4rec.encode.encoders.base import (DEFAULT_CLIP, REGISTRY, Encoder, EncoderUnavailable, is_clip_folder,
                                           register)


def available_encoders() -> list[str]:
    _load_builtin()
    return sorted(REGISTRY) + ["auto"]


def _load_builtin() -> None:
    from clip4rec.encode.encoders import clip, item_llm, lite  # noqa: F401  (registration side effects)


def resolve_auto(model: str | None = None, log: Callable[[str], None] | None = None) -> tuple[str, dict[str, Any], str]:
    """Pick ``clip`` when its weights can be had without waiting on a network, else ``lite``.

    Returns (encoder name, options, reason). Checked quickly: a local folder, else the HF cache with
    ``local_files_only=True`` (no network call at all, so it cannot hang offline).
    """
    from clip4rec.encode.encoders.clip import clip_weights_available

    model = model or os.environ.get("CLIP4REC_CLIP_MODEL") or DEFAULT_CLIP
    ok, where = clip_weights_available(model)
    if ok:
        name, opts, reason = "clip", {"model": model}, f"auto -> clip: weights for {model} found at {where}"
    else:
        name, opts, reason = "lite", {}, (f"auto -> lite: CLIP weights for {model!r} are not available offline "
                                          f"({where}); using the lite stand-in (EfficientNet-Lite0 + MiniLM, "
                                          f"NOT CLIP)")
    (log or (lambda m: print(m, file=sys.stderr)))("*** " + reason + " ***")
    return name, opts, reason


def load_encoder(name: str, **options: Any) -> Encoder:
    """An encoder by registry name, ``auto``, or a local folder holding a CLIP model."""
    _load_builtin()
    reason = None
    if name == "auto":
        name, extra, reason = resolve_auto(options.pop("model", None))
        options = {**extra, **options}
    elif name not in REGISTRY and is_clip_folder(name):
        name, options = "clip", {**options, "model": name}
    if name not in REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; choose one of {available_encoders()} or a local CLIP folder")
    enc = REGISTRY[name](**options)
    if reason:
        enc.note = (enc.note + " " if enc.note else "") + reason
        enc.auto_reason = reason  # type: ignore[attr-defined]
    return enc


__all__ = ["Encoder", "EncoderUnavailable", "register", "load_encoder", "available_encoders", "resolve_auto",
           "DEFAULT_CLIP", "is_clip_folder"]
