"""`train`: a Dataset (and the content stores a variant reads) in, a Run directory out (see model.artifact).

Evaluation is the next stage's: `clip4rec train` chains the two (experiments.pipeline.train_and_evaluate).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from clip4rec.config import Config, saved_config
from clip4rec.data.dataset import Dataset
from clip4rec.files import write_json
from clip4rec.machine import machine_info, versions
from clip4rec.model.artifact import CONFIG, SPLIT, Run
from clip4rec.model.build import TRAINING_FREE, build_model, has_cold_column, has_repeat_term, split_for
from clip4rec.model.modalities import SLOTS, content_for
from clip4rec.train.memory import PeakMemory
from clip4rec.train.trainer import train_model


def train(dataset: Dataset | str | Path, out: str | Path, config: Config | None = None,
          progress: bool = True) -> Run:
    """Train a model on a Dataset and write a complete Run directory (item table included); returns the Run,
    its model still on the training device. A directory holding this same run resumes from its checkpoint."""
    config = config or Config()
    if not isinstance(dataset, Dataset):
        dataset = Dataset.load(dataset)
    if dataset.root is None:
        raise ValueError("save the Dataset (Dataset.save) before training: the Run records where it lives")
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    split = split_for(dataset, config)
    _guard_same_run(run_dir, config, dataset)
    # Written before training, so that a killed run is recognised (and resumed) by _guard_same_run.
    record = {"config": config.model_dump(), "dataset": str(dataset.root), "versions": versions(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(run_dir / CONFIG, record)
    write_json(run_dir / SPLIT, split.describe())
    m = config.model
    # Measured from before the model is built: a pretrained tower's weights are part of what training costs.
    with PeakMemory(config.train.device) as peak:
        model = build_model(config, split.train_counts, content_for(m.variant, m.stores, m.modalities, split.item_ids))
        result = train_model(model, split, config, run_dir, progress=progress)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    training = {"best_epoch": result.best_epoch, "best_valid_ndcg@10": result.best_valid_ndcg10,
                "epochs_run": result.epochs_run, "seconds_per_epoch": result.seconds_per_epoch,
                "train_seconds": result.train_seconds, "stopped_by": result.stopped_by, "parameters": n_params,
                "parameters_trainable": n_trainable, "peak_memory": peak.result(),
                "machine": machine_info(config.train.device), "history": result.history,
                "content_weight": result.content_weight, "cold_boost": result.cold_boost}
    write_json(run_dir / "training.json", training)
    run = Run.from_training(record, dataset, split, model)
    run.save(run_dir)
    return run


def _guard_same_run(run_dir: Path, config: Config, dataset: Dataset) -> None:
    """Resuming into a Run directory is only allowed with the same config and dataset (never mix runs)."""
    path = run_dir / CONFIG
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    if not made_with(saved, config, dataset):
        raise ValueError(f"{run_dir} holds a run with another config or dataset; choose a new --out")


def made_with(saved: dict[str, Any], config: Config, dataset: Dataset) -> bool:
    """Was a Run's config.json written for this config and dataset? Options added to Config since then read
    as what the code did before they existed: their defaults, or config.BEFORE_OPTION's value for them."""
    return _settings_that_count(saved_config(saved["config"])) == _settings_that_count(config) \
        and saved["dataset"] == str(dataset.root)


def _settings_that_count(config: Config) -> dict[str, Any]:
    """The config as a Run depends on it: a variant that reads no content (id, pop) is the same Run whichever
    modalities the config names for the content variants, so an `id` cell is reused when only those change."""
    settings = config.model_dump()
    if config.model.variant not in SLOTS:
        settings["model"]["modalities"] = []
    if config.model.variant != "fused-id":  # the only variant with ID rows to build a content graph over
        settings["model"]["graph_k"] = 0
    if config.model.variant in ("id", *TRAINING_FREE):  # read no principal basis of content to whiten
        settings["model"]["content_whiten"] = 0.0
    if config.model.variant in ("id", "fused-id", *TRAINING_FREE):  # no content-only map to widen
        settings["model"]["content_mlp"] = 0
    settings["model"]["repeat_term"] = has_repeat_term(config)  # not built under exclude_seen: same Run either way
    if not has_cold_column(config):  # a variant without a content item side ignores the cold floor
        settings["model"]["cold_floor"] = None
    return settings

