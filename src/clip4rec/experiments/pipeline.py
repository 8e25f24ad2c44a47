"""The stages chained: train a Run, then evaluate it (what `clip4rec train`, `compare` and the API's `train` do)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clip4rec.config import Config
from clip4rec.data.dataset import Dataset
from clip4rec.evaluate.evaluator import evaluate
from clip4rec.files import write_json
from clip4rec.model.artifact import Run
from clip4rec.train.calibrate import RULE, fit_cold_boost, fit_content_weight
from clip4rec.train.run import train


def train_and_evaluate(dataset: Dataset | str | Path, out: str | Path, config: Config | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """Train a Run into `out` and evaluate it (full ranking); returns the metrics dict (also in out/metrics.json).
    The Run is evaluated as training left it in memory (on the training device), as it was saved."""
    return evaluate(train(dataset, out, config, progress=progress), progress=progress)


def fit_content_weight_of_finished(run_dir: str | Path, progress: bool = False) -> bool:
    """A finished Run trained before training fitted the content weight (train.calibrate), or fitted under
    another rule: fit it now, as training does last, save the Run and evaluate it again. True if it was fitted.
    Safe to repeat after an interruption: the weight is set, not multiplied, and training.json records the fit
    only once the new metrics.json is written."""
    run_dir = Path(run_dir)
    training_path = run_dir / "training.json"
    training = json.loads(training_path.read_text()) if training_path.exists() else {}
    fitted = training.get("content_weight", False)
    if fitted is None or (fitted and fitted.get("rule") == RULE):  # None: a model without a content term
        return False
    run = Run.load(run_dir)
    ev = run.config.eval
    record = fit_content_weight(run.model, run.valid, ev.exclude_seen, ev.batch_size)
    training["content_weight"] = record
    if getattr(run.model.item_side, "cold_column", False):  # fitted on the content weight, so again after it
        training["cold_boost"] = fit_cold_boost(run.model, run.valid, run.config.model.cold_floor, ev.exclude_seen,
                                                ev.batch_size)
    if record is not None:
        run.save(run_dir)
        metrics = evaluate(run, progress=progress)
    write_json(training_path, training)  # last: from here on the Run counts as fitted
    if record is not None:
        write_json(run_dir / "metrics.json", {**metrics, "training": training})
    return record is not None
