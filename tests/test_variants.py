"""Content variants: item tables from an embedding store, the ID gate, and the cold-start lift they exist for.

The toy catalog is a ring: users walk it in steps of +1, and each item's text vector encodes its position
on the ring. A content model can therefore rank items it never saw in training; an ID model cannot.
"""

import json

import numpy as np
import pytest
import torch

from clip4rec.config import Config
from clip4rec.encode.encoders.base import Encoder
from clip4rec.model.item_side import ContentIdItems, content_pca_init
from clip4rec.api import Run, train
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
    cfg.model.hidden, cfg.model.dropout, cfg.model.max_len = 32, 0.1, 8
    cfg.train.max_epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.patience = epochs, 96, 1e-2, 100
    cfg.eval.n_boot = 50
    return cfg


def test_content_variant_lifts_cold_items_where_id_cannot(ring, tmp_path):
    text = train(ring / "ds", tmp_path / "text", config("text", ring / "store"), progress=False)
    ids = train(ring / "ds", tmp_path / "id", config("id", ring / "store"), progress=False)
    assert text["counts"]["cold"] > 10
    cold_text, cold_id = text["metrics"]["cold"]["recall@10"], ids["metrics"]["cold"]["recall@10"]
    assert cold_id < 0.25 and cold_text > 0.6, (cold_text, cold_id)


def test_fused_id_scores_cold_items_through_content_and_new_item_vector_matches_table(ring, tmp_path):
    cfg = config("fused-id", ring / "store", epochs=3)
    cfg.model.modalities, cfg.model.graph_k = ["llm_text"], 0  # the rows without the content graph (tested below)
    train(ring / "ds", tmp_path / "fid", cfg, progress=False)
    run = Run.load(tmp_path / "fid")
    side = run.model.item_side
    assert isinstance(side, ContentIdItems)
    table = run.model.item_table().detach()
    hidden = cfg.model.hidden
    mapped = side.mapper(side.content).detach()
    # Cold items (never seen) read the content->ID map; known items their ID rows; every row has its content.
    torch.testing.assert_close(table[run.cold_items, :hidden], mapped[run.cold_items])
    assert not torch.isclose(table[~run.cold_items, :hidden], mapped[~run.cold_items]).all(1).any()
    torch.testing.assert_close(table[:, hidden:], side.content)
    cold_index = int(np.flatnonzero(run.cold_items)[0])
    k = int(run.item_ids[cold_index][1:])
    raw = RingTextEncoder().encode_texts([f"item {k}"])["llm_text"][0]
    torch.testing.assert_close(side.vector_for({"ring:llm_text": raw}), table[cold_index], atol=1e-5, rtol=1e-5)
    # Re-published with new content, a trained item keeps its ID row.
    warm = int(np.flatnonzero(run.train_counts > 0)[0])
    torch.testing.assert_close(side.vector_for({"ring:llm_text": raw}, index=warm)[:hidden], table[warm, :hidden])


def test_a_cold_item_that_matches_the_history_outranks_a_far_one_in_every_content_variant(ring, tmp_path):
    for variant in ("text", "fused-id"):
        cfg = config(variant, ring / "store", epochs=8)
        cfg.model.modalities = ["llm_text"]
        metrics = train(ring / "ds", tmp_path / variant, cfg, progress=False)
        run = Run.load(tmp_path / variant)
        index = {item: i for i, item in enumerate(run.item_ids)}
        wins, cases = 0, 0
        for target in np.flatnonzero(run.cold_items):
            k = int(run.item_ids[target][1:])
            history = [index[f"i{(k - d) % N_ITEMS}"] for d in range(4, 0, -1)]
            if any(run.cold_items[h] for h in history):
                continue
            far = index[f"i{(k + N_ITEMS // 2) % N_ITEMS}"]
            scores = run.model.score([np.array(history)])[0]
            wins, cases = wins + int(scores[target] > scores[far]), cases + 1
        assert cases >= 3 and wins >= 0.8 * cases, (variant, wins, cases)
        assert metrics["metrics"]["cold"]["recall@10"] > 0.5, variant


