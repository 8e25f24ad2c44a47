"""Content variants: item tables from an embedding store, the ID gate, and the cold-start lift they exist for.

The toy catalog is a ring: users walk it in steps of +1, and each item's text vector encodes its position
on the ring. A content model can therefore rank items it never saw in training; an ID model cannot.
"""

import numpy as np
import pytest
import torch

from clip4rec.config import Config
from clip4rec.encode.encoders.base import Encoder
from clip4rec.model.fusion import ContentFusion, GatedIdBlend, content_vector_for_new_item
from clip4rec.train.run import load_run, train
from tests.ring_data import save_ring_dataset

N_ITEMS = 48


class RingTextEncoder(Encoder):
    """Deterministic stand-in encoder: text 'item k' -> Fourier features of k on the ring."""

    name = "ring"

    def __init__(self) -> None:
        super().__init__()
        self.text_outputs = {"llm_text": 8}
        self.text_fields = ("text",)
        self.note = "test encoder"

    def identity(self):
        return {"source": "tests/test_variants.py"}

    def encode_texts(self, texts):
        k = np.array([float(t.split()[-1]) for t in texts])[:, None]
        freqs = np.arange(1, 5)[None, :]
        angle = 2 * np.pi * k * freqs / N_ITEMS
        return {"llm_text": np.concatenate([np.cos(angle), np.sin(angle)], 1).astype(np.float32)}


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    return save_ring_dataset(tmp_path_factory.mktemp("ring"), N_ITEMS, 150, (6, 12), seed=1, encoder=RingTextEncoder())

def config(variant: str, store, epochs: int = 15) -> Config:
    cfg = Config(seed=3)
    cfg.split.kind, cfg.split.cold_fraction = "cold", 0.2
    cfg.model.variant, cfg.model.stores = variant, [str(store)]
    cfg.model.hidden, cfg.model.dropout, cfg.model.max_len, cfg.model.fusion = 32, 0.1, 8, "mean"
    cfg.train.max_epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.patience = epochs, 96, 1e-2, 100
    cfg.eval.n_boot = 50
    return cfg


def test_content_variant_lifts_cold_items_where_id_cannot(ring, tmp_path):
    text = train(ring / "ds", tmp_path / "text", config("text", ring / "store"), progress=False)
    ids = train(ring / "ds", tmp_path / "id", config("id", ring / "store"), progress=False)
    assert text["counts"]["cold"] > 10
    cold_text, cold_id = text["metrics"]["cold"]["recall@10"], ids["metrics"]["cold"]["recall@10"]
    assert cold_id < 0.25 and cold_text > 0.6, (cold_text, cold_id)


def test_fused_id_gate_is_zero_for_unseen_items_and_new_item_vector_matches_table(ring, tmp_path):
    train(ring / "ds", tmp_path / "fid", config("fused-id", ring / "store", epochs=3).model_copy(
        update={"model": config("fused-id", ring / "store").model.model_copy(update={"modalities": ["llm_text"]})}),
        progress=False)
    _, dataset, split, model = load_run(tmp_path / "fid")
    side = model.item_side
    assert isinstance(side, GatedIdBlend)
    gate = side.gate().detach().numpy()
    assert np.all(gate[split.cold_items] == 0) and np.all(gate[~split.cold_items & (split.train_counts > 0)] > 0)
    table = model.item_table().detach()
    cold_index = int(np.flatnonzero(split.cold_items)[0])
    k = int(split.item_ids[cold_index][1:])
    raw = RingTextEncoder().encode_texts([f"item {k}"])["llm_text"][0]
    vector = content_vector_for_new_item(side, {"ring:llm_text": raw})
    torch.testing.assert_close(vector, table[cold_index], atol=1e-5, rtol=1e-5)


def test_fusion_masks_missing_modalities():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 6)).astype(np.float32)
    mask_b = np.array([True, True, False, True, True])
    torch.manual_seed(0)
    fusion = ContentFusion({"a": (a, np.ones(5, bool)), "b": (b, mask_b)}, hidden=8, kind="gated").eval()
    weights = fusion.modality_weights()
    assert weights[2, 1] == 0 and weights[2, 0] == pytest.approx(1.0)
    torch.testing.assert_close(weights.sum(1), torch.ones(5))


