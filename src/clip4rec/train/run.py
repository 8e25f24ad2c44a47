"""A Run directory: what `train` leaves and `evaluate` / `serve` read.

RUN/config.json            effective config + the dataset it was trained on + versions
RUN/split.json             split description, including sha256 of the (user, target) pairs
RUN/model.safetensors      best-validation weights
RUN/item_table.safetensors the final item vectors the online stage scores against (+ item_ids.json)
RUN/metrics.json           evaluator output (test; validation under "valid")
RUN/{test,valid}.{run,qrels}.trec
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from clip4rec import __version__
from clip4rec.config import Config
from clip4rec.data.dataset import Dataset
from clip4rec.data.splits import Split, make_split
from clip4rec.ranking import rank_cases
from clip4rec.evaluate.segments import evaluate_rankings
from clip4rec.evaluate.trec import write_qrels, write_run
from clip4rec.machine import machine_info
from clip4rec.model.baselines import ConstantTower, ContentKnnItems, PopularityItems, ProfileTower
from clip4rec.model.item_side import ContentIdItems, IdItemTable
from clip4rec.model.recommender import SequentialRecommender
from clip4rec.model.user_tower import CausalTransformer
from clip4rec.train.modalities import SLOTS, StoreDefault, find_modality, missing_modality_error, resolve_slots
from clip4rec.train.trainer import BEST_WEIGHTS, seed_everything, train_model

VARIANTS = ("id", "text", "image", "fused", "fused-id", "pop", "content-knn")
TRAINING_FREE = ("pop", "content-knn")
# Each reads as its first choices (["image", "llm_text"] for fused); load_modalities falls back per slot to what
# the stores hold (text: llm_text, else the sentence encoder's text), see train.modalities.
DEFAULT_MODALITIES = {variant: StoreDefault(slots) for variant, slots in SLOTS.items()}


def build_model(config: Config, split: Split) -> SequentialRecommender:
    seed_everything(config.seed)  # parameter init is part of "same seed, same numbers"
    m = config.model
    if m.variant == "pop":
        return SequentialRecommender(PopularityItems(split.train_counts), ConstantTower(), m.max_len)
    if m.variant == "content-knn":
        knn = ContentKnnItems(load_modalities(m.stores, m.modalities or DEFAULT_MODALITIES[m.variant], split.item_ids))
        return SequentialRecommender(knn, ProfileTower(knn.dims), m.max_len)
    if m.variant == "id":
        item_side: torch.nn.Module = IdItemTable(split.n_items, m.hidden)
    else:
        modalities = load_modalities(m.stores, m.modalities or DEFAULT_MODALITIES[m.variant], split.item_ids)
        item_side = ContentIdItems(modalities, split.train_counts, m.hidden, use_ids=m.variant == "fused-id",
                                   id_dropout=m.id_dropout)
    tower = build_tower(m)
    return SequentialRecommender(item_side, tower, m.max_len)


def build_tower(m) -> torch.nn.Module:
    if m.backbone == "scratch":
        return CausalTransformer(m.hidden, m.layers, m.heads, m.dropout, m.max_len, post_norm=m.norm == "post")
    from clip4rec.model.user_llm import SmolLMTower
    return SmolLMTower(m.hidden, m.llm_layers, m.max_len, train_mode=m.llm_train, lora_rank=m.lora_rank,
                       dropout=m.dropout, compute_dtype=m.llm_dtype)


def load_modalities(stores: list[str], wanted: list[str], item_ids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Content tables aligned to the split's item order; items a store lacks get mask False (counted).

    `wanted` as DEFAULT_MODALITIES gives it (a StoreDefault) is resolved against what the stores hold; named
    modalities must be there, else the error lists the `--modality` values that would work."""
    from clip4rec.encode.store import EmbeddingStore
    if not stores:
        raise ValueError(f"content modalities {list(wanted)} need --store (run `clip4rec encode` first)")
    opened = [EmbeddingStore.load(path) for path in stores]
    if isinstance(wanted, StoreDefault):
        wanted = resolve_slots(wanted.slots, opened)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for spec in wanted:
        found = find_modality(opened, spec)
        if not found:
            raise missing_modality_error(spec, opened)
        name = spec.rpartition(":")[2]
        if len(found) > 1:
            raise ValueError(f"modality {spec!r} is in several stores/encoders "
                             f"({[e for _, e in found]}); write it as ENCODER:{name}")
        store, enc = found[0]
        ids, vectors, mask = store.vectors(name, encoder=enc)
        row = {item: i for i, item in enumerate(ids)}
        index = np.array([row.get(item, -1) for item in item_ids])
        table = np.zeros((len(item_ids), vectors.shape[1]), np.float32)
        usable = np.zeros(len(item_ids), bool)
        present = index >= 0
        table[present] = vectors[index[present]]
        usable[present] = mask[index[present]]
        out[f"{enc}:{name}"] = (table, usable)
    return out


def split_for(dataset: Dataset, config: Config) -> Split:
    return make_split(dataset, config.split.kind, seed=config.seed, cold_fraction=config.split.cold_fraction)


