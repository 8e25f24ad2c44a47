"""Typed settings. A config file (YAML or TOML) is validated strictly: an unknown or mistyped key is an
error that names it. Command-line flags override the file; the effective config is saved with every artifact."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(Strict):
    kind: Literal["loo", "cold"] = "loo"
    cold_fraction: float = Field(0.1, gt=0.0, lt=1.0)


class ModelConfig(Strict):
    # pop and content-knn learn nothing (see model.baselines): the bars every trained variant must clear.
    variant: Literal["id", "text", "image", "fused", "fused-id", "pop", "content-knn"] = "id"
    # Embedding stores (from `clip4rec encode`) the content variants read; modalities are "name" or
    # "encoder:name" (e.g. "lite:image", "item-llm:llm_text"). Empty = the variant's default modalities.
    stores: list[str] = []
    modalities: list[str] = []
    backbone: Literal["scratch", "smollm2"] = "scratch"
    llm_layers: int = Field(2, ge=1, le=30)     # smollm2: first N pretrained layers
    llm_train: Literal["full", "frozen", "lora"] = "lora"
    lora_rank: int = Field(8, ge=1)
    llm_dtype: Literal["float32", "bfloat16"] = "float32"  # smollm2: dtype of the LM's matmuls (weights stay fp32)
    hidden: int = Field(64, ge=8)
    norm: Literal["pre", "post"] = "pre"   # scratch tower: pre-LN blocks (nanoGPT) or post-LN (SASRec/RecBole)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    max_len: int = Field(50, ge=2)
    # fused-id: each training step, this share of the known items is scored without its ID (through the
    # content->ID mapper and the content-knn term), so that ID-less (cold) items are scored on the same scale
    # as items with IDs (DropoutNet). See model.item_side.ContentIdItems.
    id_dropout: float = Field(0.1, ge=0.0, lt=1.0)


class TrainConfig(Strict):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(1024, ge=1)   # next-item targets per optimizer step (RecBole counts the same way)
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(10, ge=1)       # epochs without a better validation NDCG@10
    # Epochs during which a non-improving validation does not count toward patience (the best epoch is still
    # kept). Validation often peaks at epoch 1, dips while the model leaves its popularity-like start, and
    # climbs past that peak later; without a warm-up, patience could run out in the dip and keep epoch 1.
    # 5 leaves every published clip4rec Run as it was (their best epochs are all >= 7).
    warmup_epochs: int = Field(5, ge=0)
    min_context: int = Field(0, ge=0)     # see train.trainer.training_windows; < model.max_len
    time_limit_s: float | None = None     # wall-clock cap on training; the best checkpoint so far is kept
    threads: int | None = None            # torch intra-op threads; None = torch default
    # Where training (and the evaluation right after it) runs. Explicit, never "auto": a GPU run's numbers
    # differ from a CPU run's in the last digits, so the device is part of what a Run was made with.
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")


class EvalConfig(Strict):
    ks: list[int] = [5, 10, 20]
    # Default False: RecBole and the published results on these splits rank every item, seen or not.
    exclude_seen: bool = False
    run_depth: int = Field(100, ge=1)     # ranks written per user to the TREC run file
    n_boot: int = Field(1000, ge=0)
    batch_size: int = Field(1024, ge=1)


class Config(Strict):
    seed: int = 42
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


class ConfigError(ValueError):
    pass


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Config from an optional file, then dotted overrides such as {"train.lr": 3e-4} (None values ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text()
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):  # JSON is YAML
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file must be .yaml, .yml, .toml or .json: {path}")
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid config{f' in {path}' if path else ''}: {problems}") from None