def test_content_items_start_at_the_pca_of_their_content():
    rng = np.random.default_rng(0)
    # 40 items whose 10-d vectors vary along 2 strong directions plus weak noise.
    vectors = (rng.normal(size=(40, 2)) @ rng.normal(size=(2, 10)) * 5
               + 0.01 * rng.normal(size=(40, 10))).astype(np.float32)
    counts = np.arange(40) % 3  # a third of the items never seen
    side = ContentIdItems({"t": (vectors, np.ones(40, bool))}, counts, hidden=4, use_ids=True).eval()
    mapped = side.mapper(side.content).detach()
    torch.testing.assert_close(side.ids.weight.detach(), mapped)  # an ID row starts at its mapped content
    np.testing.assert_allclose(mapped.mean(0).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(mapped.std(0, unbiased=False).numpy()[:2], 0.02, rtol=1e-3)
    weight, _ = content_pca_init(side.content.numpy(), 4, 0.02)
    np.testing.assert_array_equal(weight, content_pca_init(side.content.numpy(), 4, 0.02)[0])  # deterministic
    # The content block holds the centred, L2-normalised vectors (content-knn's view of the items) on their
    # principal directions: with all 10 kept, the cosines between items are exactly content-knn's.
    c = vectors.astype(np.float64) - vectors.mean(0)
    unit = c / np.linalg.norm(c, axis=1, keepdims=True)
    block = side.content.numpy()
    assert block.shape == (40, 10)
    np.testing.assert_allclose(block @ block.T, unit @ unit.T, atol=1e-5)


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


def test_id_dropout_scores_a_share_of_known_items_through_content_in_training_only():
    rng = np.random.default_rng(0)
    counts = np.array([0, 3, 5, 8, 13, 21, 34, 55] * 50)
    vectors = rng.normal(size=(len(counts), 6)).astype(np.float32)
    side = ContentIdItems({"t": (vectors, np.ones(len(counts), bool))}, counts, hidden=8, use_ids=True,
                          id_dropout=0.25)
    with torch.no_grad():
        side.ids.weight.add_(1.0)  # so that ID rows and mapped rows can be told apart
    side.train()
    # Same RNG state as forward() draws from: a dropped known item's row is its mapped content.
    torch.manual_seed(1)
    table = side()[:, :8]
    torch.manual_seed(1)
    kept = torch.rand(len(counts)) >= 0.25
    mapped = side.mapper(side.content)
    is_mapped = torch.isclose(table, mapped, atol=1e-6).all(1)
    assert torch.equal(is_mapped[counts > 0], ~kept[counts > 0])
    assert is_mapped[counts == 0].all()
    assert 0.18 < (~kept[counts > 0]).float().mean().item() < 0.32
    # The tower reads every known item through its ID, dropped or not.
    assert not torch.isclose(side.input_table(), mapped, atol=1e-6).all(1)[counts > 0].any()
    side.eval()
    assert not torch.isclose(side()[:, :8], mapped, atol=1e-6).all(1)[counts > 0].any()


def test_training_under_exclude_seen_leaves_each_positions_history_out_of_its_softmax():
    from clip4rec.model.recommender import _seen_so_far
    items = torch.tensor([[3, 1, 3, 0], [2, 4, -1, -1]])
    mask = items >= 0
    targets = torch.tensor([[1, 3, 0, 2], [4, 2, -1, -1]])  # row 0 re-consumes item 3 at position 1's target
    where = mask.clone()
    where[0, 0] = False  # a context-only position is not counted
    seen = _seen_so_far(items, mask, where, targets[where], n_items=5)
    expected = torch.tensor([
        [0, 1, 0, 0, 0],   # (0,1): read 3, 1; its target 3 is a repeat and stays rankable
        [0, 1, 0, 1, 0],   # (0,2): read 3, 1, 3; target 0
        [1, 1, 0, 1, 0],   # (0,3): read 3, 1, 3, 0; target 2
        [0, 0, 1, 0, 0],   # (1,0): read 2; target 4
        [0, 0, 0, 0, 1],   # (1,1): read 2, 4; target 2 is a repeat and stays rankable
    ], dtype=torch.bool)
    assert torch.equal(seen, expected)


def test_wide_content_keeps_its_top_principal_directions_and_new_items_are_projected_alike():
    from clip4rec.model.item_side import CONTENT_DIMS
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 200)).astype(np.float32)
    counts = np.ones(300, int)
    side = ContentIdItems({"t": (vectors, np.ones(300, bool))}, counts, hidden=8, use_ids=False).eval()
    assert side.content.shape == (300, CONTENT_DIMS) and side.channel_dims == CONTENT_DIMS
    np.testing.assert_allclose(np.linalg.norm(side.content.numpy(), axis=1), 1.0, rtol=1e-5)
    torch.testing.assert_close(side.vector_for({"t": vectors[11]}), side()[11], atol=1e-5, rtol=1e-5)