def test_content_variant_without_store_fails_clearly(ring, tmp_path):
    cfg = config("text", ring / "store")
    cfg.model.stores = []
    with pytest.raises(ValueError, match="--store"):
        train(ring / "ds", tmp_path / "x", cfg, progress=False)
    cfg.model.stores, cfg.model.modalities = [str(ring / "store")], ["image"]
    with pytest.raises(ValueError, match="image"):
        train(ring / "ds", tmp_path / "y", cfg, progress=False)


def test_held_out_items_leave_the_training_softmax():
    from clip4rec.model.item_side import IdItemTable
    from clip4rec.model.recommender import SequentialRecommender
    from clip4rec.model.user_tower import CausalTransformer
    torch.manual_seed(0)
    model = SequentialRecommender(IdItemTable(6, 8), CausalTransformer(8, 1, 1, 0.0, 4), 4).eval()
    items, targets = torch.tensor([[0, 1, 2]]), torch.tensor([[1, 2, 3]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    held_out = torch.tensor([False, False, False, False, True, True])
    table = model.item_table()
    logits = model.hidden_states(items, mask, table)[0] @ table[:4].T  # softmax over the 4 known items only
    expected = torch.nn.functional.cross_entropy(logits, targets[0])
    torch.testing.assert_close(model.loss(items, targets, mask, held_out=held_out), expected)
    assert model.loss(items, targets, mask) > expected  # with the held-out items as negatives it is larger


def test_id_dropout_scores_a_share_of_seen_items_by_content_alone_in_training_only():
    rng = np.random.default_rng(0)
    counts = np.array([0, 3, 5, 8, 13, 21, 34, 55] * 50)
    content = ContentFusion({"t": (rng.normal(size=(len(counts), 6)).astype(np.float32), np.ones(len(counts), bool))},
                            hidden=8, kind="mean", dropout=0.0)
    side = GatedIdBlend(content, counts, hidden=8, id_dropout=0.25)
    side.train()
    g = side.gate()
    # Same RNG state as forward() draws from: an item whose gate was dropped equals its pure-content row.
    torch.manual_seed(1)
    table = side()
    torch.manual_seed(1)
    kept = torch.rand_like(g) >= 0.25
    is_pure = torch.isclose(table, side.out_norm(side.content()), atol=1e-6).all(1)
    assert torch.equal(is_pure[counts > 0], ~kept[counts > 0])
    assert 0.18 < (~kept[counts > 0]).float().mean().item() < 0.32
    side.eval()
    assert not torch.isclose(side(), side.out_norm(side.content()), atol=1e-6).all(1)[counts > 0].any()


def test_content_rank_keeps_the_top_principal_directions_and_new_items_follow_it():
    from clip4rec.model.fusion import principal_basis, standardize
    rng = np.random.default_rng(0)
    # 40 items whose 10-d vectors vary along 2 strong directions plus weak noise.
    strong = rng.normal(size=(40, 2)) @ rng.normal(size=(2, 10)) * 5
    vectors = (strong + 0.01 * rng.normal(size=(40, 10))).astype(np.float32)
    mask = np.ones(40, bool)
    fusion = ContentFusion({"t": (vectors, mask)}, hidden=8, kind="concat", dropout=0.0, rank=2).eval()
    assert fusion.content_0.shape == (40, 2)
    basis = fusion.basis_0.numpy()
    np.testing.assert_allclose(basis.T @ basis, np.eye(2), atol=1e-5)
    standardized, _ = standardize(vectors, mask)
    # Two directions hold almost all the variance, so projecting back loses almost nothing.
    back = standardized @ basis @ basis.T
    assert np.linalg.norm(back - standardized) / np.linalg.norm(standardized) < 0.01
    np.testing.assert_array_equal(principal_basis(standardized, 2), basis)  # deterministic signs
    # A new item with item 7's raw vector gets exactly item 7's row.
    torch.testing.assert_close(content_vector_for_new_item(fusion, {"t": vectors[7]}), fusion()[7],
                               atol=1e-5, rtol=1e-5)
    # rank >= width keeps the vectors as they are (no basis).
    wide = ContentFusion({"t": (vectors, mask)}, hidden=8, kind="concat", dropout=0.0, rank=10)
    assert not hasattr(wide, "basis_0") and wide.content_0.shape == (40, 10)
