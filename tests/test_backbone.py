"""Backbone names (clip4rec.model.backbone): `scratch` | `smollm2-<N>L-<frozen|lora|full>[-bf16]`, read and
written in one place; a bad name is refused with the grammar."""

from __future__ import annotations

import pytest

from clip4rec.config import ModelConfig
from clip4rec.model.backbone import Backbone, parse_backbone, parse_backbones


@pytest.mark.parametrize("name, fields", [
    ("scratch", ("scratch", None, None, False)),
    ("smollm2-2L-lora", ("smollm2", 2, "lora", False)),
    ("smollm2-1L-frozen", ("smollm2", 1, "frozen", False)),
    ("smollm2-30L-full-bf16", ("smollm2", 30, "full", True)),
])
def test_a_backbone_name_parses_to_its_fields_and_back(name, fields):
    b = parse_backbone(name)
    assert (b.kind, b.layers, b.train, b.bf16) == fields and b.name == name
    m = b.apply(ModelConfig(lora_rank=4))
    assert Backbone.of(m) == b and m.lora_rank == 4  # only the tower's own fields change
    if b.is_llm:
        assert (m.backbone, m.llm_layers, m.llm_train, m.llm_dtype) == (
            "smollm2", fields[1], fields[2], "bfloat16" if fields[3] else "float32")


def test_scratch_leaves_the_llm_fields_as_they_were():
    m = ModelConfig(backbone="smollm2", llm_layers=3, llm_train="full")
    assert parse_backbone("scratch").apply(m) == m.model_copy(update={"backbone": "scratch"})
    assert parse_backbone("scratch").apply(ModelConfig()) == ModelConfig()  # today's scratch cells: same config


@pytest.mark.parametrize("name, message", [
    ("", "unknown backbone ''"), ("smollm2", "unknown backbone"), ("smollm2-2L", "unknown backbone"),
    ("smollm2-2l-lora", "unknown backbone"), ("smollm2-2L-qlora", "smollm2-<N>L-<full|frozen|lora>"),
    ("SmolLM2-2L-lora", "unknown backbone"), ("scratch-bf16", "use scratch or"), ("sasrec", "e.g. smollm2-2L-lora"),
    ("smollm2-0L-lora", "layers must be 1..30, got 0"), ("smollm2-31L-frozen", "layers must be 1..30, got 31"),
])
def test_a_bad_backbone_name_is_refused_with_the_grammar(name, message):
    with pytest.raises(ValueError, match=message.replace("|", r"\|").replace("(", r"\(")):
        parse_backbone(name)


def test_a_list_of_names_drops_repeats_and_refuses_nothing_given():
    assert [b.name for b in parse_backbones(" scratch,smollm2-2L-lora , scratch,")] == ["scratch", "smollm2-2L-lora"]
    with pytest.raises(ValueError, match="no backbone given"):
        parse_backbones(" , ")
