"""Defaults that fit the data: modalities chosen from what the stores hold (and recorded in the Run), errors
that name the `--modality` values that would work, `train --help` showing the config's values, and early
stopping that does not keep an epoch-1 model because validation dipped right after it."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from clip4rec.cli import app
from clip4rec.config import Config
from clip4rec.encode.encoders.base import Encoder
from clip4rec.encode.images import ImagePrep
from clip4rec.encode.pipeline import encode_dataset
from clip4rec.train import trainer
from clip4rec.model.modalities import default_modalities
from clip4rec.api import Run, train
from tests.ring_data import save_ring_dataset

N_ITEMS = 30


class LiteShaped(Encoder):
    """Stands in for `--encoder lite`: an `image` and a `text` modality, no `llm_text`."""

    name = "lite"

    def __init__(self) -> None:
        super().__init__()
        self.image_outputs = {"image": 4}
        self.text_outputs = {"text": 6}
        self.text_fields = ("text",)
        self.image_prep = ImagePrep(size=(8, 8))  # the ring items have no images: every image row is masked

    def encode_images(self, pixels):
        return {"image": pixels.mean(axis=(2, 3)).repeat(2, axis=1)[:, :4]}

    def identity(self):
        return {"source": "tests/test_train_defaults.py"}

    def encode_texts(self, texts):
        k = np.array([float(t.split()[-1]) for t in texts])[:, None]
        angle = 2 * np.pi * k * np.arange(1, 4)[None, :] / N_ITEMS
        return {"text": np.concatenate([np.cos(angle), np.sin(angle)], 1).astype(np.float32)}


class LlmShaped(LiteShaped):
    name = "item-llm"

    def __init__(self) -> None:
        super().__init__()
        self.image_outputs, self.text_outputs, self.image_prep = {}, {"llm_text": 6}, None

    def encode_texts(self, texts):
        return {"llm_text": super().encode_texts(texts)["text"][:, ::-1].copy()}


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    root = save_ring_dataset(tmp_path_factory.mktemp("ring"), N_ITEMS, 60, (5, 9), seed=2, encoder=LiteShaped())
    encode_dataset(root / "ds", LlmShaped(), root / "llm_store", progress=False, log=lambda m: None)
    return root


def cli_args(ring, out, variant, *extra):
    return ["train", str(ring / "ds"), "--out", str(out), "--variant", variant, "--store", str(ring / "store"),
            "--epochs", "2", "--batch-size", "64", "--quiet", *extra]


@pytest.mark.parametrize("variant, expected", [("text", ["lite:text"]), ("fused", ["lite:image", "lite:text"]),
                                               ("fused-id", ["lite:image", "lite:text"])])
def test_a_lite_only_store_trains_every_content_variant_and_the_run_records_its_modalities(ring, tmp_path, variant,
                                                                                           expected):
    result = CliRunner().invoke(app, cli_args(ring, tmp_path / "run", variant))
    assert result.exit_code == 0, result.output
    assert f"modalities (from the stores): {', '.join(expected)}" in result.output
    assert " of 2 (best validation NDCG@10; stopped by max_epochs; patience counts after 5 warm-up" in result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"]["model"]["modalities"] == expected
    assert Run.load(tmp_path / "run").model.item_side.names == expected  # the Run rebuilds from what it recorded


def test_python_api_default_falls_back_to_the_stored_text(ring, tmp_path):
    cfg = Config(seed=1)
    cfg.model.variant, cfg.model.stores, cfg.model.hidden, cfg.model.max_len = "text", [str(ring / "store")], 16, 8
    cfg.train.max_epochs, cfg.eval.n_boot = 1, 0
    train(ring / "ds", tmp_path / "run", cfg, progress=False)
    assert Run.load(tmp_path / "run").model.item_side.names == ["lite:text"]


def test_default_prefers_the_sentence_encoders_text_then_llm_text(ring):
    both = [str(ring / "store"), str(ring / "llm_store")]
    assert default_modalities("text", both) == ["lite:text"]
    assert default_modalities("fused", both) == ["lite:image", "lite:text"]
    assert default_modalities("text", both[1:]) == ["item-llm:llm_text"]  # no sentence-encoder text: the LLM's
    assert default_modalities("id", both) == []


def test_a_missing_modality_names_the_values_that_would_work(ring, tmp_path):
    result = CliRunner().invoke(app, cli_args(ring, tmp_path / "run", "text", "--modality", "llm_text"))
    assert result.exit_code == 2
    assert "modality 'llm_text' is in none of the stores" in result.output
    assert "--modality lite:image --modality lite:text" in result.output
    with pytest.raises(ValueError, match="variant 'image' needs modality 'image'.*--modality item-llm:llm_text"):
        default_modalities("image", [str(ring / "llm_store")])
    with pytest.raises(ValueError, match="pass --store"):
        default_modalities("fused", [])


def test_train_help_shows_the_config_defaults():
    result = CliRunner().invoke(app, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    d = Config()
    for flag, value in (("--variant", d.model.variant), ("--seed", d.seed), ("--epochs", d.train.max_epochs),
                        ("--lr", d.train.lr), ("--batch-size", d.train.batch_size),
                        ("--patience", d.train.patience), ("--warmup-epochs", d.train.warmup_epochs)):
        after = text[text.index(flag + " "):]
        shown = after[after.index("[default:"):].split("]")[0]
        assert shown == f"[default: ({value})" or shown == f"[default: {value}", (flag, shown)


# ---- early stopping ------------------------------------------------------------------------------------
# Validation peaks at epoch 1, dips for four epochs, then climbs past the peak at epoch 6.
SCRIPTED = [0.30, 0.10, 0.12, 0.11, 0.13, 0.40, 0.20, 0.21, 0.22, 0.23, 0.24, 0.25]


@pytest.fixture
def scripted_validation(monkeypatch):
    values = iter(SCRIPTED)
    monkeypatch.setattr(trainer, "validation_ndcg10", lambda *a, **k: next(values))


def stopping_config(warmup: int | None) -> Config:
    cfg = Config(seed=4)
    cfg.model.hidden, cfg.model.max_len = 16, 8
    cfg.train.max_epochs, cfg.train.patience = len(SCRIPTED), 3
    if warmup is not None:  # None: the default, which must not stop in the dip either
        cfg.train.warmup_epochs = warmup
    cfg.train.batch_size, cfg.eval.n_boot = 64, 0
    return cfg


@pytest.mark.parametrize("warmup, best_epoch, epochs_run, best", [(0, 1, 4, 0.30), (5, 6, 9, 0.40),
                                                                  (None, 6, 9, 0.40)])
def test_warmup_keeps_patience_from_ending_training_in_an_early_dip(ring, tmp_path, scripted_validation, warmup,
                                                                    best_epoch, epochs_run, best):
    metrics = train(ring / "ds", tmp_path / "run", stopping_config(warmup), progress=False)
    t = metrics["training"]
    assert (t["best_epoch"], t["epochs_run"], t["best_valid_ndcg@10"], t["stopped_by"]) == \
        (best_epoch, epochs_run, best, "early_stopping")
