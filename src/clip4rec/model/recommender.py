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
    def __init__(self, item_side: nn.Module, tower: nn.Module, max_len: int, repeat_term: bool = False):
        super().__init__()
        self.item_side, self.tower, self.max_len = item_side, tower, max_len
        if repeat_term:
            # Where seen items are ranked: one learned score for "this item is in the window", so that whether
            # users repeat items is learned from the data (never on ML-100K, often in a shop) instead of being
            # carried by the content term, whose history profile is most like the history's own items.
            self.repeat_bias = nn.Parameter(torch.zeros(()))

    def item_table(self) -> torch.Tensor:
        return self.item_side()

    def item_vectors(self, table: torch.Tensor) -> torch.Tensor:
        """The rows of a scoring table as item vectors (for item-item similarity): without the cold column, a
        score offset (model.cold_floor) that would make every two cold items alike."""
        return table[:, : table.shape[1] - int(getattr(self.item_side, "cold_column", False))]

    def hidden_states(self, items: torch.Tensor, mask: torch.Tensor, table: torch.Tensor,
                      inputs_from: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors at every position: the tower's output, followed by the item side's content profile
        when it has one (ContentIdItems: its knn term). The tower reads `inputs_from` (default: the table's
        first columns, where a content item side keeps the vectors the tower reads)."""
        items, mask, inputs = self._tower_inputs(items, mask, table, inputs_from)
        hidden = self.tower(inputs, mask)
        if getattr(self.item_side, "channel_dims", 0):
            hidden = torch.cat([hidden, self.item_side.profile(items, mask, _content_columns(self.item_side, table))],
                               dim=-1)
        return hidden

    def _tower_inputs(self, items: torch.Tensor, mask: torch.Tensor, table: torch.Tensor,
                      inputs_from: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(items, mask, item vectors the tower reads), on the table's device."""
        items, mask = items.to(table.device), mask.to(table.device)
        if inputs_from is None:
            inputs_from = table[:, : table.shape[1] - getattr(self.item_side, "channel_dims", 0)]
        return items, mask, F.embedding(items.clamp(min=0), inputs_from) * mask[..., None]

    def loss(self, items: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
             counted: torch.Tensor | None = None, held_out: torch.Tensor | None = None,
             exclude_seen: bool = False) -> torch.Tensor:
        """Full-softmax cross-entropy on the next item at every real (or every `counted`) position.

        `held_out` (bool [n_items]) removes items from the softmax: in the cold-start split they do not exist
        at training time, and as never-positive negatives the model would learn to bury them by their content.
        `exclude_seen` trains under the protocol the model is evaluated with when seen items are excluded: each
        position's softmax leaves out the items read so far in its window (never its own target). Without it,
        the items most like the history are the history itself, never a next item on data without repeats,
        and a content-similarity term learns to push similar items down.
        """
        table = self.item_table()
        # While training, a content item side scores some known items as ID-less (DropoutNet); the tower
        # still reads every history item as it will at test time.
        inputs_from = self.item_side.input_table() if hasattr(self.item_side, "input_table") else None
        hidden = self.hidden_states(items, mask, table, inputs_from)
        where = (mask if counted is None else counted).to(table.device)
        logits = hidden[where] @ table.T
        if held_out is not None:
            logits = logits.masked_fill(held_out.to(table.device), float("-inf"))
        wanted = targets.to(table.device)[where]
        if exclude_seen:
            logits = logits.masked_fill(_seen_so_far(items.to(table.device), mask.to(table.device), where, wanted,
                                                     logits.shape[1]), float("-inf"))
        elif hasattr(self, "repeat_bias"):
            seen = _seen_so_far(items.to(table.device), mask.to(table.device), where, None, logits.shape[1])
            logits = logits + self.repeat_bias * seen
        return F.cross_entropy(logits, wanted)

    @torch.inference_mode()
    def user_vectors(self, histories: Sequence[np.ndarray], table: torch.Tensor | None = None,
                     keys_values: torch.Tensor | None = None) -> torch.Tensor:
        """[B, width] user vectors. `keys_values`: the tower's per-item cache for `table`'s rows
        (tower_keys_values), which a tower that has one reads instead of recomputing it per request."""
        table = self.item_table() if table is None else table
        items, mask = pad_right(histories, self.max_len)
        last_hidden = getattr(self.tower, "last_hidden", None)
        if last_hidden is None:
            hidden = self.hidden_states(items, mask, table)
            last = mask.sum(1) - 1
            return hidden[torch.arange(len(last)), last.to(hidden.device)]
        # A tower that can compute its output at the last position alone (SmolLM2: the last layer at one
        # position) does only that: a user vector is all serving and evaluation need.
        items, mask, inputs = self._tower_inputs(items, mask, table)
        if keys_values is None:
            user = last_hidden(inputs, mask)
        else:
            user = last_hidden(inputs, mask, keys_values=F.embedding(items.clamp(min=0), keys_values))
        if getattr(self.item_side, "channel_dims", 0):
            rows = torch.arange(len(items), device=items.device)
            profile = self.item_side.profile(items, mask, _content_columns(self.item_side, table))
            user = torch.cat([user, profile[rows, mask.sum(1) - 1]], dim=-1)
        return user

    def tower_keys_values(self, table: torch.Tensor) -> torch.Tensor | None:
        """[n, c] per-item cache of the tower for the rows of `table` (see SmolLMTower.item_keys_values), or None
        for a tower without one. A row depends on that item's table row alone, so a published item's row is
        this method applied to its table row."""
        cache = getattr(self.tower, "item_keys_values", None)
        if cache is None:
            return None
        return cache(table[:, : table.shape[1] - getattr(self.item_side, "channel_dims", 0)])

    @torch.inference_mode()
    def score(self, histories: Sequence[np.ndarray], table: torch.Tensor | None = None) -> torch.Tensor:
        table = self.item_table() if table is None else table
        return self.with_repeat_term(self.user_vectors(histories, table) @ table.T, histories)

    @torch.no_grad()
    def with_repeat_term(self, scores: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """`scores` [B, n] (contiguous, owned by the caller) with the learned repeat bias added in place at each
        row's window items (its last max_len, what the tower reads and what training marked), once per item;
        unchanged for a model without a repeat term. In place and sparse: serving calls it on every request."""
        if not hasattr(self, "repeat_bias"):
            return scores
        items, mask = pad_right(histories, self.max_len)
        rows = torch.arange(len(items))[:, None].expand_as(items)
        cells = torch.unique(rows[mask] * scores.shape[1] + items[mask]).to(scores.device)
        scores.view(-1).index_put_((cells,), self.repeat_bias.to(scores.dtype), accumulate=True)
        return scores


def _content_columns(item_side: nn.Module, table: torch.Tensor) -> torch.Tensor:
    """The content block of a content item side's table (its last channel_dims columns): for trained items
    the item side's own content, for items published since, theirs."""
    return table[:, table.shape[1] - item_side.channel_dims:].detach()  # frozen content: no gradient to carry


def _seen_so_far(items: torch.Tensor, mask: torch.Tensor, where: torch.Tensor, targets: torch.Tensor | None,
                 n_items: int) -> torch.Tensor:
    """Bool [#where, n_items]: for each counted position (b, t), the items at positions <= t of row b; with
    `targets`, except that position's target (a repeated item stays rankable when seen items are excluded)."""
    length = items.shape[1]
    earlier = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()  # [t, j]: j <= t
    row_of = torch.cumsum(where.flatten(), 0).view_as(where) - 1  # logits row of each counted (b, t)
    b, t, j = (where[:, :, None] & earlier[None] & mask[:, None, :]).nonzero(as_tuple=True)
    seen = torch.zeros(int(where.sum()), n_items, dtype=torch.bool, device=items.device)
    seen[row_of[b, t], items[b, j]] = True
    if targets is not None:
        seen[torch.arange(len(targets), device=items.device), targets] = False
    return seen
