"""Safe image decoding with PIL + numpy (no torchvision).

``load_image(path, prep)`` never raises for bad input: it returns ``(array, None)`` with a uint8 HxWx3 array
already resized/cropped for the encoder, or ``(None, reason)`` where reason is a short string that the pipeline
counts and lists (``missing``, ``empty file``, ``not an image``, ``truncated or corrupt``, ``too small``,
``too large``). Handled on the way: EXIF orientation, CMYK / palette / greyscale / 16-bit modes, transparency
(composited on white), and a decompression-bomb guard (pixel count checked from the header before decoding,
PIL's own DecompressionBombError turned into a reason).

Everything here is picklable and torch-free so that decode workers (threads or processes) stay light.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000   # 8000x8000: more than any catalog image needs; bigger is refused
DEFAULT_MIN_SIDE = 4              # a 1x1 (or 3x3) "image" carries no content: masked, reported


@dataclass(frozen=True)
class ImagePrep:
    """How an encoder wants its pixels: output size and resize mode, plus normalisation (applied later)."""

    size: tuple[int, int] = (224, 224)          # (height, width) of the array handed to the model
    mode: str = "squash"                        # "squash": resize whole image; "crop": shortest side + centre crop
    short_side: int | None = None               # crop mode: shortest side resized to this (default min(size))
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = int(Image.Resampling.BICUBIC)
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE

    def normalize(self, batch_u8: np.ndarray) -> np.ndarray:
        """uint8 [B,H,W,3] -> float32 [B,3,H,W] normalised with mean/std."""
        x = batch_u8.astype(np.float32) * (1.0 / 255.0)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def file_hash(path: str | os.PathLike[str] | None) -> bytes:
    """sha256 of the file's bytes (b'' marker digest for a missing/unreadable file)."""
    h = hashlib.sha256(b"image\0")
    if path is None:
        h.update(b"<none>")
        return h.digest()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)
    except OSError as err:
        h.update(f"<unreadable:{type(err).__name__}>".encode())
    return h.digest()


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white (not black), CMYK converted by PIL."""
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        im = Image.fromarray((arr / (hi or 1.0) * 255.0).clip(0, 255).astype(np.uint8), "L")
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
        im = Image.fromarray(((arr - lo) / ((hi - lo) or 1.0) * 255.0).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def resize(im: Image.Image, prep: ImagePrep) -> Image.Image:
    h, w = prep.size
    if prep.mode == "squash":
        return im.resize((w, h), resample=prep.resample)
    if prep.mode == "crop":  # CLIP-style: shortest side to target, then centre crop
        short = prep.short_side or min(h, w)
        iw, ih = im.size
        scale = short / min(iw, ih)
        nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
        im = im.resize((nw, nh), resample=prep.resample)
        left, top = (nw - w) // 2, (nh - h) // 2
        return im.crop((left, top, left + w, top + h))
    raise ValueError(f"unknown resize mode {prep.mode!r}")


def load_image(path: str | os.PathLike[str] | None, prep: ImagePrep) -> tuple[np.ndarray | None, str | None]:
    """Decode one image for an encoder; (uint8 HxWx3, None) or (None, reason). Never raises on bad input."""
    if path is None or str(path) == "":
        return None, "missing"
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return None, "missing"
    except OSError as err:
        return None, f"unreadable ({type(err).__name__})"
    if size == 0:
        return None, "empty file"
    try:
        # No warnings.catch_warnings here: it swaps the process-wide filters, so decode threads running side by
        # side undo each other's "error" filter, and whether PIL's bomb warning or our own check refused an
        # image depended on timing (a store's reasons then differed run to run). Our check below decides; PIL's
        # hard stop (DecompressionBombError, above twice its limit) still raises in open().
        with Image.open(p) as im:
            w, h = im.size
            if w * h > prep.max_pixels:
                return None, f"too large ({w}x{h} > {prep.max_pixels} pixels; decompression-bomb guard)"
            if min(w, h) < prep.min_side:
                return None, f"too small ({w}x{h})"
            if im.format == "JPEG" and prep.mode == "squash":
                # decode a cheaper scaled JPEG when the source is much bigger than needed
                im.draft("RGB", (prep.size[1] * 2, prep.size[0] * 2))
            im.load()
            im = ImageOps.exif_transpose(im)
            im = to_rgb(im)
            im = resize(im, prep)
            arr = np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError as err:
        return None, f"too large (decompression-bomb guard: {err})"[:200]
    except UnidentifiedImageError:
        return None, "not an image"
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated streams, broken headers, ...
        return None, f"truncated or corrupt ({str(err)[:80]})"
    if arr.shape != (prep.size[0], prep.size[1], 3):
        return None, f"unexpected decoded shape {arr.shape}"
    return arr, None
