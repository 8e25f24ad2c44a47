"""A model from its config: built fresh from content tables (for training), or as an empty skeleton of the
right shapes (for loading a saved Run's weights into).

Every variant is an item side (the table of item vectors) plus a user tower; score = user vector . every row.
"""

from __future__ import annotations

import random
from typing import Any, get_args

import numpy as np
import torch

from clip4rec.config import Config, ModelConfig
from clip4rec.data.dataset import Dataset
from clip4rec.data.splits import Split, make_split
from clip4rec.model.baselines import ConstantTower, ContentKnnItems, PopularityItems, ProfileTower
from clip4rec.model.item_side import ContentIdItems, IdItemTable
from clip4rec.model.modalities import Content
from clip4rec.model.recommender import SequentialRecommender
from clip4rec.model.user_tower import CausalTransformer

VARIANTS: tuple[str, ...] = get_args(ModelConfig.model_fields["variant"].annotation)  # named once, in config
TRAINING_FREE = ("pop", "content-knn")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_for(dataset: Dataset, config: Config) -> Split:
    return make_split(dataset, config.split.kind, seed=config.seed, cold_fraction=config.split.cold_fraction)


def build_model(config: Config, train_counts: np.ndarray, content: Content | None = None) -> SequentialRecommender:
    """A freshly initialised model over len(train_counts) items; content variants need their `content` tables
    (model.modalities.content_for)."""
    seed_everything(config.seed)  # parameter init is part of "same seed, same numbers"
    m = config.model
    if m.variant not in ("id", "pop") and not content:
        raise ValueError(f"variant {m.variant!r} is built from content tables; none were given")
    if m.variant == "pop":
        item_side: torch.nn.Module = PopularityItems(train_counts)
    elif m.variant == "content-knn":
        item_side = ContentKnnItems(content)
    elif m.variant == "id":
        item_side = IdItemTable(len(train_counts), m.hidden)
    else:
        item_side = ContentIdItems(content, train_counts, m.hidden, use_ids=m.variant == "fused-id",
                                   id_dropout=m.id_dropout)
    return _with_tower(m, item_side)


def _with_tower(m: ModelConfig, item_side: torch.nn.Module) -> SequentialRecommender:
    """The item side with its variant's user tower (built after the item side: init order is part of the seed)."""
    if m.variant == "pop":
        tower: torch.nn.Module = ConstantTower()
    elif m.variant == "content-knn":
        tower = ProfileTower(item_side.dims)
    else:
        tower = build_tower(m)
    return SequentialRecommender(item_side, tower, m.max_len)


def build_tower(m: ModelConfig) -> torch.nn.Module:
    if m.backbone == "scratch":
        return CausalTransformer(m.hidden, m.layers, m.heads, m.dropout, m.max_len, post_norm=m.norm == "post")
    from clip4rec.model.user_llm import SmolLMTower
    return SmolLMTower(m.hidden, m.llm_layers, m.max_len, train_mode=m.llm_train, lora_rank=m.lora_rank,
                       dropout=m.dropout, compute_dtype=m.llm_dtype)


def content_shapes(model: SequentialRecommender) -> list[dict[str, Any]]:
    """Per modality the model reads: its name, the encoder's width and the width of its block in the table;
    with the config and the item count, what `empty_model` needs to rebuild this model's shapes."""
    side = model.item_side
    names, dims = getattr(side, "names", []), getattr(side, "dims", [])
    raw = getattr(side, "raw_dims", dims)  # content-knn keeps each encoder's full width
    return [{"name": n, "raw_dim": int(r), "dim": int(d)} for n, r, d in zip(names, raw, dims)]


def empty_model(config: Config, n_items: int, shapes: list[dict[str, Any]]) -> SequentialRecommender:
    """The model `config` describes with zero-filled tables of the given shapes (see content_shapes): what a
    saved Run's weights are loaded into. Nothing is read from the stores and nothing is fitted."""
    m = config.model
    names, dims = [s["name"] for s in shapes], [s["dim"] for s in shapes]
    if m.variant == "pop":
        item_side: torch.nn.Module = PopularityItems(np.zeros(n_items, np.float32))
    elif m.variant == "content-knn":
        item_side = ContentKnnItems.empty(names, dims, n_items)
    elif m.variant == "id":
        item_side = IdItemTable(n_items, m.hidden)
    else:
        item_side = ContentIdItems.empty(names, [s["raw_dim"] for s in shapes], dims, n_items, m.hidden,
                                         use_ids=m.variant == "fused-id", id_dropout=m.id_dropout)
    return _with_tower(m, item_side)
