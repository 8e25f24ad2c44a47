"""The two writing steps of an encode run: every computed batch becomes a shard as it arrives (so a killed run
resumes from them), then the final per-modality files are assembled from the reused rows of the old store and
the shards, in catalog order, streamed in row chunks (bounded memory), each written atomically."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from clip4rec.encode import safetensors_io as st
from clip4rec.encode.encoders import Encoder
from clip4rec.encode.engines import Engine, EncoderSpec
from clip4rec.encode.plan import KindPlan
from clip4rec.encode.store import FORMAT_VERSION, encode_ids, modality_file


def compute_shards(engine: Engine, enc: Encoder, spec: EncoderSpec, fingerprint: str, plans: list[KindPlan],
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


class _Shards:
    """Rows of the finished shards by position in ``plan.todo``; the last few shards read are kept in memory."""

    def __init__(self, plan: KindPlan) -> None:
        self.plan = plan
        self.size = plan.batches[0][1] - plan.batches[0][0] if plan.batches else 1
        self.cache: dict[int, tuple[dict[str, np.ndarray], dict[str, str]]] = {}

    def shard(self, b: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        if b not in self.cache:
            if len(self.cache) > 4:
                self.cache.pop(next(iter(self.cache)))
            tensors, meta = st.load(self.plan.shard_path[b])
            self.cache[b] = (tensors, json.loads(meta.get("reasons", "{}")))
        return self.cache[b]

    def at(self, position: int) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
        """(tensors, reasons, row) of the shard holding the ``position``-th encoded item."""
        tensors, reasons = self.shard(position // self.size)
        return tensors, reasons, position % self.size


def assemble(enc_name: str, plan: KindPlan, root: Path, ids: list[str], chunk: int = 4096) -> dict[str, str]:
    """Write the kind's final per-modality files; returns why each unusable item's input was unusable."""
    shards = _Shards(plan)
    pos = {i: p for p, i in enumerate(plan.todo)}
    mask, reasons = _mask_and_reasons(plan, ids, shards, pos)
    n = len(ids)
    hashes = np.frombuffer(b"".join(plan.hashes), np.uint8).reshape(n, 32) if n else np.zeros((0, 32), np.uint8)
    id_blob = encode_ids(ids)
    for m, d in plan.outputs.items():
        meta = {"encoder": enc_name, "modality": m, "kind": plan.kind, "fingerprint": plan.fingerprint,
                "format_version": str(FORMAT_VERSION), "reasons": json.dumps(reasons, ensure_ascii=False)}
        specs = [("vectors", np.float32, (n, d)), ("mask", np.uint8, (n,)), ("hash", np.uint8, (n, 32)),
                 ("item_ids", np.uint8, (len(id_blob),))]
        with st.StreamWriter(modality_file(root, enc_name, m), specs, meta) as w:
            for s, e in st.chunks(n, chunk):
                block = np.zeros((e - s, d), np.float32)
                for i in range(s, e):
                    if plan.reuse[i] >= 0:
                        block[i - s] = plan.old[m].row(plan.reuse[i])
                    else:
                        tensors, _, row = shards.at(pos[i])
                        block[i - s] = tensors[f"v:{m}"][row]
                w.write("vectors", block)
            w.write("mask", mask)
            w.write("hash", hashes)
            w.write("item_ids", id_blob)
            w.commit()
    return reasons


def _mask_and_reasons(plan: KindPlan, ids: list[str], shards: _Shards,
                      pos: dict[int, int]) -> tuple[np.ndarray, dict[str, str]]:
    """Per item: usable or not, and why not: from the old file for reused rows, from the shards for new ones."""
    first_old = next(iter(plan.old.values()), None)
    mask = np.zeros(len(ids), np.uint8)
    reasons: dict[str, str] = {}
    for i in range(len(ids)):
        if plan.reuse[i] >= 0:
            assert first_old is not None
            mask[i] = first_old.mask[plan.reuse[i]]
            why = first_old.reasons.get(ids[i])
        else:
            tensors, shard_reasons, row = shards.at(pos[i])
            mask[i] = tensors["mask"][row]
            why = shard_reasons.get(ids[i])
        if why:
            reasons[ids[i]] = why
    return mask, reasons
