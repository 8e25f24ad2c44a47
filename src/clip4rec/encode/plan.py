"""Planning an encode run: the deduplicated catalog, each item's input and its hash, and per kind (image, text)
which rows are copied from the existing store, which are encoded, in which batches, and which batches still
lack a finished shard (what the engine computes). See ``pipeline.py`` for why each guarantee holds."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clip4rec.encode import safetensors_io as st
from clip4rec.encode.engines import KindWork
from clip4rec.encode.images import file_hash
from clip4rec.encode.store import ModalityFile, decode_ids, modality_file
from clip4rec.encode.text import compose_text, text_hash


@dataclass
class Catalog:
    """The items to encode, in catalog order, first occurrence of each id kept."""

    rows: list[dict[str, Any]]
    duplicates: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r["item_id"] for r in self.rows]


def read_catalog(items: Any, fields: tuple[str, ...]) -> Catalog:
    """The columns the encoder reads, one row per item id (later duplicates are listed, not encoded)."""
    cols = [c for c in dict.fromkeys(["item_id", "image", *fields]) if c in items.columns]
    seen: set[str] = set()
    catalog = Catalog([])
    for row in items[cols].to_dict("records"):
        if row["item_id"] in seen:
            catalog.duplicates.append(row["item_id"])
            continue
        seen.add(row["item_id"])
        catalog.rows.append(row)
    return catalog


def kind_inputs(dataset: Any, kind: str, catalog: Catalog, fields: tuple[str, ...],
                workers: int | None) -> tuple[list[Any], list[bytes]]:
    """Per item: the encoder's input (an image path, or the composed text) and the sha256 it is known by."""
    if kind == "image":
        paths = [dataset.image_path(r.get("image")) for r in catalog.rows]
        with ThreadPoolExecutor(max(2, workers or min(4, os.cpu_count() or 2))) as pool:
            return paths, list(pool.map(file_hash, paths))
    texts = [compose_text(r, fields) for r in catalog.rows]
    return texts, [text_hash(t) for t in texts]


@dataclass
class KindPlan:
    """One kind's plan: which rows are reused from the old store, which are encoded, in which batches/shards."""

    kind: str
    outputs: dict[str, int]
    fingerprint: str
    hashes: list[bytes]
    reuse: list[int]                  # per item: row of the old file to copy, or -1
    old: dict[str, ModalityFile]
    todo: list[int]                   # items to encode, catalog order
    batches: list[tuple[int, int]]    # slices of ``todo``; batch b is shard b
    shard_path: list[Path]
    work: KindWork                    # the batches without a finished shard: what the engine computes

    @property
    def resumed(self) -> int:
        return len(self.batches) - len(self.work.batches)


def plan_kind(enc_name: str, kind: str, outputs: dict[str, int], root: Path, ids: list[str], inputs: list[Any],
              hashes: list[bytes], fingerprint: str, batch_size: int, log: Callable[[str], None]) -> KindPlan:
    reuse, old = old_rows(root, enc_name, outputs, fingerprint, ids, hashes)
    todo = [i for i, r in enumerate(reuse) if r < 0]
    work_dir = _work_dir(root, enc_name, kind, _plan_id(fingerprint, kind, batch_size, ids, hashes, todo))
    batches = list(st.chunks(len(todo), batch_size))
    shard_path = [work_dir / f"shard-{b:06d}.safetensors" for b in range(len(batches))]
    work = KindWork(kind, dict(outputs))
    for b, (s, e) in enumerate(batches):
        rows = todo[s:e]
        if not shard_ok(shard_path[b], e - s, [ids[i] for i in rows]):
            work.batches.append((b, [ids[i] for i in rows], [inputs[i] for i in rows]))
    plan = KindPlan(kind, dict(outputs), fingerprint, hashes, reuse, old, todo, batches, shard_path, work)
    if plan.resumed:
        log(f"{kind}: resuming - {plan.resumed} of {len(batches)} batch shard(s) already done")
    return plan


def _plan_id(fingerprint: str, kind: str, batch_size: int, ids: list[str], hashes: list[bytes],
             todo: list[int]) -> str:
    """Same rows to encode, same batches: a resumed run finds its shards by this id."""
    plan = hashlib.sha256(json.dumps([fingerprint, kind, batch_size]).encode())
    for i in todo:
        plan.update(ids[i].encode() + b"\0" + hashes[i])
    return plan.hexdigest()[:16]


def _work_dir(root: Path, enc_name: str, kind: str, plan_id: str) -> Path:
    work_base = root / ".work" / enc_name
    work_dir = work_base / f"{kind}-{plan_id}"
    if work_base.is_dir():  # shards of a different plan cannot be reused
        for stale in work_base.glob(f"{kind}-*"):
            if stale != work_dir:
                shutil.rmtree(stale, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir


def old_rows(root: Path, enc_name: str, outputs: dict[str, int], fingerprint: str, ids: list[str],
             hashes: list[bytes]) -> tuple[list[int], dict[str, ModalityFile]]:
    """For each item, the row of the existing store files it can be copied from (-1: must be encoded).

    An item is reusable only if *every* modality file of this kind has it with the same input hash and the
    same encoder fingerprint (so a run killed half-way through writing the final files still plans the same).
    """
    reuse = [-1] * len(ids)
    old: dict[str, ModalityFile] = {}
    for m in outputs:
        path = modality_file(root, enc_name, m)
        if not path.is_file():
            return reuse, {}
        try:
            f = ModalityFile(path)
        except (ValueError, KeyError, OSError):
            return reuse, {}
        if f.fingerprint != fingerprint or f.dim != outputs[m]:
            return reuse, {}
        old[m] = f
    first = next(iter(old.values()))
    index = {item_id: r for r, item_id in enumerate(first.item_ids)}
    for m, f in old.items():
        if f.item_ids != first.item_ids or not np.array_equal(np.asarray(f.hash), np.asarray(first.hash)):
            return reuse, {}
    old_hash = np.asarray(first.hash)
    for i, (item_id, h) in enumerate(zip(ids, hashes)):
        r = index.get(item_id)
        if r is not None and bytes(old_hash[r]) == h:
            reuse[i] = r
    return reuse, old


def shard_ok(path: Path, rows: int, ids: list[str]) -> bool:
    """A finished shard of this batch: readable, with exactly these item ids."""
    if not path.is_file():
        return False
    try:
        tensors, _ = st.load(path)
        return tensors["mask"].shape[0] == rows and decode_ids(tensors["item_ids"]) == ids
    except (ValueError, KeyError, OSError):
        return False