def train(dataset: Dataset | str | Path, out: str | Path, config: Config | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train a model on a Dataset, write a Run directory, evaluate it; returns the metrics dict."""
    config = config or Config()
    if not isinstance(dataset, Dataset):
        dataset = Dataset.load(dataset)
    if dataset.root is None:
        raise ValueError("save the Dataset (Dataset.save) before training: the Run records where it lives")
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    split = split_for(dataset, config)
    _guard_same_run(run_dir, config, dataset)
    _write_json(run_dir / "config.json", {"config": config.model_dump(), "dataset": str(dataset.root),
                                           "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    _write_json(run_dir / "split.json", split.describe())
    model = build_model(config, split)
    n_params = sum(p.numel() for p in model.parameters())
    result = train_model(model, split, config, run_dir, progress=progress)
    training = {"best_epoch": result.best_epoch, "best_valid_ndcg@10": result.best_valid_ndcg10,
                "epochs_run": result.epochs_run, "seconds_per_epoch": result.seconds_per_epoch,
                "train_seconds": result.train_seconds, "stopped_by": result.stopped_by, "parameters": n_params,
                "machine": machine_info(config.train.device), "history": result.history}
    _write_json(run_dir / "training.json", training)
    return evaluate(run_dir, model=model, split=split, dataset=dataset, progress=progress)


def load_run(run_dir: str | Path) -> tuple[Config, Dataset, Split, SequentialRecommender]:
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() or not (run_dir / BEST_WEIGHTS).exists():
        raise FileNotFoundError(f"{run_dir} is not a finished Run directory (config.json / {BEST_WEIGHTS} missing)")
    saved = json.loads((run_dir / "config.json").read_text())
    config = Config.model_validate(saved["config"])
    dataset = Dataset.load(saved["dataset"])
    split = split_for(dataset, config)
    expected = json.loads((run_dir / "split.json").read_text())["test_pairs_sha256"]
    if split.test.pairs_hash(split.item_ids) != expected:
        raise ValueError(f"the dataset at {saved['dataset']} no longer gives the split this Run was trained on")
    model = build_model(config, split)
    model.load_state_dict(load_file(run_dir / BEST_WEIGHTS))
    model.eval()
    return config, dataset, split, model


def evaluate(run_dir: str | Path, *, model: SequentialRecommender | None = None, split: Split | None = None,
             dataset: Dataset | None = None, progress: bool = True) -> dict[str, Any]:
    """Full-ranking evaluation of a Run on validation and test; writes metrics.json and TREC files."""
    run_dir = Path(run_dir)
    if model is None or split is None:
        config, dataset, split, model = load_run(run_dir)
    else:
        config = Config.model_validate(json.loads((run_dir / "config.json").read_text())["config"])
    model.eval()
    table = model.item_table().detach()
    save_file({"item_table": table.cpu().contiguous()}, str(run_dir / "item_table.safetensors"))
    _write_json(run_dir / "item_ids.json", split.item_ids)
    ev = config.eval
    out: dict[str, Any] = {}
    for name, cases in (("test", split.test), ("valid", split.valid)):
        rankings = rank_cases(lambda hs: model.score(hs, table), cases.histories, cases.targets, split.n_items,
                              exclude_seen=ev.exclude_seen, depth=min(ev.run_depth, split.n_items),
                              batch_size=ev.batch_size, progress=progress)
        result = evaluate_rankings(rankings, cases.targets, split.train_counts,
                                   split.cold_items if split.kind == "cold" else None, ks=tuple(ev.ks),
                                   item_vectors=table.cpu().numpy(), n_boot=ev.n_boot, seed=config.seed)
        write_run(run_dir / f"{name}.run.trec", cases.user_ids, rankings, split.item_ids, tag=f"clip4rec-{config.model.variant}")
        write_qrels(run_dir / f"{name}.qrels.trec", cases.user_ids, cases.targets, split.item_ids)
        out[name] = result
    metrics = {**out["test"], "valid": out["valid"], "variant": config.model.variant, "split": split.describe(),
               "exclude_seen": ev.exclude_seen,
               "other_protocol": _other_protocol(model, table, split, config)}
    training_path = run_dir / "training.json"
    if training_path.exists():
        metrics["training"] = json.loads(training_path.read_text())
    _write_json(run_dir / "metrics.json", metrics)
    return metrics


def _other_protocol(model: SequentialRecommender, table: torch.Tensor, split: Split, config: Config) -> dict[str, Any]:
    """Test metrics (no CIs, no TREC files) under the opposite `exclude_seen` setting, so every report shows a
    result both with seen items excluded and with them ranked (where users repeat items, excluding them is wrong)."""
    flipped = not config.eval.exclude_seen
    rankings = rank_cases(lambda hs: model.score(hs, table), split.test.histories, split.test.targets,
                          split.n_items, exclude_seen=flipped, depth=max(config.eval.ks),
                          batch_size=config.eval.batch_size)
    result = evaluate_rankings(rankings, split.test.targets, split.train_counts,
                               split.cold_items if split.kind == "cold" else None, ks=tuple(config.eval.ks), n_boot=0)
    return {"exclude_seen": flipped, "metrics": result["metrics"], "counts": result["counts"]}


def _guard_same_run(run_dir: Path, config: Config, dataset: Dataset) -> None:
    """Resuming into a Run directory is only allowed with the same config and dataset (never mix runs)."""
    path = run_dir / "config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    if not made_with(saved, config, dataset):
        raise ValueError(f"{run_dir} holds a run with another config or dataset; choose a new --out")


def made_with(saved: dict[str, Any], config: Config, dataset: Dataset) -> bool:
    """Was a Run's config.json written for this config and dataset? Options added to Config since then
    read as their defaults, which are what the code did before the option existed."""
    return (Config.model_validate(saved["config"]).model_dump() == config.model_dump()
            and saved["dataset"] == str(dataset.root))


def _versions() -> dict[str, str]:
    return {"clip4rec": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable))
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")
