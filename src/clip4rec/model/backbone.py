"""User-tower backbones by name: the one place a name such as `smollm2-2L-lora-bf16` is read or written.

    scratch                              the SASRec-sized causal transformer (model.user_tower)
    smollm2-<N>L-<frozen|lora|full>      the first N layers of SmolLM2-135M (model.user_llm), trained as said
    ...-bf16                             the same, the LM's matmuls under bfloat16 autocast

A name sets the config fields that choose the tower (model.backbone, llm_layers, llm_train, llm_dtype) and no
other: the LoRA rank, hidden size, etc. stay the config's, and `scratch` leaves the llm_* fields as they are,
so a scratch cell's config is the one it was before backbones had names (finished Runs stay reusable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import get_args

from pydantic import ValidationError

from clip4rec.config import ModelConfig

SCRATCH = "scratch"
LLM_TRAIN_MODES: tuple[str, ...] = get_args(ModelConfig.model_fields["llm_train"].annotation)  # named in config
_LLM_NAME = re.compile(rf"smollm2-(\d+)L-({'|'.join(LLM_TRAIN_MODES)})(-bf16)?")
GRAMMAR = f"scratch or smollm2-<N>L-<{'|'.join(LLM_TRAIN_MODES)}>[-bf16], e.g. smollm2-2L-lora"


@dataclass(frozen=True)
class Backbone:
    """A user tower: `scratch`, or SmolLM2's first `layers` layers trained as `train` (bf16 matmuls or not)."""

    kind: str                      # "scratch" | "smollm2" (config's model.backbone)
    layers: int | None = None      # smollm2 only
    train: str | None = None       # smollm2 only: frozen | lora | full
    bf16: bool = False             # smollm2 only

    @property
    def name(self) -> str:
        if self.kind == SCRATCH:
            return SCRATCH
        return f"smollm2-{self.layers}L-{self.train}" + ("-bf16" if self.bf16 else "")

    @property
    def is_llm(self) -> bool:
        return self.kind != SCRATCH

    def apply(self, m: ModelConfig) -> ModelConfig:
        """A copy of `m` with this tower (only the fields that choose it change)."""
        if not self.is_llm:
            return m.model_copy(update={"backbone": SCRATCH})
        # model_validate, not model_copy: an out-of-range layer count is refused here, with config's own bounds
        return ModelConfig.model_validate({**m.model_dump(), "backbone": "smollm2", "llm_layers": self.layers,
                                           "llm_train": self.train,
                                           "llm_dtype": "bfloat16" if self.bf16 else "float32"})

    @classmethod
    def of(cls, m: ModelConfig) -> Backbone:
        """The tower a model config describes (inverse of `apply` on the fields a name sets)."""
        if m.backbone == SCRATCH:
            return cls(SCRATCH)
        return cls("smollm2", m.llm_layers, m.llm_train, m.llm_dtype == "bfloat16")


def parse_backbone(name: str) -> Backbone:
    """`scratch` or `smollm2-<N>L-<mode>[-bf16]`; ValueError (naming the grammar) for anything else."""
    text = name.strip()
    if text == SCRATCH:
        return Backbone(SCRATCH)
    match = _LLM_NAME.fullmatch(text)
    if not match:
        raise ValueError(f"unknown backbone {name!r}: use {GRAMMAR}")
    backbone = Backbone("smollm2", int(match.group(1)), match.group(2), bool(match.group(3)))
    try:
        backbone.apply(ModelConfig())
    except ValidationError:
        bound = next(m.le for m in ModelConfig.model_fields["llm_layers"].metadata if hasattr(m, "le"))
        raise ValueError(f"backbone {name!r}: SmolLM2-135M layers must be 1..{bound}, got {backbone.layers}") from None
    return backbone


def parse_backbones(names: str | list[str]) -> list[Backbone]:
    """A comma-separated list (or a list) of names, parsed, duplicates (same tower) dropped, order kept."""
    items = names.split(",") if isinstance(names, str) else list(names)
    parsed = [parse_backbone(n) for n in items if n.strip()]
    if not parsed:
        raise ValueError(f"no backbone given: use {GRAMMAR}")
    return list(dict.fromkeys(parsed))
