"""The encode pipeline: Dataset -> EmbeddingStore, batched, streaming, resumable, incremental.

    from clip4rec.encode import encode_dataset
    report = encode_dataset("artifacts/ml100k", encoder="lite", out="artifacts/store")

How it works, and why each guarantee holds:

* **Plan.** Every item's input is hashed (image: sha256 of the file bytes; text: sha256 of the composed,
  cleaned text). Rows of an existing store file whose id and hash still match (same encoder fingerprint) are
  reused byte for byte; the rest ("todo", in catalog order) is cut into fixed batches of ``batch_size``.
* **Shards.** Each batch's vectors are written as one shard (temp file + fsync + ``os.replace``) under
  ``STORE/.work/<encoder>/<kind>-<plan hash>/``. A run killed at any moment (kill -9 included) leaves only
  complete shards; the next run with the same plan skips them and recomputes the rest *with the same batch
  composition*, so every vector is bit-identical to an uninterrupted run. A changed plan discards old shards.
* **Engine.** Which batches to compute is decided here; *how* they are computed is the engine's job
  (``clip4rec.encode.engines``): ``local`` decodes images with a worker pool a few batches ahead of the model in
  this process; ``ray`` runs decode and the model as stages of a Ray Data pipeline (actor pool holding the frozen
  model), locally or on a cluster. Both compute exactly the planned batches and hand them back here to be
  written as shards, so the store, resume and refresh do not depend on the engine.
* **Finish.** Final files are streamed row-chunk by row-chunk in catalog order (bounded memory), each written
  atomically; then (lite) the alignment heads; then the manifest; then the shards are deleted.
* **Bad input** never stops the run: the row gets mask 0 and a zero vector; the reason is kept per item
  in the file and counted/listed in the manifest and the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clip4rec.encode import safetensors_io as st
from clip4rec.encode.encoders import Encoder, load_encoder
from clip4rec.encode.engines import Engine, EncoderSpec, KindWork, get_engine
from clip4rec.encode.images import file_hash
from clip4rec.encode.store import (FORMAT_VERSION, ModalityFile, encode_ids, modality_file,
                                   read_manifest, write_manifest)
from clip4rec.encode.text import compose_text, text_hash


@dataclass
class EncodeReport:
    encoder: str
    store: str
    items: int
    encoded: dict[str, int] = field(default_factory=dict)       # per kind: rows (re-)encoded this run
    reused: dict[str, int] = field(default_factory=dict)        # per kind: rows kept from the existing store
    resumed_shards: dict[str, int] = field(default_factory=dict)
    bad_inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    items_reencoded: int = 0
    wall_s: float = 0.0
    items_per_s: float = 0.0
    note: str = ""

    def lines(self, max_listed: int = 20) -> list[str]:
        out = [f"encoder {self.encoder}: {self.items} items -> {self.store}"]
        if self.note:
            out.append(f"  note: {self.note}")
        for kind in self.encoded:
            out.append(f"  {kind}: encoded {self.encoded[kind]}, reused {self.reused.get(kind, 0)}"
                       + (f", resumed from {self.resumed_shards[kind]} finished shard(s)"
                          if self.resumed_shards.get(kind) else ""))
        out.append(f"  items re-encoded this run: {self.items_reencoded}; {self.wall_s:.1f}s, "
                   f"{self.items_per_s:.1f} items/s")
        for kind, bad in self.bad_inputs.items():
            if bad:
                out.append(f"  {len(bad)} item(s) without a usable {kind} (masked):")
                for item_id, why in list(bad.items())[:max_listed]:
                    out.append(f"    {item_id}: {why}")
                if len(bad) > max_listed:
                    out.append(f"    ... and {len(bad) - max_listed} more (all listed in manifest.json)")
        if self.duplicates:
            out.append(f"  {len(self.duplicates)} duplicate item id(s) skipped (first occurrence kept): "
                       f"{self.duplicates[:10]}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("clip4rec", "torch", "transformers", "numpy", "pillow", "safetensors", "gguf"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def encoder_fingerprint(enc: Encoder, text_fields: tuple[str, ...] | None = None) -> str:
    """What, besides an item's input, determines its vectors. Text fields change only the text rows: the
    per-kind fingerprint is derived from this one (image rows do not depend on ``text_fields``)."""
    blob = json.dumps({"name": enc.name, "identity": enc.identity(), "settings": enc.settings(),
                       "format": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _log_default(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def encode_dataset(dataset: Any, encoder: str | Encoder = "lite", out: str | os.PathLike[str] = "store", *,
                   batch_size: int = 32, workers: int | None = None, decode: str = "thread", prefetch: int = 2,
                   text_fields: tuple[str, ...] | list[str] | None = None, realign: bool = False,
                   align_options: dict[str, Any] | None = None, progress: bool = True,
                   log: Callable[[str], None] = _log_default, engine: str | Engine = "local",
                   engine_options: dict[str, Any] | None = None, **encoder_options: Any) -> EncodeReport:
    """Encode every item of ``dataset`` (a Dataset or its directory) into the store at ``out``.

    ``engine``: ``"local"`` (``workers``/``decode``/``prefetch`` apply) or ``"ray"`` (``engine_options``: address,
    actors, actor_cpus, actor_gpus, decode_cpus, num_cpus; see ``engines/ray_engine.py``), or an Engine.
    """
    from clip4rec.data.dataset import Dataset

    t0 = time.perf_counter()
    ds = dataset if isinstance(dataset, Dataset) else Dataset.load(dataset)
    if isinstance(engine, str):
        engine = (get_engine("local", workers=workers, decode=decode, prefetch=prefetch) if engine == "local"
                  else get_engine(engine, **(engine_options or {})))
    enc = encoder if isinstance(encoder, Encoder) else load_encoder(encoder, **encoder_options)
    # how a remote worker rebuilds the same encoder (its fingerprint is checked against ours there)
    spec = (EncoderSpec(instance=encoder) if isinstance(encoder, Encoder)
            else EncoderSpec(name=encoder, options=dict(encoder_options)))
    fields = tuple(text_fields) if text_fields else tuple(enc.text_fields)
    enc.text_fields = fields
    if not enc.is_clip:
        log(f"encoder {enc.name}: {enc.note}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    fingerprint = encoder_fingerprint(enc, fields)

    # ---- the catalog, deduplicated -------------------------------------------------------------
    items = ds.items
    cols = [c for c in dict.fromkeys(["item_id", "image", *fields]) if c in items.columns]
    rows = items[cols].to_dict("records")
    seen: set[str] = set()
    dups: list[str] = []
    keep: list[dict[str, Any]] = []
    for row in rows:
        if row["item_id"] in seen:
            dups.append(row["item_id"])
            continue
        seen.add(row["item_id"])
        keep.append(row)
    if dups:
        log(f"warning: {len(dups)} duplicate item id(s); keeping the first occurrence of each: {dups[:10]}")
    ids = [r["item_id"] for r in keep]
    n = len(ids)
    report = EncodeReport(encoder=enc.name, store=str(root), items=n, duplicates=dups, note=enc.note)

    kinds: list[tuple[str, dict[str, int]]] = []
    if enc.image_outputs:
        kinds.append(("image", enc.image_outputs))
    if enc.text_outputs:
        kinds.append(("text", enc.text_outputs))

    plans: list[_KindPlan] = []
    for kind, outputs in kinds:
        if kind == "image":
            paths = [ds.image_path(r.get("image")) for r in keep]
            kind_fp = hashlib.sha256(f"{fingerprint}:image".encode()).hexdigest()
            with ThreadPoolExecutor(max(2, workers or min(4, os.cpu_count() or 2))) as pool:
                hashes = list(pool.map(file_hash, paths))
            inputs: list[Any] = paths
        else:
            texts = [compose_text(r, fields) for r in keep]
            hashes = [text_hash(t) for t in texts]
            inputs = texts
            kind_fp = hashlib.sha256(f"{fingerprint}:text:{json.dumps(list(fields))}".encode()).hexdigest()
        plans.append(_plan_kind(enc.name, kind, outputs, root, ids, inputs, hashes, kind_fp, batch_size, log, report))
    try:
        _compute_shards(engine, enc, spec, fingerprint, plans, ids, progress)
    finally:
        engine.close()
    reencoded: set[int] = set()
    for plan in plans:
        _assemble(enc.name, plan, root, ids, report)
        reencoded.update(plan.todo)
    report.items_reencoded = len(reencoded)

    # ---- alignment heads (lite), manifest, cleanup ----------------------------------------------
    manifest = read_manifest(root)
    old_entry = manifest.get("encoders", {}).get(enc.name, {})
    alignment = None
    if enc.needs_alignment:
        from clip4rec.encode.align import ensure_alignment
        align_fp = hashlib.sha256(f"{fingerprint}:align:{json.dumps(list(fields))}".encode()).hexdigest()
        try:
            alignment = ensure_alignment(root, enc, align_fp, realign=realign, options=align_options, log=log)
        except ValueError as err:  # e.g. fewer than 3 items with both an image and a text
            log(f"warning: no alignment heads for {enc.name}: {err}; image and text stay in unrelated spaces")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    dims = {m: d for _, outs in kinds for m, d in outs.items()}
    entry = {
        "encoder": enc.name,
        "is_clip": bool(enc.is_clip),
        "stand_in_for_clip": enc.name == "lite",
        "note": enc.note,
        "auto_choice": getattr(enc, "auto_reason", None),
        "identity": enc.identity(),
        "settings": enc.settings(),
        "fingerprint": fingerprint,
        "text_fields": list(fields),
        "dims": dims,
        "kinds": {m: k for k, outs in kinds for m in outs},
        "files": {m: modality_file(root, enc.name, m).name for m in dims},
        "shared": list(enc.shared) if enc.shared else None,
        "alignment": alignment,
        "items": n,
        "counts": {k: {"usable": n - len(report.bad_inputs.get(k, {})), "bad": len(report.bad_inputs.get(k, {}))}
                   for k, _ in kinds},
        "bad_inputs": report.bad_inputs,
        "duplicate_item_ids": dups,
        "created": old_entry.get("created", now) if old_entry.get("fingerprint") == fingerprint else now,
        "updated": now,
        "versions": versions(),
        "dataset": str(ds.root) if ds.root else None,
    }
    report.wall_s = time.perf_counter() - t0
    total_encoded = sum(report.encoded.values())
    report.items_per_s = (report.items_reencoded / report.wall_s) if report.wall_s > 0 else 0.0
    entry["last_run"] = {"encoded": report.encoded, "reused": report.reused, "items_reencoded": report.items_reencoded,
                         "rows_encoded": total_encoded, "resumed_shards": report.resumed_shards,
                         "wall_s": round(report.wall_s, 3), "items_per_s": round(report.items_per_s, 3),
                         "batch_size": batch_size, **engine.describe()}
    manifest.setdefault("encoders", {})[enc.name] = entry
    manifest["format_version"] = FORMAT_VERSION
    manifest["updated"] = now
    write_manifest(root, manifest)
    shutil.rmtree(root / ".work" / enc.name, ignore_errors=True)
    try:
        (root / ".work").rmdir()
    except OSError:
        pass
    return report


def _old_rows(root: Path, enc_name: str, outputs: dict[str, int], fingerprint: str, ids: list[str],
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
        if f.fingerprint != fingerprint or f.vectors.shape[1] != outputs[m]:
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


def _batches(n: int, size: int) -> list[tuple[int, int]]:
    return list(st.chunks(n, size))


def _shard_ok(path: Path, rows: int, ids: list[str]) -> bool:
    try:
        tensors, meta = st.load(path)
        from clip4rec.encode.store import decode_ids
        return tensors["mask"].shape[0] == rows and decode_ids(tensors["item_ids"]) == ids
    except (ValueError, KeyError, OSError):
        return False


@dataclass
class _KindPlan:
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


def _plan_kind(enc_name: str, kind: str, outputs: dict[str, int], root: Path, ids: list[str], inputs: list[Any],
               hashes: list[bytes], fingerprint: str, batch_size: int, log: Callable[[str], None],
               report: EncodeReport) -> _KindPlan:
    reuse, old = _old_rows(root, enc_name, outputs, fingerprint, ids, hashes)
    todo = [i for i, r in enumerate(reuse) if r < 0]
    plan = hashlib.sha256(json.dumps([fingerprint, kind, batch_size]).encode())
    for i in todo:
        plan.update(ids[i].encode() + b"\0" + hashes[i])
    plan_id = plan.hexdigest()[:16]
    work_base = root / ".work" / enc_name
    work_dir = work_base / f"{kind}-{plan_id}"
    if work_base.is_dir():  # shards of a different plan cannot be reused
        for stale in work_base.glob(f"{kind}-*"):
            if stale != work_dir:
                shutil.rmtree(stale, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)

    batches = _batches(len(todo), batch_size)
    shard_path = [work_dir / f"shard-{b:06d}.safetensors" for b in range(len(batches))]
    work = KindWork(kind, dict(outputs))
    for b, (s, e) in enumerate(batches):
        rows = todo[s:e]
        if not _shard_ok(shard_path[b], e - s, [ids[i] for i in rows]):
            work.batches.append((b, [ids[i] for i in rows], [inputs[i] for i in rows]))
    resumed = len(batches) - len(work.batches)
    report.encoded[kind] = len(todo)
    report.reused[kind] = len(ids) - len(todo)
    report.resumed_shards[kind] = resumed
    if resumed:
        log(f"{kind}: resuming - {resumed} of {len(batches)} batch shard(s) already done")
    return _KindPlan(kind, dict(outputs), fingerprint, hashes, reuse, old, todo, batches, shard_path, work)


def _compute_shards(engine: Engine, enc: Encoder, spec: EncoderSpec, fingerprint: str, plans: list[_KindPlan],
                    ids: list[str], progress: bool) -> None:
    """Let the engine compute every pending batch; write each one's shard (atomically) as it arrives."""
    works = [p.work for p in plans]
    left_rows = sum(w.rows for w in works)
    bar = None
    if progress and left_rows:
        from tqdm.auto import tqdm
        desc = f"{enc.name}:{'+'.join(w.kind for w in works if w.batches)} ({engine.name})"
        bar = tqdm(total=left_rows, unit="row", desc=desc, dynamic_ncols=True, file=sys.stderr)
    try:
        for w, b, res in engine.compute(enc, spec, fingerprint, works):
            plan = plans[w]
            s, e = plan.batches[b]
            rows = plan.todo[s:e]
            tensors: dict[str, np.ndarray] = {f"v:{m}": res.vectors[m] for m in plan.outputs}
            tensors.update({"mask": res.mask, "item_ids": encode_ids([ids[i] for i in rows]),
                            "hash": np.frombuffer(b"".join(plan.hashes[i] for i in rows), np.uint8).reshape(-1, 32)})
            st.save(plan.shard_path[b], tensors, {"reasons": json.dumps(res.reasons, ensure_ascii=False)})
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()


