"""The one interface every frozen item encoder implements, and the registry it is found in by name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from clip4rec.encode.images import ImagePrep
from clip4rec.pretrained import WeightsUnavailable

DEFAULT_CLIP = "openai/clip-vit-base-patch32"


class EncoderUnavailable(WeightsUnavailable):
    """The encoder's weights or packages are not available here; the message says how to get them."""


class Encoder:
    """A frozen encoder: ``eval()``, no gradients, deterministic for a fixed batch.

    Subclasses set ``name``, ``image_outputs`` / ``text_outputs`` (modality names they produce from an image /
    from a text, with dims), ``shared`` (image and text modality that live in one space, if any) and implement
    ``encode_images`` / ``encode_texts``.
    """

    name: ClassVar[str] = "base"
    is_clip: ClassVar[bool] = False          # True only for real CLIP weights
    needs_alignment: ClassVar[bool] = False  # lite: image/text spaces are aligned afterwards by learned heads

    def __init__(self) -> None:
        self.image_outputs: dict[str, int] = {}
        self.text_outputs: dict[str, int] = {}
        self.shared: tuple[str, str] | None = None
        self.image_prep: ImagePrep | None = None
        self.text_fields: tuple[str, ...] = ("title", "text")
        self.note: str = ""

    # ---- what it is -----------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """Weights identity recorded in the store manifest (source and a digest of the weight files)."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Everything besides the weights that changes the vectors (sizes, pooling, truncation)."""
        return {}

    # ---- what it does ---------------------------------------------------------------------------
    def encode_images(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """float32 [B,3,H,W] (already normalised with ``image_prep``) -> {modality: float32 [B,d]}."""
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        """list of B non-empty strings -> {modality: float32 [B,d]}."""
        raise NotImplementedError


Factory = Callable[..., Encoder]
REGISTRY: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """``@register("name")`` on a factory ``(**options) -> Encoder`` makes it loadable by that name."""
    def wrap(factory: Factory) -> Factory:
        REGISTRY[name] = factory
        return factory
    return wrap


def is_clip_folder(path: str | os.PathLike[str]) -> bool:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "clip"
    except (OSError, ValueError):
        return False


def masked_mean(hidden, attention_mask):
    """Mean of token states over real (non-padding) tokens: [B,T,D], [B,T] -> [B,D]."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