def test_whitening_divides_each_principal_coordinate_by_a_power_of_its_spread():
    from clip4rec.model.item_side import principal_directions
    rng = np.random.default_rng(2)
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    rows = rng.normal(size=(4000, 4)) * np.array([8.0, 4.0, 2.0, 1.0]) @ rotation.T
    rows -= rows.mean(0)
    plain = principal_directions(rows, 4)
    np.testing.assert_allclose(plain.T @ plain, np.eye(4), atol=1e-12)
    spread = (rows @ plain).std(0)
    np.testing.assert_allclose(spread / spread[0], [1, 0.5, 0.25, 0.125], rtol=0.05)  # the axes' 8:4:2:1
    full = (rows @ principal_directions(rows, 4, whiten=1.0)).std(0)
    np.testing.assert_allclose(full / full[0], 1.0, rtol=1e-9)       # whitened: every direction alike
    half = (rows @ principal_directions(rows, 4, whiten=0.5)).std(0)
    np.testing.assert_allclose(half / half[0], np.sqrt(spread / spread[0]), rtol=1e-9)
    kept = principal_directions(rows, 2, whiten=1.0)  # truncation keeps the top directions, first scale 1
    np.testing.assert_allclose(kept[:, 0], plain[:, 0], atol=1e-12)
    assert kept.shape == (4, 2)


@pytest.mark.parametrize("whiten", [0.0, 0.5])
def test_whitened_content_rows_are_unit_and_new_items_are_projected_alike(whiten):
    rng = np.random.default_rng(3)
    vectors = (rng.normal(size=(200, 16)) * np.linspace(5, 0.5, 16)).astype(np.float32)
    side = ContentIdItems({"t": (vectors, np.ones(200, bool))}, np.ones(200, int), hidden=8, use_ids=False,
                          whiten=whiten).eval()
    np.testing.assert_allclose(np.linalg.norm(side.content.numpy(), axis=1), 1.0, rtol=1e-5)
    torch.testing.assert_close(side.vector_for({"t": vectors[7]}), side()[7], atol=1e-5, rtol=1e-5)
    projected = (vectors - vectors.mean(0)) @ side.basis_0.numpy()
    ratio = projected.std(0) / projected.std(0)[0]
    expected = np.linalg.svd(vectors - vectors.mean(0), compute_uv=False)
    np.testing.assert_allclose(ratio, (expected / expected[0]) ** (1 - whiten), rtol=1e-4)


def test_content_neighbours_are_the_nearest_known_items_never_the_item_itself():
    from clip4rec.model.item_side import content_neighbours
    angle = 2 * np.pi * np.arange(12) / 12  # 12 items evenly on a circle: item i's nearest are i-1 and i+1
    content = torch.from_numpy(np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32))
    known = torch.ones(12, dtype=torch.bool)
    known[[3, 8]] = False
    nbrs = content_neighbours(content, content, known, k=2, chunk=5)
    assert sorted(nbrs[0].tolist()) == [1, 11]
    assert 1 in nbrs[2].tolist() and 3 not in nbrs[2].tolist()  # 3 is nearer than 0 or 4 but has no ID
    assert sorted(nbrs[3].tolist()) == [2, 4]   # an ID-less item gets known neighbours too
    assert not (nbrs == torch.arange(12)[:, None]).any() and known[nbrs].all()
    # A re-published item (exclude=its row) does not pick itself either; a new one may match any known item.
    assert sorted(content_neighbours(content[:1], content, known, k=2, exclude=0)[0].tolist()) == [1, 11]
    assert 0 in content_neighbours(content[:1], content, known, k=2)[0].tolist()
    with pytest.raises(ValueError, match="at least 11 items with IDs"):
        content_neighbours(content, content, known, k=10)


