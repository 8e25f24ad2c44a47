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
CONTENT_TRAINED = ("text", "image", "fused", "fused-id")  # the variants with a ContentIdItems item side


def has_cold_column(config: Config) -> bool:
    """Does a model of this config carry the cold column (model.cold_floor)? Only the trained content variants:
    the others ignore the setting, so a comparison grid can hold them beside the content variants."""
    return config.model.cold_floor is not None and config.model.variant in CONTENT_TRAINED


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def has_repeat_term(config: Config) -> bool:
    """Does a model of this config learn a repeat bias (SequentialRecommender.repeat_bias)? Only where seen items
    are ranked (with exclude_seen they are masked out of every softmax, so it would learn nothing) and only for
    the trained variants."""
    return config.model.repeat_term and not config.eval.exclude_seen and config.model.variant not in TRAINING_FREE


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
                                   id_dropout=m.id_dropout, graph_k=m.graph_k, whiten=m.content_whiten,
                                   mlp=m.content_mlp, cold_column=has_cold_column(config))
    return _with_tower(m, item_side, repeat_term=has_repeat_term(config))


def _with_tower(m: ModelConfig, item_side: torch.nn.Module, llm: dict[str, Any] | None = None,
                repeat_term: bool = False) -> SequentialRecommender:
    """The item side with its variant's user tower (built after the item side: init order is part of the seed)."""
    if m.variant == "pop":
        tower: torch.nn.Module = ConstantTower()
    elif m.variant == "content-knn":
        tower = ProfileTower(item_side.dims, recency=m.knn_recency)
    else:
        tower = build_tower(m, llm)
    return SequentialRecommender(item_side, tower, m.max_len, repeat_term=repeat_term)


def build_tower(m: ModelConfig, llm: dict[str, Any] | None = None) -> torch.nn.Module:
    """The user tower `m` describes. A smollm2 tower starts from the packaged pretrained layers, or, given `llm`
    (its architecture, see `llm_shape`), as an empty skeleton of them for saved weights to be loaded into."""
    if m.backbone == "scratch":
        return CausalTransformer(m.hidden, m.layers, m.heads, m.dropout, m.max_len, post_norm=m.norm == "post")
    from clip4rec.model.user_llm import SmolLMTower, empty_smollm2_layers
    if llm is not None and llm["num_hidden_layers"] != m.llm_layers:
        raise ValueError(f"the saved LM has {llm['num_hidden_layers']} layers; the config asks for {m.llm_layers}")
    return SmolLMTower(m.hidden, m.llm_layers, m.max_len, train_mode=m.llm_train, lora_rank=m.lora_rank,
                       dropout=m.dropout, compute_dtype=m.llm_dtype,
                       llm=None if llm is None else empty_smollm2_layers(llm))


def content_shapes(model: SequentialRecommender) -> list[dict[str, Any]]:
    """Per modality the model reads: its name, the encoder's width and the width of its block in the table;
    with the config and the item count, what `empty_model` needs to rebuild this model's shapes."""
    side = model.item_side
    names, dims = getattr(side, "names", []), getattr(side, "dims", [])
    raw = getattr(side, "raw_dims", dims)  # content-knn keeps each encoder's full width
    return [{"name": n, "raw_dim": int(r), "dim": int(d)} for n, r, d in zip(names, raw, dims)]


def llm_shape(model: SequentialRecommender) -> dict[str, Any] | None:
    """A smollm2 tower's LM architecture (a transformers config as JSON), which `empty_model` rebuilds it from;
    None for other towers (the model config alone describes them)."""
    llm = getattr(model.tower, "llm", None)
    if llm is None:
        return None
    from clip4rec.model.user_llm import lm_config
    return lm_config(llm)


def empty_model(config: Config, n_items: int, shapes: list[dict[str, Any]],
                llm: dict[str, Any] | None = None) -> SequentialRecommender:
    """The model `config` describes with zero-filled tables of the given shapes (see content_shapes): what a
    saved Run's weights are loaded into. Nothing is read from the stores and nothing is fitted; with `llm` (see
    llm_shape) a smollm2 tower reads no pretrained weights either. Without it (a Run saved before it was
    recorded), the tower starts from the packaged layers, which the saved weights then overwrite."""
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
                                         use_ids=m.variant == "fused-id", id_dropout=m.id_dropout,
                                         graph_k=m.graph_k, mlp=m.content_mlp,
                                         cold_column=has_cold_column(config))
    return _with_tower(m, item_side, llm, repeat_term=has_repeat_term(config))
