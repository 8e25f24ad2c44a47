"""Item side: the table of item vectors that every user vector is scored against.

`id` variant: a learned ID embedding per item. Content variants (Stage 2) build the table from stored
encoder vectors through a fusion module; both expose `forward() -> [n_items, hidden]`.
"""

from __future__ import annotations

import torch
from torch import nn


class IdItemTable(nn.Module):
    def __init__(self, n_items: int, hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(n_items, hidden)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self) -> torch.Tensor:
        return self.embedding.weight
