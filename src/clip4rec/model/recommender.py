"""Sequential recommender = item table + user tower; score = user vector · every item vector.

Online cost is one user-tower pass and one matrix-vector product against the precomputed table,
whatever the item side was built from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def pad_right(sequences: Sequence[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Last `max_len` items of each sequence, right-padded with -1; returns (items [B, L], mask [B, L])."""
    clipped = [np.asarray(s[-max_len:], dtype=np.int64) for s in sequences]
    length = max((len(s) for s in clipped), default=1) or 1
    items = torch.full((len(clipped), length), -1, dtype=torch.long)
    for row, seq in enumerate(clipped):
        items[row, : len(seq)] = torch.from_numpy(seq)
    return items, items >= 0


class SequentialRecommender(nn.Module):
    def __init__(self, item_side: nn.Module, tower: nn.Module, max_len: int):
        super().__init__()
        self.item_side, self.tower, self.max_len = item_side, tower, max_len

    def item_table(self) -> torch.Tensor:
        return self.item_side()

    def hidden_states(self, items: torch.Tensor, mask: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        items, mask = items.to(table.device), mask.to(table.device)
        inputs = F.embedding(items.clamp(min=0), table) * mask[..., None]
        return self.tower(inputs, mask)

    def loss(self, items: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
             counted: torch.Tensor | None = None, held_out: torch.Tensor | None = None) -> torch.Tensor:
        """Full-softmax cross-entropy on the next item at every real (or every `counted`) position.

        `held_out` (bool [n_items]) removes items from the softmax: in the cold-start split they do not exist
        at training time, and as never-positive negatives the model would learn to bury them by their content.
        """
        table = self.item_table()
        hidden = self.hidden_states(items, mask, table)
        where = (mask if counted is None else counted).to(table.device)
        logits = hidden[where] @ table.T
        if held_out is not None:
            logits = logits.masked_fill(held_out.to(table.device), float("-inf"))
        return F.cross_entropy(logits, targets.to(table.device)[where])

    @torch.inference_mode()
    def user_vectors(self, histories: Sequence[np.ndarray], table: torch.Tensor | None = None) -> torch.Tensor:
        table = self.item_table() if table is None else table
        items, mask = pad_right(histories, self.max_len)
        hidden = self.hidden_states(items, mask, table)
        last = mask.sum(1) - 1
        return hidden[torch.arange(len(last)), last.to(hidden.device)]

    @torch.inference_mode()
    def score(self, histories: Sequence[np.ndarray], table: torch.Tensor | None = None) -> torch.Tensor:
        table = self.item_table() if table is None else table
        return self.user_vectors(histories, table) @ table.T
