"""A Run directory: what `train` leaves, and all that `evaluate` and `serve` read. `Run.save` / `Run.load` are
symmetric, like save_pretrained / from_pretrained: a Run carries its own data, so it loads (and can be copied to
another machine) without its Dataset and without its embedding stores.

RUN/config.json             effective config + the dataset it was trained on + versions (the Run's record)
RUN/split.json              split description, with the sha256 fingerprints of its (user, target) pairs
RUN/model.safetensors       best-validation weights, and the item side's fitted buffers (content, means, bases)
RUN/item_ids.json           row -> item id
RUN/item_table.safetensors  the final item vectors the online stage scores against
RUN/data.safetensors        training counts, the cold-item mask, the validation and test cases (histories as
                            offsets + items, targets) and every user's interactions, as item rows
RUN/data.json               the strings beside them: case and user ids, item titles, image paths
RUN/run.json                format and the shapes the model skeleton is rebuilt from (content blocks; a
                            smollm2 tower's LM architecture); written last, so a Run with run.json is complete
Written by training: checkpoint.pt, train_log.jsonl, training.json; by evaluation: metrics.json and
{test,valid}.{run,qrels}.trec.

Runs written before run.json existed still load, the way they always did: from the Dataset and the stores at
the paths they recorded (`Run.load` says so when those are gone).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays
from safetensors.torch import load_file, save_file

from clip4rec.config import Config, saved_config
from clip4rec.data.dataset import Dataset
from clip4rec.data.splits import EvalCases, Split, user_sequences
from clip4rec.files import atomic_write, write_json
from clip4rec.model.build import build_model, content_shapes, empty_model, llm_shape, split_for
from clip4rec.model.modalities import content_for
from clip4rec.model.recommender import SequentialRecommender

RUN_FORMAT = 1
CONFIG, SPLIT, WEIGHTS, MANIFEST = "config.json", "split.json", "model.safetensors", "run.json"
ITEM_IDS, ITEM_TABLE, DATA, DATA_STRINGS = "item_ids.json", "item_table.safetensors", "data.safetensors", "data.json"


@dataclass(eq=False)  # arrays inside: compare their files, not the objects
class Catalog:
    """What serving shows beside the scores: item titles and images (absolute paths: images are referenced,
    not copied, so a moved Run may find none), and each user's interactions, oldest first, as item rows."""

    titles: list[str | None]
    images: list[str | None]
    user_ids: list[str]
    user_items: list[np.ndarray]


