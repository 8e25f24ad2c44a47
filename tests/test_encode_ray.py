"""The Ray engine (a local 2-CPU Ray instance) writes the same store as the local engine: same ids, same
vectors, same masks and reasons; it resumes from shards either engine left, and a re-run encodes nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from clip4rec.encode import EmbeddingStore, encode_dataset
from clip4rec.config import EncodeConfig, EngineConfig
from clip4rec.encode.engines.local import LocalEngine

QUIET = {"progress": False, "log": lambda m: None}
RAY = EncodeConfig(batch_size=4, engine=EngineConfig(name="ray", actors=1))


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _same_store(a: Path, b: Path) -> None:
    sa, sb = EmbeddingStore.load(a), EmbeddingStore.load(b)
    for modality in ("image", "text"):
        ia, va, ma = sa.vectors(modality)
        ib, vb, mb = sb.vectors(modality)
        assert ia == ib
        assert np.array_equal(ma, mb)
        assert np.allclose(va, vb, atol=1e-5)
        assert np.array_equal(sa.file(modality).hash, sb.file(modality).hash)
    assert sa.bad_inputs() == sb.bad_inputs()
    assert sa.manifest["encoders"]["clip"]["fingerprint"] == sb.manifest["encoders"]["clip"]["fingerprint"]


class _DiesAfter(LocalEngine):
    """The local engine, killed after ``n`` batches (what a crash mid-run leaves: some finished shards)."""

    def __init__(self, n: int) -> None:
        super().__init__(workers=1)
        self.n = n

    def compute(self, *args):
        for done, out in enumerate(super().compute(*args)):
            if done == self.n:
                raise KeyboardInterrupt("killed")
            yield out


@pytest.mark.slow  # a local Ray instance and its actor processes
def test_ray_engine_equals_local_and_resumes(tiny_clip, catalog, tmp_path, ray_local):
    from typer.testing import CliRunner

    from clip4rec.encode.cli import make_app

    local, ray_out = tmp_path / "local", tmp_path / "ray"
    encode_dataset(catalog, encoder=str(tiny_clip), out=local, settings=EncodeConfig(batch_size=4), **QUIET)
    res = CliRunner().invoke(make_app(), ["encode", str(catalog), "--encoder", str(tiny_clip), "--out", str(ray_out),
                                          "--batch-size", "4", "--engine", "ray", "--actors", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    _same_store(local, ray_out)
    assert EmbeddingStore.load(ray_out).manifest["encoders"]["clip"]["last_run"]["engine"] == "ray"

    # a second run encodes nothing and leaves the files as they were
    before = {p.name: p.read_bytes() for p in ray_out.glob("*.safetensors")}
    again = encode_dataset(catalog, encoder=str(tiny_clip), out=ray_out, settings=RAY, **QUIET)
    assert again.items_reencoded == 0 and again.encoded == {"image": 0, "text": 0}
    assert {p.name: p.read_bytes() for p in ray_out.glob("*.safetensors")} == before

    # resume: a local run dies after 3 batches; the Ray run picks up its shards and computes only the rest
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(catalog, encoder=str(tiny_clip), out=resumed, settings=EncodeConfig(batch_size=4),
                       engine=_DiesAfter(3), **QUIET)
    assert len(list((resumed / ".work").glob("clip/image-*/shard-*.safetensors"))) == 3
    rep = encode_dataset(catalog, encoder=str(tiny_clip), out=resumed, settings=RAY, **QUIET)
    assert rep.resumed_shards == {"image": 3, "text": 0}
    _same_store(local, resumed)
    assert not (resumed / ".work").exists()


@pytest.mark.slow  # a local Ray instance and its actor processes
def test_a_worker_with_other_weights_stops_the_run(tiny_clip, catalog, tmp_path, ray_local):
    from clip4rec.encode.engines import EncoderSpec
    from clip4rec.encode.engines.ray_engine import RayEngine
    from tests.support.catalog import make_tiny_clip

    other = make_tiny_clip(tmp_path / "other-clip", seed=1)  # same architecture, other weights

    class OtherNode(RayEngine):  # what a node with another model at the same path would load
        def compute(self, enc, spec, fingerprint, works):
            return super().compute(enc, EncoderSpec(name=str(other)), fingerprint, works)

    with pytest.raises(RuntimeError, match="fingerprint .* the driver's is"):
        encode_dataset(catalog, encoder=str(tiny_clip), out=tmp_path / "s", settings=EncodeConfig(batch_size=8),
                       engine=OtherNode(actors=1), **QUIET)
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_ray_missing_says_how_to_install(monkeypatch):
    from clip4rec.encode.engines.ray_engine import import_ray
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RuntimeError, match=r"clip4rec\[ray\]"):
        import_ray()


def test_clip_half_precision_is_close_and_has_its_own_fingerprint(tiny_clip):
    from clip4rec.encode.encoders import load_encoder
    from clip4rec.encode.manifest import encoder_fingerprint

    full, half = load_encoder(str(tiny_clip)), load_encoder(str(tiny_clip), dtype="bfloat16")
    assert encoder_fingerprint(full) != encoder_fingerprint(half)  # a refresh re-encodes, never mixes precisions
    texts = ["a film about space", "a love story"]
    cos = (full.encode_texts(texts)["text"] * half.encode_texts(texts)["text"]).sum(1)
    assert cos.min() > 0.99
    with pytest.raises(ValueError, match="dtype"):
        load_encoder(str(tiny_clip), dtype="int8")
