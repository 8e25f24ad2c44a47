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
    # fused-id: each item's row also gets a learned weight x the mean ID row of its graph_k most content-similar
    # known items (a frozen item-item content graph, as in LATTICE and FREEDOM), so a rarely seen or cold item
    # borrows from well-trained neighbours. 0 = no graph. See docs/content_recipes.md for how 10 was chosen.
    graph_k: int = Field(10, ge=0)
    # Content variants: the content block's principal coordinates are divided by (singular value)^content_whiten
    # before L2 normalisation (0 = plain PCA, 1 = full whitening, as BERT-whitening), so that the few directions
    # every text shares do not dominate every cosine. 0.5 was chosen by validation; see docs/content_recipes.md.
    content_whiten: float = Field(0.5, ge=0.0, le=1.0)
    # Content-only variants (text, image, fused): the width of a residual MLP beside the linear content->ID map
    # (0 = linear only). Without ID rows a linear map of the content cannot tell warm items apart; validation
    # NDCG@10 wants the MLP on both datasets (ML-100K cold split, fused, 3 seeds: 0.115 vs 0.087), at the price
    # of cold items (cold R@10 0.018 vs 0.061): 0 is the cold-exposure operating point. fused-id keeps the
    # linear map (validation level). docs/content_recipes.md, item 17.
    content_mlp: int = Field(256, ge=0)
    # content-knn only: the history item t steps back weighs knn_recency^t in its profile. 1 = the plain mean of
    # issue 12's baseline; below 1, a recency-weighted knn, a stronger training-free bar where the next item
    # follows the last few (bench/knn_recency.py picks it on validation). Trained content variants train their
    # knn term at 1 and fit its recency on validation afterwards (train.calibrate); training at another
    # recency lost on validation (docs/content_recipes.md, item 14), so this setting does not reach them.
    knn_recency: float = Field(1.0, gt=0.0, le=1.0)
    # Trained variants, where seen items are ranked (eval.exclude_seen false): a learned bias for "this item is
    # in the user's window", so that whether users repeat items is learned from the data. See
    # model.recommender.SequentialRecommender; with exclude_seen it would learn nothing and is not built.
    repeat_term: bool = True
    # Trained content variants: a cold floor R. After training, a constant boost for every item without training
    # interactions is fitted on validation: the smallest one (0 to 3 by 1/8, then coarser) whose validation cold
    # R@10 is at least R x validation warm R@10 (train.calibrate.fit_cold_boost). It is one more table column,
    # so evaluation and serving (items published later included) apply it at no cost per request. For a
    # catalogue that must show new items; it costs overall accuracy (docs/content_recipes.md, cold section).
    # Needs a split whose validation has targets without training interactions (split.kind cold). None = off.
    cold_floor: float | None = Field(None, gt=0.0, le=1.0)


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


# ---- stage 1 (encode) and the online stage (serve) ------------------------------------------------------------
# Each choice is named once, here; the code that acts on it imports the name.
EngineName = Literal["local", "ray"]
DecodePool = Literal["thread", "process"]
AlignMethod = Literal["cca", "infonce"]
HeadArch = Literal["linear", "mlp"]
ClipDtype = Literal["float32", "float16", "bfloat16"]
IndexKind = Literal["exact", "faiss"]                         # a top-k index built in memory
IndexChoice = Literal["auto", "exact", "faiss", "persisted"]  # what `serve --index` may ask for
FaissKind = Literal["ivf", "hnsw", "flat"]


