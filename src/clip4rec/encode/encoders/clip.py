"""``clip``: a real transformers ``CLIPModel`` from a hub id (default openai/clip-vit-base-patch32) or a folder.

Images are preprocessed with PIL + numpy exactly as ``CLIPImageProcessor`` describes (shortest side to
``size``, centre crop to ``crop_size``, bicubic, rescale 1/255, normalise with its mean/std), read from the
model's own processor config. Outputs ``image`` and ``text`` (projection_dim each, L2-normalised) in CLIP's
shared space, so mismatch scoring needs no training.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import numpy as np

from clip4rec.encode.encoders.base import DEFAULT_CLIP, Encoder, EncoderUnavailable, is_clip_folder, register
from clip4rec.encode.images import ImagePrep
from clip4rec.pretrained import digest_files

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((endpoint, 443), timeout=timeout):
            return True
    except OSError:
        return False


def clip_weights_available(model: str) -> tuple[bool, str]:
    """(available, where): a local CLIP folder, the HF cache (checked without any network), or a reachable hub."""
    if os.path.isdir(model):
        return (True, model) if is_clip_folder(model) else (False, f"{model} has no CLIP config.json")
    try:
        from huggingface_hub import try_to_load_from_cache
        cfg = try_to_load_from_cache(model, "config.json")
        if isinstance(cfg, str):
            for weights in ("model.safetensors", "pytorch_model.bin"):
                if isinstance(try_to_load_from_cache(model, weights), str):
                    return True, str(Path(cfg).parent)
    except Exception:  # noqa: BLE001 - any cache oddity just means "not cached"
        pass
    if _hub_reachable():
        return True, "the Hugging Face hub (reachable)"
    return False, "not in the local HF cache and the hub is not reachable"


class ClipEncoder(Encoder):
    name = "clip"
    is_clip = True

    def __init__(self, model: str = DEFAULT_CLIP, text_fields: tuple[str, ...] | None = None,
                 threads: int | None = None, device: str = "cpu", dtype: str = "float32") -> None:
        super().__init__()
        import torch
        from transformers import AutoTokenizer, CLIPModel

        if threads:
            torch.set_num_threads(threads)
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, not {dtype!r}")
        self._torch = torch
        self.device, self.dtype = torch.device(device), dtype
        self.model_id = str(model)
        local = os.path.isdir(self.model_id)
        ok, where = clip_weights_available(self.model_id)
        if not ok:
            raise EncoderUnavailable(f"CLIP weights {self.model_id!r} unavailable: {where}. Pass a local folder "
                                     f"(save_pretrained output) or use --encoder lite / auto.")
        offline = local or "cache" in where or not _hub_reachable(0.5)
        try:
            self.model = CLIPModel.from_pretrained(self.model_id, local_files_only=offline).eval().requires_grad_(False)
            self.model = self.model.to(self.device, getattr(torch, dtype))
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_id, local_files_only=offline)
        except OSError as err:
            raise EncoderUnavailable(f"could not load CLIP from {self.model_id!r}: {err}") from err
        self.weights_dir = where if not local else self.model_id
        self.image_prep = self._image_prep(offline)
        self.max_text_tokens = int(getattr(self.model.config.text_config, "max_position_embeddings", 77))
        dim = int(self.model.config.projection_dim)
        self.image_outputs = {"image": dim}
        self.text_outputs = {"text": dim}
        self.shared = ("image", "text")
        if text_fields:
            self.text_fields = tuple(text_fields)
        self.note = f"real CLIP ({self.model_id})"

    def _image_prep(self, offline: bool) -> ImagePrep:
        size, crop, mean, std, resample = 224, (224, 224), CLIP_MEAN, CLIP_STD, 3
        try:
            from transformers import AutoImageProcessor
            proc = AutoImageProcessor.from_pretrained(self.model_id, local_files_only=offline)
            s = proc.size
            size = int(s.get("shortest_edge") or s.get("height")) if isinstance(s, dict) else int(s)
            c = proc.crop_size
            crop = (int(c["height"]), int(c["width"])) if isinstance(c, dict) else (int(c), int(c))
            mean, std = tuple(proc.image_mean), tuple(proc.image_std)
            resample = int(getattr(proc, "resample", 3) or 3)
        except Exception:  # noqa: BLE001 - a model without processor config uses CLIP's published defaults
            size = int(self.model.config.vision_config.image_size)
            crop = (size, size)
        return ImagePrep(size=crop, mode="crop", short_side=size, mean=mean, std=std, resample=resample)

    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"model": self.model_id, "is_clip": True}
        files = []
        if os.path.isdir(self.weights_dir):
            files = [p for p in Path(self.weights_dir).iterdir() if p.name in ("model.safetensors", "pytorch_model.bin")]
        if files:
            ident["sha256"] = digest_files(files, quick=True)
        ident["commit"] = getattr(self.model.config, "_commit_hash", None)
        return ident

    def settings(self) -> dict[str, Any]:
        p = self.image_prep
        out = {"crop": list(p.size), "resize": "shortest side + centre crop", "mean": list(p.mean),
               "std": list(p.std), "max_text_tokens": self.max_text_tokens, "normalised": True}
        if self.dtype != "float32":  # half precision changes the vectors (slightly): a store of its own
            out["dtype"] = self.dtype  # (the device does not: cpu and cuda fp32 agree within float noise)
        return out

    @staticmethod
    def _features(out) -> Any:
        # transformers <5 returns the projected tensor; 5.x returns an output whose pooler_output is projected
        return out if hasattr(out, "shape") else out.pooler_output

    def encode_images(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(self.device, getattr(torch, self.dtype))
            feats = self._features(self.model.get_image_features(pixel_values=x))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return {"image": feats.cpu().numpy()}

    def encode_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        torch = self._torch
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_text_tokens,
                               return_tensors="pt")
        with torch.inference_mode():
            feats = self._features(self.model.get_text_features(input_ids=batch["input_ids"].to(self.device),
                                                                attention_mask=batch["attention_mask"].to(self.device)))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return {"text": feats.cpu().numpy()}


@register("clip")
def _clip(**options: Any) -> Encoder:
    return ClipEncoder(**options)
