"""The one interface every frozen item encoder implements."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from clip4rec.encode.images import ImagePrep


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


_DIGESTS: dict[tuple, str] = {}


def digest_files(paths: list[str | os.PathLike[str]], quick: bool = False) -> str:
    """sha256 over weight files (name + bytes); ``quick`` hashes name + size + first/last MiB only.
    Memoised per (path, size, mtime) so that recording the weights identity costs one read per process."""
    key = (quick, *sorted((str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths))
    if key not in _DIGESTS:
        _DIGESTS[key] = _digest_files(paths, quick)
    return _DIGESTS[key]


def _digest_files(paths: list[str | os.PathLike[str]], quick: bool = False) -> str:
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(path.name.encode())
        size = path.stat().st_size
        h.update(str(size).encode())
        with open(path, "rb") as handle:
            if quick and size > (4 << 20):
                h.update(handle.read(1 << 20))
                handle.seek(size - (1 << 20))
                h.update(handle.read(1 << 20))
            else:
                for chunk in iter(lambda: handle.read(1 << 22), b""):
                    h.update(chunk)
    return h.hexdigest()


def package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def masked_mean(hidden, attention_mask):
    """Mean of token states over real (non-padding) tokens: [B,T,D], [B,T] -> [B,D]."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
