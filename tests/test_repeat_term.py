"""The repeat term: where seen items are ranked, one learned score for "this item is in the user's window", so
that whether users repeat items is learned from the data instead of being left to the content term (whose
history profile is most like the history's own items)."""

import json

import numpy as np
import torch

from clip4rec.api import Run
from clip4rec.config import Config
from clip4rec.data.dataset import Dataset
from clip4rec.model.build import build_model, has_repeat_term
from clip4rec.model.item_side import IdItemTable
from clip4rec.model.recommender import SequentialRecommender
from clip4rec.model.user_tower import CausalTransformer
from clip4rec.train.run import made_with, train
from tests.support.toy import build_toy, toy_config


def small_model(n_items: int = 12, max_len: int = 4) -> SequentialRecommender:
    torch.manual_seed(0)
    tower = CausalTransformer(8, 1, 1, 0.0, max_len)
    return SequentialRecommender(IdItemTable(n_items, 8), tower, max_len, repeat_term=True).eval()


def test_the_bias_is_added_once_to_each_window_item_and_nowhere_else():
    model = small_model()
    with torch.no_grad():
        model.repeat_bias.fill_(0.7)
    histories = [np.array([9, 1, 2, 2, 3]), np.array([5])]  # row 0: item 9 is outside the window of 4
    table = model.item_table().detach()
    with torch.inference_mode():
        plain = model.user_vectors(histories, table) @ table.T
    expected = plain.clone()
    expected[0, [1, 2, 3]] += 0.7  # item 2 twice in the window: one bias
    expected[1, 5] += 0.7
    torch.testing.assert_close(model.score(histories, table), expected)


def train_bias(sequences: torch.Tensor, steps: int = 60) -> float:
    model = small_model().train()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    items, targets = sequences[:, :-1], sequences[:, 1:]
    mask = torch.ones_like(items, dtype=torch.bool)
    for _ in range(steps):
        optimiser.zero_grad()
        model.loss(items, targets, mask).backward()
        optimiser.step()
    return model.repeat_bias.item()


def test_the_bias_learns_whether_users_repeat_items():
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 12, size=64)
    walks = torch.tensor([[(s + t) % 12 for t in range(5)] for s in starts])  # never a repeat
    back_and_forth = torch.tensor([[s, (s + 1) % 12] * 2 + [s] for s in starts])  # the next item was read 2 ago
    assert train_bias(walks) < -0.5
    assert train_bias(back_and_forth) > 0.5


def test_not_built_where_seen_items_are_excluded_or_nothing_is_trained():
    config = Config()
    assert config.model.repeat_term and not config.eval.exclude_seen and has_repeat_term(config)
    assert hasattr(build_model(config, np.ones(10)), "repeat_bias")
    config.eval.exclude_seen = True  # masked out of every softmax: there is nothing to learn it from
    assert not has_repeat_term(config) and not hasattr(build_model(config, np.ones(10)), "repeat_bias")
    config.eval.exclude_seen, config.model.variant = False, "pop"
    assert not has_repeat_term(config)


def test_a_run_saved_before_the_option_loads_without_it_and_is_another_recipe(tmp_path):
    root = build_toy(tmp_path, n_items=24, n_users=40)
    config = toy_config("id", root / "store", epochs=1)
    train(root / "ds", tmp_path / "new", config, progress=False)
    assert "repeat_bias" in Run.load(tmp_path / "new").model.state_dict()
    config.model.repeat_term = False  # as trained before the option existed
    train(root / "ds", tmp_path / "old", config, progress=False)
    record = json.loads((tmp_path / "old" / "config.json").read_text())
    del record["config"]["model"]["repeat_term"]  # config.json as it was written then
    (tmp_path / "old" / "config.json").write_text(json.dumps(record))
    old = Run.load(tmp_path / "old")
    assert not old.config.model.repeat_term and not hasattr(old.model, "repeat_bias")
    dataset = Dataset.load(root / "ds")
    assert made_with(record, config, dataset)
    config.model.repeat_term = True  # today's default learns a repeat bias: another Run
    assert not made_with(record, config, dataset)
    config.eval.exclude_seen = True  # ...except where it is never built
    record["config"]["eval"]["exclude_seen"] = True
    assert made_with(record, config, dataset)
