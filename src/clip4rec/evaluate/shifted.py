"""Target ranks under fixed per-item score shifts: what a constant added to some items' scores (a cold-item
boost, a popularity adjustment) would do to a finished Run, without retraining it. The bench frontiers
(bench/cold_frontier.py, bench/tail_frontier.py) read a Run's validation and test cases through it."""

from __future__ import annotations

import numpy as np
import torch

from clip4rec.data.splits import EvalCases
from clip4rec.model.artifact import Run
from clip4rec.ranking import target_ranks


def shifted_ranks(run: Run, cases: EvalCases, shifts: dict[str, torch.Tensor],
                  batch: int = 1024) -> dict[str, np.ndarray]:
    """Per named score shift [n_items] (added to every user's scores; -inf removes an item), each case's
    target rank, seen items excluded as in the Run. The model scores each batch once."""
    table, exclude = run.item_table, run.config.eval.exclude_seen
    out: dict[str, list[np.ndarray]] = {name: [] for name in shifts}
    for start in range(0, len(cases.targets), batch):
        histories = cases.histories[start:start + batch]
        targets = cases.targets[start:start + batch]
        scores = run.model.score(histories, table)
        for name, shift in shifts.items():
            out[name].append(target_ranks(scores + shift, targets, histories if exclude else None).numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}