def test_graph_rows_add_the_neighbours_mean_id_and_new_item_vectors_match_the_table(ring, tmp_path):
    cfg = config("fused-id", ring / "store", epochs=3)
    cfg.model.modalities, cfg.model.graph_k = ["llm_text"], 4
    train(ring / "ds", tmp_path / "graph", cfg, progress=False)
    run = Run.load(tmp_path / "graph")  # reloads from its files: the neighbours are saved with the Run
    side, hidden = run.model.item_side, cfg.model.hidden
    assert side.graph_k == 4 and side.graph_weight.item() != 0.2  # the weight was trained
    table = run.model.item_table().detach()
    torch.testing.assert_close(run.item_table, table)
    borrowed = side.graph_weight * side.ids.weight[side.neighbours].mean(1)
    mapped = side.mapper(side.content)
    cold = torch.from_numpy(run.cold_items)
    torch.testing.assert_close(table[cold, :hidden], (mapped + borrowed)[cold].detach())
    torch.testing.assert_close(table[~cold, :hidden], (side.ids.weight + borrowed)[~cold].detach())
    cold_index = int(np.flatnonzero(run.cold_items)[0])
    raw = RingTextEncoder().encode_texts([f"item {int(run.item_ids[cold_index][1:])}"])["llm_text"][0]
    torch.testing.assert_close(side.vector_for({"ring:llm_text": raw}), table[cold_index], atol=1e-5, rtol=1e-5)
    warm = int(np.flatnonzero(run.train_counts > 0)[0])
    own = RingTextEncoder().encode_texts([f"item {int(run.item_ids[warm][1:])}"])["llm_text"][0]
    torch.testing.assert_close(side.vector_for({"ring:llm_text": own}, index=warm), table[warm], atol=1e-5, rtol=1e-5)


def _run_saved_before(option: str, variant: str, ring, tmp_path):
    """A Run trained as the code did before ``option`` existed, its config.json written without the option."""
    from clip4rec.config import BEFORE_OPTION
    from clip4rec.data.dataset import Dataset
    cfg = config(variant, ring / "store", epochs=2)
    cfg.model.modalities = ["llm_text"]
    setattr(cfg.model, option, BEFORE_OPTION["model"][option])
    train(ring / "ds", tmp_path / "old", cfg, progress=False)
    record = json.loads((tmp_path / "old" / "config.json").read_text())
    del record["config"]["model"][option]
    (tmp_path / "old" / "config.json").write_text(json.dumps(record))
    return cfg, record, Run.load(tmp_path / "old"), Dataset.load(ring / "ds")


def _is_reused_as_id(record: dict, cfg: Config, dataset) -> bool:
    """Would the same saved cell, had it been an `id` Run, be reused under ``cfg``?"""
    from clip4rec.train.run import made_with
    as_id = json.loads(json.dumps(record))
    as_id["config"]["model"]["variant"] = cfg.model.variant = "id"
    return made_with(as_id, cfg, dataset)


def test_a_run_saved_before_the_graph_existed_loads_without_one_and_is_not_mistaken_for_a_graph_run(ring, tmp_path):
    from clip4rec.train.run import made_with
    cfg, record, run, dataset = _run_saved_before("graph_k", "fused-id", ring, tmp_path)
    assert run.config.model.graph_k == 0 and not hasattr(run.model.item_side, "neighbours")
    torch.testing.assert_close(run.model.item_table().detach(), run.item_table)
    assert made_with(record, cfg, dataset)
    cfg.model.graph_k = Config().model.graph_k  # today's default builds a graph: that is another recipe
    assert cfg.model.graph_k > 0 and not made_with(record, cfg, dataset)
    # Other variants have no ID rows to build it over: an `id` cell saved before the option is reused as it is.
    assert _is_reused_as_id(record, cfg, dataset)


