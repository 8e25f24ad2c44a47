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
