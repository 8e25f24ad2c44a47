"""The stages chained: train a Run, then evaluate it (what `clip4rec train`, `compare` and the API's `train` do)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clip4rec.config import Config
from clip4rec.data.dataset import Dataset
from clip4rec.evaluate.evaluator import evaluate
from clip4rec.train.run import train


def train_and_evaluate(dataset: Dataset | str | Path, out: str | Path, config: Config | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """Train a Run into `out` and evaluate it (full ranking); returns the metrics dict (also in out/metrics.json).
    The Run is evaluated as training left it in memory (on the training device), as it was saved."""
    return evaluate(train(dataset, out, config, progress=progress), progress=progress)