def _assemble(enc_name: str, plan: _KindPlan, root: Path, ids: list[str], report: EncodeReport,
              chunk: int = 4096) -> None:
    """Write the final per-modality files in catalog order, streaming (bounded memory), atomically."""
    kind, outputs, hashes, reuse, old = plan.kind, plan.outputs, plan.hashes, plan.reuse, plan.old
    todo, batches, shard_path, fingerprint = plan.todo, plan.batches, plan.shard_path, plan.fingerprint
    n = len(ids)
    pos = {i: p for p, i in enumerate(todo)}
    # reasons of bad inputs: from the old file for reused rows, from shards for new ones
    reasons: dict[str, str] = {}
    first_old = next(iter(old.values()), None)
    shard_cache: dict[int, tuple[dict[str, np.ndarray], dict[str, str]]] = {}

    def shard(b: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        if b not in shard_cache:
            if len(shard_cache) > 4:
                shard_cache.pop(next(iter(shard_cache)))
            tensors, meta = st.load(shard_path[b])
            shard_cache[b] = (tensors, json.loads(meta.get("reasons", "{}")))
        return shard_cache[b]

    bs = batches[0][1] - batches[0][0] if batches else 1
    mask_all = np.zeros(n, np.uint8)
    for i in range(n):
        if reuse[i] >= 0:
            mask_all[i] = first_old.mask[reuse[i]]  # type: ignore[union-attr]
            why = first_old.reasons.get(ids[i])  # type: ignore[union-attr]
        else:
            p = pos[i]
            t, r = shard(p // bs)
            mask_all[i] = t["mask"][p % bs]
            why = r.get(ids[i])
        if why:
            reasons[ids[i]] = why
    hash_all = np.frombuffer(b"".join(hashes), np.uint8).reshape(n, 32) if n else np.zeros((0, 32), np.uint8)
    id_blob = encode_ids(ids)
    for m, d in outputs.items():
        meta = {"encoder": enc_name, "modality": m, "kind": kind, "fingerprint": fingerprint,
                "format_version": str(FORMAT_VERSION), "reasons": json.dumps(reasons, ensure_ascii=False)}
        specs = [("vectors", np.float32, (n, d)), ("mask", np.uint8, (n,)), ("hash", np.uint8, (n, 32)),
                 ("item_ids", np.uint8, (len(id_blob),))]
        with st.StreamWriter(modality_file(root, enc_name, m), specs, meta) as w:
            for s, e in st.chunks(n, chunk):
                block = np.zeros((e - s, d), np.float32)
                for i in range(s, e):
                    if reuse[i] >= 0:
                        block[i - s] = old[m].vectors[reuse[i]]
                    else:
                        p = pos[i]
                        block[i - s] = shard(p // bs)[0][f"v:{m}"][p % bs]
                w.write("vectors", block)
            w.write("mask", mask_all)
            w.write("hash", hash_all)
            w.write("item_ids", id_blob)
            w.commit()
    report.bad_inputs[kind] = reasons