def test_a_run_saved_before_whitening_reads_as_unwhitened_and_an_id_run_is_reused_whatever_the_setting(ring, tmp_path):
    from clip4rec.train.run import made_with
    cfg, record, run, dataset = _run_saved_before("content_whiten", "text", ring, tmp_path)
    assert run.config.model.content_whiten == 0.0
    torch.testing.assert_close(run.model.item_table().detach(), run.item_table)  # its saved basis loads as it is
    assert made_with(record, cfg, dataset)
    cfg.model.content_whiten = Config().model.content_whiten  # today's default whitens: another recipe
    assert cfg.model.content_whiten > 0 and not made_with(record, cfg, dataset)
    assert _is_reused_as_id(record, cfg, dataset)  # `id` reads no content: its cells are reused across the setting


def test_a_run_saved_before_the_content_mlp_reads_as_a_linear_map_and_fused_id_cells_are_reused(ring, tmp_path):
    from clip4rec.train.run import made_with
    cfg, record, run, dataset = _run_saved_before("content_mlp", "text", ring, tmp_path)
    assert run.config.model.content_mlp == 0 and run.model.item_side.adapter is None
    torch.testing.assert_close(run.model.item_table().detach(), run.item_table)
    assert made_with(record, cfg, dataset)
    cfg.model.content_mlp = Config().model.content_mlp  # today's default widens the map: another recipe
    assert cfg.model.content_mlp > 0 and not made_with(record, cfg, dataset)
    assert _is_reused_as_id(record, cfg, dataset)
    as_fused_id = json.loads(json.dumps(record))
    as_fused_id["config"]["model"]["variant"] = cfg.model.variant = "fused-id"  # keeps the linear map
    assert made_with(as_fused_id, cfg, dataset)


def test_the_content_only_map_starts_at_its_pca_and_only_content_only_variants_get_the_mlp():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(30, 12)).astype(np.float32)
    counts = np.arange(30) % 2
    side = ContentIdItems({"t": (vectors, np.ones(30, bool))}, counts, hidden=4, use_ids=False, mlp=16)
    assert side.adapter is not None and side.adapter[0].out_features == 16
    # The MLP's output layer starts at zero: the table starts exactly at the linear PCA map.
    torch.testing.assert_close(side()[:, :4].detach(), side.mapper(side.content).detach())
    side.adapter[2].weight.data.fill_(0.1)  # once trained, it adds a non-linear function of the content
    extra = side()[:, :4].detach() - side.mapper(side.content).detach()
    hidden = torch.nn.functional.gelu(side.content @ side.adapter[0].weight.T + side.adapter[0].bias)
    torch.testing.assert_close(extra, (hidden @ side.adapter[2].weight.T).detach(), atol=1e-5, rtol=1e-5)
    row = side.vector_for({"t": vectors[3]})
    torch.testing.assert_close(row, side()[3].detach(), atol=1e-5, rtol=1e-5)  # a published item: same map
    with_ids = ContentIdItems({"t": (vectors, np.ones(30, bool))}, counts, hidden=4, use_ids=True, mlp=16)
    assert with_ids.adapter is None  # fused-id keeps the linear map (validation level, content_recipes item 17)
    assert ContentIdItems({"t": (vectors, np.ones(30, bool))}, counts, hidden=4, use_ids=False).adapter is None


def test_the_knn_terms_profile_weighs_the_item_t_steps_back_by_knn_recency():
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(20, 6)).astype(np.float32)
    side = ContentIdItems({"t": (vectors, np.ones(20, bool))}, np.ones(20, int), hidden=8, use_ids=False).eval()
    assert float(side.knn_recency) == 1.0  # trained with the plain sum; train.calibrate may set it afterwards
    side.knn_recency.fill_(0.5)
    content = side.content.numpy()
    items = torch.tensor([[3, 5, 7, 9]])
    with torch.no_grad():
        profile = side.profile(items, torch.ones(1, 4, dtype=torch.bool))[0].numpy()
    for t in (1, 3):  # causal: position t sums items 0..t, the one j steps back weighing 0.5^j
        weighted = sum(0.5 ** (t - j) * content[int(items[0, j])] for j in range(t + 1))
        np.testing.assert_allclose(profile[t], weighted / np.linalg.norm(weighted), atol=1e-5)
