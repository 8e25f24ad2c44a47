"""User tower: a causal transformer over a sequence of item vectors (SASRec-sized, from scratch).

Readable in one sitting, in the spirit of nanoGPT: pre-LayerNorm blocks, fused attention.
A pretrained-LM backbone (SmolLM2) plugs in behind the same interface: (inputs [B, L, H], mask [B, L]) -> [B, L, H].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, length, h = x.shape
        q, k, v = self.qkv(x).split(h, dim=2)
        q, k, v = (t.view(b, length, self.heads, h // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, length, h)))


class Block(nn.Module):
    """Pre-LN (GPT-2, nanoGPT: normalise, transform, add) or post-LN (the original Transformer, BERT and
    SASRec/RecBole: transform, add, normalise)."""

    def __init__(self, hidden: int, heads: int, dropout: float, post_norm: bool = False):
        super().__init__()
        self.post_norm = post_norm
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = SelfAttention(hidden, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            x = self.ln1(x + self.attn(x, attn_mask))
            return self.ln2(x + self.mlp(x))
        x = x + self.attn(self.ln1(x), attn_mask)
        return x + self.mlp(self.ln2(x))


def _init_weights(module: nn.Module) -> None:
    # Small normal init (as SASRec/BERT/GPT-2): torch's default N(0, 1) position embeddings would drown
    # the 0.02-scale item vectors before the first LayerNorm.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class CausalTransformer(nn.Module):
    """Right-padded sequences; position 0 is the oldest item of the window."""

    def __init__(self, hidden: int = 64, layers: int = 2, heads: int = 2, dropout: float = 0.5, max_len: int = 50,
                 post_norm: bool = False):
        super().__init__()
        self.max_len = max_len
        self.pos = nn.Embedding(max_len, hidden)
        self.in_norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout, post_norm) for _ in range(layers))
        # Post-LN blocks already end normalised; pre-LN needs a final LayerNorm (as GPT-2).
        self.out_norm = nn.Identity() if post_norm else nn.LayerNorm(hidden)
        self.apply(_init_weights)

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, _ = inputs.shape
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        positions = torch.arange(length, device=inputs.device)
        x = self.drop(self.in_norm(inputs + self.pos(positions)))
        causal = torch.ones(length, length, dtype=torch.bool, device=inputs.device).tril()
        # Padded keys are masked out; a padded query still sees position 0, so no row is all -inf (NaN-free).
        attn_mask = (causal[None] & mask[:, None, :])[:, None]
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.out_norm(x)
