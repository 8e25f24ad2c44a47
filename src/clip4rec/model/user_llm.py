"""User tower on a pretrained small LM: SmolLM2-135M, first N layers, fed item vectors via `inputs_embeds`.

Lite-LLM4Rec's point: the LLM reads item *vectors* (no item text tokens, no generative decoding), so a
sequence of 50 items costs 50 positions. An adapter maps item space -> LM width and back. The LM's weights
are trained fully, frozen, or through LoRA on the attention projections (the default: small and stable).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """y = W x + (alpha / r) * B A x, with W frozen and B initialised to zero (starts as the pretrained layer)."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale


def load_smollm2_layers(n_layers: int) -> nn.Module:
    """The first `n_layers` decoder layers of SmolLM2-135M (from the offline GGUF, de-quantised and cached)."""
    from transformers import AutoConfig, AutoModel

    from clip4rec.encode.encoders.item_llm import dequantised_dir, find_gguf

    folder, _ = dequantised_dir(find_gguf())
    config = AutoConfig.from_pretrained(folder)
    if n_layers > config.num_hidden_layers:
        raise ValueError(f"SmolLM2-135M has {config.num_hidden_layers} layers; asked for {n_layers}")
    config.num_hidden_layers = n_layers
    from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the dropped upper layers are reported as "unexpected" keys: expected here
    try:
        model = AutoModel.from_pretrained(folder, config=config)
    finally:
        hf_logging.set_verbosity(verbosity)
    # Items arrive as vectors (inputs_embeds): the 49k-token embedding table is never read, so drop it.
    model.embed_tokens = nn.Embedding(1, config.hidden_size)
    return model


class SmolLMTower(nn.Module):
    def __init__(self, hidden: int, n_layers: int = 2, max_len: int = 50, train_mode: str = "lora",
                 lora_rank: int = 8, dropout: float = 0.1, llm: nn.Module | None = None):
        super().__init__()
        self.max_len = max_len
        self.llm = llm if llm is not None else load_smollm2_layers(n_layers)
        width = self.llm.config.hidden_size
        self.adapter_in = nn.Sequential(nn.Linear(hidden, width), nn.Dropout(dropout))
        self.adapter_out = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.LayerNorm(hidden))
        if train_mode in ("frozen", "lora"):
            self.llm.requires_grad_(False)
        if train_mode == "lora":
            for layer in self.llm.layers:
                attn = layer.self_attn
                attn.q_proj = LoRALinear(attn.q_proj, lora_rank)
                attn.v_proj = LoRALinear(attn.v_proj, lora_rank)
        elif train_mode not in ("full", "frozen"):
            raise ValueError(f"unknown LLM training mode {train_mode!r}; use full, frozen or lora")

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if inputs.shape[1] > self.max_len:
            raise ValueError(f"sequence length {inputs.shape[1]} exceeds max_len {self.max_len}")
        # Right padding + the LM's own causal mask: real positions never attend to padding.
        out = self.llm(inputs_embeds=self.adapter_in(inputs), attention_mask=mask.long()).last_hidden_state
        return self.adapter_out(out)