@dataclass(eq=False)
class Run:
    """A trained model with everything evaluation and serving read; see the module docstring for its files."""

    config: Config
    model: SequentialRecommender
    item_ids: list[str]
    item_table: torch.Tensor      # [n_items, width], from the model in eval mode
    split: dict[str, Any]         # split.json: kind, seed, counts, fingerprints
    train_counts: np.ndarray      # per item, occurrences in training sequences
    cold_items: np.ndarray        # bool per item: held out of training (cold split)
    valid: EvalCases
    test: EvalCases
    catalog: Catalog
    record: dict[str, Any]        # config.json: the config, the dataset path, versions, creation time
    root: Path | None = None      # the directory it was saved to or loaded from

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def kind(self) -> str:
        return self.split["kind"]

    # ---- from training ------------------------------------------------------------------------------
    @classmethod
    def from_training(cls, record: dict[str, Any], dataset: Dataset, split: Split,
                      model: SequentialRecommender) -> "Run":
        """The Run a trained model makes, with the data evaluation and serving will need taken from its Dataset."""
        model.eval()
        with torch.no_grad():
            table = model.item_table().detach()
        items = dataset.items.set_index("item_id")
        titles = [None if t is None else str(t) for t in items.loc[split.item_ids, "title"].tolist()]
        images = [dataset.image_path(p) for p in items.loc[split.item_ids, "image"].tolist()]
        users, sequences, _ = user_sequences(dataset)
        return cls(saved_config(record["config"]), model, list(split.item_ids), table, split.describe(),
                   split.train_counts, split.cold_items, split.valid, split.test,
                   Catalog(titles, [None if p is None else str(p) for p in images], users, sequences), record)

    # ---- save / load --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        write_json(root / CONFIG, self.record)
        write_json(root / SPLIT, self.split)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        atomic_write(root / WEIGHTS, lambda tmp: save_file(weights, str(tmp)))
        write_json(root / ITEM_IDS, self.item_ids)
        table = {"item_table": self.item_table.detach().cpu().contiguous()}
        atomic_write(root / ITEM_TABLE, lambda tmp: save_file(table, str(tmp)))
        arrays = {"train_counts": np.asarray(self.train_counts, np.int64),
                  "cold_items": np.asarray(self.cold_items, bool),
                  **_ragged("users", self.catalog.user_items)}
        for name, cases in (("valid", self.valid), ("test", self.test)):
            arrays.update(_ragged(name, cases.histories))
            arrays[f"{name}.targets"] = np.asarray(cases.targets, np.int64)
        atomic_write(root / DATA, lambda tmp: save_arrays(arrays, str(tmp)))
        write_json(root / DATA_STRINGS, {"valid_user_ids": self.valid.user_ids, "test_user_ids": self.test.user_ids,
                                         "user_ids": self.catalog.user_ids, "titles": self.catalog.titles,
                                         "images": self.catalog.images})
        manifest = {"format": RUN_FORMAT, "n_items": self.n_items, "content": content_shapes(self.model)}
        llm = llm_shape(self.model)
        if llm is not None:  # only smollm2 Runs: every other run.json stays as it was
            manifest["llm"] = llm
        write_json(root / MANIFEST, manifest)
        self.root = root
        return root

    @classmethod
    def load(cls, directory: str | Path) -> "Run":
        """The Run in `directory`, its model in eval mode on the CPU."""
        root = Path(directory)
        if not (root / CONFIG).exists() or not (root / WEIGHTS).exists():
            raise FileNotFoundError(f"{root} is not a finished Run directory ({CONFIG} / {WEIGHTS} missing)")
        record = json.loads((root / CONFIG).read_text())
        config = saved_config(record["config"])
        if not (root / MANIFEST).exists():
            return _load_legacy(root, record, config)
        manifest = json.loads((root / MANIFEST).read_text())
        if manifest.get("format") != RUN_FORMAT:
            raise ValueError(f"{root} is a Run of format {manifest.get('format')}; this clip4rec reads {RUN_FORMAT}")
        item_ids = json.loads((root / ITEM_IDS).read_text())
        model = empty_model(config, len(item_ids), manifest["content"], manifest.get("llm"))
        model.load_state_dict(load_file(root / WEIGHTS))
        model.eval()
        arrays, strings = load_arrays(str(root / DATA)), json.loads((root / DATA_STRINGS).read_text())
        valid, test = (EvalCases(strings[f"{name}_user_ids"], _unragged(arrays, name), arrays[f"{name}.targets"])
                       for name in ("valid", "test"))
        split = json.loads((root / SPLIT).read_text())
        if test.pairs_hash(item_ids) != split["test_pairs_sha256"]:
            raise ValueError(f"{root}: its test cases do not match the split fingerprint in {SPLIT}")
        catalog = Catalog(strings["titles"], strings["images"], strings["user_ids"], _unragged(arrays, "users"))
        # A fresh (aligned) copy: load_file's tensors sit at arbitrary offsets of the file's buffer, and torch.mv
        # over a misaligned table takes another SIMD path, which changes a score's last bit (seen in serving).
        table = load_file(root / ITEM_TABLE)["item_table"].clone()
        return cls(config, model, item_ids, table, split, arrays["train_counts"], arrays["cold_items"], valid, test,
                   catalog, record, root)


def _ragged(name: str, rows: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A list of int arrays as two flat ones: `name.items` and `name.offsets` (row r is items[o[r]:o[r+1]])."""
    lengths = np.fromiter((len(r) for r in rows), np.int64, count=len(rows))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    return {f"{name}.items": items, f"{name}.offsets": offsets}


def _unragged(arrays: dict[str, np.ndarray], name: str) -> list[np.ndarray]:
    offsets, items = arrays[f"{name}.offsets"], arrays[f"{name}.items"]
    return [items[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def _load_legacy(root: Path, record: dict[str, Any], config: Config) -> Run:
    """A Run written before Runs carried their data: rebuilt from the Dataset and stores it recorded, as such
    Runs were always loaded (the model from its content tables, then its saved weights)."""
    try:
        dataset = Dataset.load(record["dataset"])
    except ValueError as err:
        raise FileNotFoundError(f"{root} was written before Runs carried their own data (it has no {MANIFEST}) and "
                                f"its dataset cannot be read ({err}); train it again to get a self-contained Run") from None
    split = split_for(dataset, config)
    expected = json.loads((root / SPLIT).read_text())["test_pairs_sha256"]
    if split.test.pairs_hash(split.item_ids) != expected:
        raise ValueError(f"the dataset at {record['dataset']} no longer gives the split this Run was trained on")
    m = config.model
    model = build_model(config, split.train_counts, content_for(m.variant, m.stores, m.modalities, split.item_ids))
    model.load_state_dict(load_file(root / WEIGHTS))
    run = Run.from_training(record, dataset, split, model)
    run.root = root
    return run
