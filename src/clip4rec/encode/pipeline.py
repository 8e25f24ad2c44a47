"""The encode pipeline: Dataset -> EmbeddingStore, batched, streaming, resumable, incremental.

    from clip4rec.encode import encode_dataset
    report = encode_dataset("artifacts/ml100k", "lite", "artifacts/store")
    report = encode_dataset(ds, "clip", "store", EncodeConfig(batch_size=64, engine=EngineConfig(name="ray")))
    report = encode_dataset(ds, "item-llm", "store", max_tokens=64)     # encoder options (config.EncoderOptions)

Settings are one typed section of the config tree (``clip4rec.config.EncodeConfig``: batch size, text fields,
the encoder's options, the alignment heads, the engine); the modules it runs, in order: ``plan.py`` (what to
encode, in which batches), ``engines/`` (computing them), ``shards.py`` (shards, then the final files),
``align.py`` (lite's heads), ``manifest.py`` (what the store says about each encoder).

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

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clip4rec.config import AlignConfig, EncodeConfig, EncoderOptions
from clip4rec.encode import safetensors_io as st
from clip4rec.encode.align import AlignmentHeads, as_spec, train_heads
from clip4rec.encode.encoders import Encoder, load_encoder
from clip4rec.encode.engines import Engine, EncoderSpec, get_engine
from clip4rec.encode.manifest import (EncoderEntry, KindCounts, LastRun, align_fingerprint, encoder_fingerprint,
                                      kind_fingerprint, versions)
from clip4rec.encode.plan import Catalog, KindPlan, kind_inputs, plan_kind, read_catalog
from clip4rec.encode.shards import assemble, compute_shards
from clip4rec.encode.store import (FORMAT_VERSION, ModalityFile, align_file, modality_file, read_manifest,
                                   write_manifest)


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


def _log_default(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def encode_dataset(dataset: Any, encoder: str | Encoder | None = None, out: str | os.PathLike[str] = "store",
                   settings: EncodeConfig | None = None, *, engine: Engine | None = None, progress: bool = True,
                   log: Callable[[str], None] = _log_default, **encoder_options: Any) -> EncodeReport:
    """Encode every item of ``dataset`` (a Dataset or its directory) into the store at ``out``.

    ``encoder``: a name (default: ``settings.encoder``) or an Encoder instance. ``settings``: everything else
    (``EncodeConfig``); ``encoder_options`` (model, threads, device, dtype, max_tokens) update its ``options``.
    ``engine``: an Engine instance to use instead of the one ``settings.engine`` describes.
    """
    from clip4rec.data.dataset import Dataset

    t0 = time.perf_counter()
    cfg = _with_options(settings or EncodeConfig(), encoder_options)
    ds = dataset if isinstance(dataset, Dataset) else Dataset.load(dataset)
    enc, spec = _encoder(encoder if encoder is not None else cfg.encoder, cfg.options)
    fields = tuple(cfg.text_fields) if cfg.text_fields else tuple(enc.text_fields)
    enc.text_fields = fields
    if not enc.is_clip:
        log(f"encoder {enc.name}: {enc.note}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    fingerprint = encoder_fingerprint(enc, fields)

    catalog = read_catalog(ds.items, fields)
    if catalog.duplicates:
        log(f"warning: {len(catalog.duplicates)} duplicate item id(s); keeping the first occurrence of each: "
            f"{catalog.duplicates[:10]}")
    ids = catalog.ids
    report = EncodeReport(encoder=enc.name, store=str(root), items=len(ids), duplicates=catalog.duplicates,
                          note=enc.note)
    plans = [_plan(ds, enc, kind, outputs, root, catalog, fields, fingerprint, cfg, log, report)
             for kind, outputs in _kinds(enc)]
    engine = engine if engine is not None else get_engine(cfg.engine)
    try:
        compute_shards(engine, enc, spec, fingerprint, plans, ids, progress)
    finally:
        engine.close()
    reencoded: set[int] = set()
    for plan in plans:
        report.bad_inputs[plan.kind] = assemble(enc.name, plan, root, ids)
        reencoded.update(plan.todo)
    report.items_reencoded = len(reencoded)

    alignment = _alignment(root, enc, align_fingerprint(fingerprint, fields), cfg, log) if enc.needs_alignment else None
    report.wall_s = time.perf_counter() - t0
    report.items_per_s = (report.items_reencoded / report.wall_s) if report.wall_s > 0 else 0.0
    _write_entry(root, ds, enc, fingerprint, fields, alignment, report, cfg.batch_size, engine.describe())
    shutil.rmtree(root / ".work" / enc.name, ignore_errors=True)
    try:
        (root / ".work").rmdir()
    except OSError:
        pass
    return report


def _with_options(cfg: EncodeConfig, encoder_options: dict[str, Any]) -> EncodeConfig:
    if not encoder_options:
        return cfg
    options = EncoderOptions.model_validate({**cfg.options.given(), **encoder_options})
    return cfg.model_copy(update={"options": options})


def _encoder(encoder: str | Encoder, options: EncoderOptions) -> tuple[Encoder, EncoderSpec]:
    """The encoder, and how a remote worker rebuilds the same one (its fingerprint is checked against ours there)."""
    if isinstance(encoder, Encoder):
        return encoder, EncoderSpec(instance=encoder)
    given = options.given()
    return load_encoder(encoder, **given), EncoderSpec(name=encoder, options=dict(given))


def _kinds(enc: Encoder) -> list[tuple[str, dict[str, int]]]:
    """What the encoder makes: from the image and/or from the text, with each output modality's width."""
    return [(kind, outputs) for kind, outputs in (("image", enc.image_outputs), ("text", enc.text_outputs)) if outputs]


