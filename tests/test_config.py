"""Config files are validated strictly; flags override the file."""

import pytest

from clip4rec.config import ConfigError, load_config


def test_yaml_and_toml_load_with_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("seed: 7\ntrain:\n  lr: 0.01\n  patience: 3\n")
    (tmp_path / "c.toml").write_text("seed = 7\n[train]\nlr = 0.01\npatience = 3\n")
    for name in ("c.yaml", "c.toml"):
        cfg = load_config(tmp_path / name, {"train.patience": 5, "model.variant": None})
        assert (cfg.seed, cfg.train.lr, cfg.train.patience, cfg.model.variant) == (7, 0.01, 5, "id")


def test_unknown_key_is_named(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  learning_rate: 0.01\n")
    with pytest.raises(ConfigError, match=r"train\.learning_rate"):
        load_config(tmp_path / "c.yaml")


def test_mistyped_value_is_named(tmp_path):
    (tmp_path / "c.toml").write_text("[model]\nhidden = 'big'\n")
    with pytest.raises(ConfigError, match=r"model\.hidden"):
        load_config(tmp_path / "c.toml")


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "c.ini").write_text("x=1")
    with pytest.raises(ConfigError, match="yaml"):
        load_config(tmp_path / "c.ini")


def test_encode_and_serve_sections_are_typed_and_flags_override_them(tmp_path):
    (tmp_path / "c.yaml").write_text("encode:\n  batch_size: 8\n  align:\n    method: infonce\n  engine:\n    name: ray\n"
                                     "serve:\n  port: 9000\n  limits:\n    max_history: 50\n")
    cfg = load_config(tmp_path / "c.yaml", {"serve.port": 9100, "encode.engine.actors": None})
    assert (cfg.encode.batch_size, cfg.encode.align.method, cfg.encode.engine.name) == (8, "infonce", "ray")
    assert (cfg.serve.port, cfg.serve.limits.max_history, cfg.serve.limits.max_k) == (9100, 50, 1000)
    (tmp_path / "bad.yaml").write_text("encode:\n  engine:\n    decode: fork\nserve:\n  index: annoy\n")
    with pytest.raises(ConfigError, match=r"encode\.engine\.decode.*serve\.index"):
        load_config(tmp_path / "bad.yaml")


def test_alignment_defaults_are_the_stored_spec():
    """The heads' spec in existing stores is this JSON; AlignConfig must dump it unchanged (same keys, order)."""
    import json

    from clip4rec.config import AlignConfig
    stored = {"image_inputs": ["image", "image_mid"], "text_inputs": ["text"], "method": "cca", "cca_dim": 32,
              "cca_reg": 10.0, "cca_pca": 256, "arch": "linear", "hidden": 512, "out_dim": 256, "epochs": 300,
              "lr": 1e-3, "weight_decay": 0.05, "dropout": 0.3, "temperature": 0.07, "batch": 0, "seed": 0}
    assert json.dumps(AlignConfig().model_dump()) == json.dumps(stored)


@pytest.mark.parametrize("index, nprobe, faiss_installed, expected", [
    ("faiss", None, True, ("faiss", {"nprobe": 16, "ef_search": 64, "kind": "ivf"})),  # every knob, defaulted
    ("auto", None, False, ("exact", {})),                    # auto without faiss installed is exact
    ("auto", 4, True, ("auto", {"nprobe": 4})),              # persisted/auto: only the knobs given
    ("persisted", 4, True, ("persisted", {"nprobe": 4})),
])
def test_serve_index_choice(index, nprobe, faiss_installed, expected):
    pytest.importorskip("typer")
    from clip4rec.config import ServeConfig
    from clip4rec.serve.cli import index_choice
    assert index_choice(ServeConfig(index=index, nprobe=nprobe), faiss_installed) == expected