class EncoderOptions(Strict):
    """Options handed to the encoder's constructor; only those given are passed (each encoder takes its own)."""

    model: str | None = None                        # clip: hub id or local folder
    threads: int | None = Field(None, ge=1)         # torch intra-op threads
    device: str | None = None                       # clip: torch device
    dtype: ClipDtype | None = None                  # clip: its vectors get their own fingerprint
    max_tokens: int | None = Field(None, ge=1)      # item-llm: text truncation

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class AlignConfig(Strict):
    """lite's image/text alignment heads (encode/align.py). Field order is the stored spec's key order."""

    image_inputs: list[str] = ["image", "image_mid"]
    text_inputs: list[str] = ["text"]
    # "cca": ridge-regularised CCA (closed form, linear heads; measured best here) or
    # "infonce": heads trained with symmetric InfoNCE (linear or mlp), full batch
    method: AlignMethod = "cca"
    cca_dim: int = Field(32, ge=1)      # cca: shared-space size
    cca_reg: float = Field(10.0, ge=0)  # cca: ridge added to the whitening, relative to the mean eigenvalue
    cca_pca: int = Field(256, ge=1)     # cca: PCA components kept per side before CCA
    arch: HeadArch = "linear"           # infonce: one linear layer, or one hidden layer (GELU)
    hidden: int = Field(512, ge=1)
    out_dim: int = Field(256, ge=1)
    epochs: int = Field(300, ge=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    temperature: float = Field(0.07, gt=0)  # initial; learned
    batch: int = Field(0, ge=0)             # 0 = full batch
    seed: int = 0


class EngineConfig(Strict):
    """How pending batches are computed (encode/engines): ``local`` in this process, or ``ray``."""

    name: EngineName = "local"
    workers: int | None = Field(None, ge=1)   # local: image decode workers (default min(4, cpus))
    decode: DecodePool = "thread"             # local: decode worker pool kind
    prefetch: int = Field(2, ge=1)            # local: batches decoded ahead of the model
    address: str | None = None                # ray: an existing cluster; None starts a local Ray
    actors: int | None = Field(None, ge=1)    # ray: model actors (default: one per GPU, else the CPUs left)
    actor_cpus: float = Field(1.0, gt=0)      # ray: CPUs (= torch threads) per model actor
    actor_gpus: float = Field(0.0, ge=0)      # ray: GPUs per model actor
    decode_cpus: float = Field(1.0, gt=0)     # ray: CPUs per decode task
    num_cpus: int | None = Field(None, ge=1)  # ray: CPUs of the local Ray instance (default: all)
    progress: bool = False                    # ray: Ray Data's own progress bars and plan lines


class EncodeConfig(Strict):
    # clip | lite | item-llm | auto | a local CLIP folder; auto = clip when its weights are available offline,
    # else lite (a stand-in for CLIP, not CLIP)
    encoder: str = "auto"
    options: EncoderOptions = EncoderOptions()
    batch_size: int = Field(32, ge=1)
    text_fields: list[str] | None = None   # item columns composed into the text; None: the encoder's own
    realign: bool = False                  # lite: retrain the alignment heads on the current catalog
    align: AlignConfig = AlignConfig()
    engine: EngineConfig = EngineConfig()


class ServeLimits(Strict):
    """What a request may ask of the service (the HTTP schema fixes id and vector sizes: serve/app.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_k: int = Field(1000, ge=1)
    max_history: int = Field(1000, ge=1)   # history ids kept per request (the newest)
    max_body_bytes: int = Field(1 << 20, ge=1)


class ServeConfig(Strict):
    host: str = "127.0.0.1"   # loopback unless told otherwise: the API has no authentication
    port: int = Field(8000, ge=0, le=65535)
    # auto: the index persisted by `clip4rec index` beside the Run if any, else exact
    index: IndexChoice = "auto"
    faiss_kind: FaissKind | None = None      # faiss: default ivf; persisted: default the newest
    nprobe: int | None = Field(None, ge=1)   # faiss ivf: lists probed per query (default 16, or as persisted)
    ef_search: int | None = Field(None, ge=1)  # faiss hnsw: candidate list per query (default 64, or as persisted)
    max_batch: int = Field(16, ge=1)         # concurrent /recommend calls answered together
    threads: int = Field(1, ge=0)            # torch intra-op threads per request; 0: torch's default
    stores: list[str] = []                   # for /similar; empty: the stores the Run was trained on
    # smollm2 towers: the LM's matmul dtype when serving; None: as trained. A Run trained with bf16 matmuls (faster
    # to train) answers faster in float32 on a CPU, where autocast re-casts every weight for every request.
    llm_dtype: Literal["float32", "bfloat16"] | None = None
    log_level: str = "info"
    limits: ServeLimits = ServeLimits()


class Config(Strict):
    seed: int = 42
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    encode: EncodeConfig = EncodeConfig()
    serve: ServeConfig = ServeConfig()


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


# Options whose default is not what the code did before they existed. A Run's config.json written before one of
# them records no value for it, and reads as the behaviour it was trained with.
BEFORE_OPTION = {"model": {"graph_k": 0, "repeat_term": False, "content_whiten": 0.0, "content_mlp": 0}}


def saved_config(data: dict[str, Any]) -> Config:
    """The Config a Run recorded in its config.json (its "config" entry)."""
    data = {**data}
    for section, defaults in BEFORE_OPTION.items():
        data[section] = {**defaults, **data.get(section, {})}
    return Config.model_validate(data)