def _plan(ds: Any, enc: Encoder, kind: str, outputs: dict[str, int], root: Path, catalog: Catalog,
          fields: tuple[str, ...], fingerprint: str, cfg: EncodeConfig, log: Callable[[str], None],
          report: EncodeReport) -> KindPlan:
    inputs, hashes = kind_inputs(ds, kind, catalog, fields, cfg.engine.workers)
    plan = plan_kind(enc.name, kind, outputs, root, catalog.ids, inputs, hashes,
                     kind_fingerprint(fingerprint, kind, fields), cfg.batch_size, log)
    report.encoded[kind] = len(plan.todo)
    report.reused[kind] = len(catalog.ids) - len(plan.todo)
    report.resumed_shards[kind] = plan.resumed
    return plan


def _alignment(root: Path, enc: Encoder, fingerprint: str, cfg: EncodeConfig,
               log: Callable[[str], None]) -> dict[str, Any] | None:
    try:
        return ensure_alignment(root, enc, fingerprint, realign=cfg.realign, options=cfg.align, log=log)
    except ValueError as err:  # e.g. fewer than 3 items with both an image and a text
        log(f"warning: no alignment heads for {enc.name}: {err}; image and text stay in unrelated spaces")
        return None


def ensure_alignment(root: Path, enc: Any, fingerprint: str, realign: bool = False,
                     options: AlignConfig | dict[str, Any] | None = None,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or keep) the heads for a store; returns the manifest's ``alignment`` entry.

    Existing heads are kept on refresh (so unchanged items keep byte-identical shared vectors); pass
    ``realign=True`` (``--realign``) to retrain them on the current catalog.
    """
    path = align_file(root, enc.name)
    spec = as_spec(options)
    if path.is_file() and not realign:
        heads = AlignmentHeads.load(path)
        _, meta = st.load(path)
        info = json.loads(meta.get("info", "{}"))
        if info.get("fingerprint") == fingerprint:
            return {"file": path.name, "kept": True, **{k: info.get(k) for k in ("pairs", "temperature", "trained")},
                    "spec": heads.spec}
    files = {m: ModalityFile(modality_file(root, enc.name, m)) for m in spec["image_inputs"] + spec["text_inputs"]}
    both = np.logical_and.reduce([f.mask for f in files.values()])
    img = {m: files[m].read_vectors()[both] for m in spec["image_inputs"]}
    txt = {m: files[m].read_vectors()[both] for m in spec["text_inputs"]}
    log(f"{enc.name}: training alignment heads ({spec['method']}) on {int(both.sum())} image-text pairs "
        f"of this catalog - a stand-in for CLIP's shared space, not CLIP")
    heads, info = train_heads(img, txt, spec)
    info.update({"fingerprint": fingerprint, "trained": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    heads.save(path, info)
    return {"file": path.name, "kept": False, **{k: info.get(k) for k in ("pairs", "temperature", "trained")},
            "spec": heads.spec}


def _write_entry(root: Path, ds: Any, enc: Encoder, fingerprint: str, fields: tuple[str, ...],
                 alignment: dict[str, Any] | None, report: EncodeReport, batch_size: int,
                 engine: dict[str, Any]) -> None:
    """Record this encoder's entry in the store manifest (the store's other encoders are left as they are)."""
    manifest = read_manifest(root)
    old = manifest.get("encoders", {}).get(enc.name, {})
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    kinds = _kinds(enc)
    dims = {m: d for _, outs in kinds for m, d in outs.items()}
    n, bad = report.items, report.bad_inputs
    entry = EncoderEntry(
        encoder=enc.name, is_clip=bool(enc.is_clip), stand_in_for_clip=enc.name == "lite", note=enc.note,
        auto_choice=getattr(enc, "auto_reason", None), identity=enc.identity(), settings=enc.settings(),
        fingerprint=fingerprint, text_fields=list(fields), dims=dims,
        kinds={m: k for k, outs in kinds for m in outs}, files={m: modality_file(root, enc.name, m).name for m in dims},
        shared=list(enc.shared) if enc.shared else None, alignment=alignment, items=n,
        counts={k: KindCounts(usable=n - len(bad.get(k, {})), bad=len(bad.get(k, {}))) for k, _ in kinds},
        bad_inputs=bad, duplicate_item_ids=report.duplicates,
        created=old.get("created", now) if old.get("fingerprint") == fingerprint else now, updated=now,
        versions=versions(), dataset=str(ds.root) if ds.root else None,
        last_run=LastRun(encoded=report.encoded, reused=report.reused, items_reencoded=report.items_reencoded,
                         rows_encoded=sum(report.encoded.values()), resumed_shards=report.resumed_shards,
                         wall_s=round(report.wall_s, 3), items_per_s=round(report.items_per_s, 3),
                         batch_size=batch_size, **engine))
    manifest.setdefault("encoders", {})[enc.name] = entry.model_dump()
    manifest["format_version"] = FORMAT_VERSION
    manifest["updated"] = now
    write_manifest(root, manifest)
