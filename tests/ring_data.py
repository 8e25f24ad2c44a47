"""A generated ring catalog shared by the tests: users walk items i0, i1, ... in steps of +1 from a random
start, so a sequence model must learn "next = +1" and a content model can place items it never trained on."""

from pathlib import Path

import numpy as np
import pandas as pd

from clip4rec import Dataset
from clip4rec.encode.pipeline import encode_dataset


def save_ring_dataset(root: Path, n_items: int, n_users: int, lengths: tuple[int, int], seed: int,
                      encoder=None) -> Path:
    """Write root/ds (and root/store, encoded with `encoder`, when given); returns root."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start, length = int(rng.integers(n_items)), int(rng.integers(*lengths))
        rows += [(f"u{u}", f"i{(start + t) % n_items}", t) for t in range(length)]
    names = [f"item {k}" for k in range(n_items)]
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(n_items)], "title": names, "text": names})
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    Dataset(items, interactions, {"source": "generated"}).save(root / "ds")
    if encoder is not None:
        encode_dataset(root / "ds", encoder, root / "store", progress=False, log=lambda m: None)
    return root
