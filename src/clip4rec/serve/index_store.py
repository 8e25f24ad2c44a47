"""A FAISS index persisted beside a Run: ``RUN/index/{kind}.faiss`` + ``RUN/index/{kind}.json``.

Built once by ``clip4rec index RUN --kind ivf|hnsw`` (seconds to minutes for a million items), loaded by ``clip4rec serve``
in seconds. The JSON records what the index was built from: the sha256 of the item table it indexes (its
float32 bytes and the item id order), so a Run retrained or re-exported after the build is refused with a
clear message instead of being served through an index of vectors that no longer exist.

Written atomically (``clip4rec.files``: temp file + ``os.replace``), index first, manifest last: a manifest means a complete index.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from clip4rec.files import atomic_write, write_json
from clip4rec.serve.index import FaissIndex, _faiss

INDEX_DIR = "index"


class StaleIndexError(ValueError):
    """The persisted index was built from another item table than the Run's current one."""


def table_fingerprint(table: torch.Tensor | np.ndarray, item_ids: Sequence[str]) -> str:
    data = table.detach().numpy() if isinstance(table, torch.Tensor) else table
    h = hashlib.sha256(json.dumps(list(item_ids)).encode())
    h.update(np.ascontiguousarray(data, dtype=np.float32).tobytes())
    return h.hexdigest()


def index_paths(run_dir: str | Path, kind: str) -> tuple[Path, Path]:
    base = Path(run_dir) / INDEX_DIR
    return base / f"{kind}.faiss", base / f"{kind}.json"


def persisted(run_dir: str | Path) -> list[dict[str, Any]]:
    """Manifests of the indexes persisted beside a Run, newest first."""
    base = Path(run_dir) / INDEX_DIR
    found = []
    for path in base.glob("*.json") if base.is_dir() else []:
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda m: m.get("created", ""), reverse=True)


def build_and_save(run_dir: str | Path, table: torch.Tensor, item_ids: Sequence[str], kind: str = "hnsw",
                   **options: Any) -> dict[str, Any]:
    """Build a FAISS index of ``kind`` over the Run's table and persist it; returns its manifest."""
    t0 = time.perf_counter()
    index = FaissIndex(table, kind=kind, **options)  # type: ignore[arg-type]
    build_s = time.perf_counter() - t0
    faiss = _faiss()
    path, meta = index_paths(run_dir, index.kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: faiss.write_index(index.index, str(tmp)))
    manifest = {"kind": index.kind, "requested_kind": kind, "params": index.params(), "n_items": index.n,
                "dim": int(table.shape[1]), "table_sha256": table_fingerprint(table, item_ids),
                "build_seconds": round(build_s, 3), "index_bytes": path.stat().st_size, "file": path.name,
                "faiss": getattr(faiss, "__version__", None),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(meta, manifest)
    return manifest


def load_persisted(run_dir: str | Path, table: torch.Tensor, item_ids: Sequence[str],
                   kind: str | None = None) -> tuple[FaissIndex, dict[str, Any]] | None:
    """The persisted index of ``kind`` (default: the newest one), checked against the Run's table; None if the
    Run has none. Raises StaleIndexError if it indexes another table, FileNotFoundError if ``kind`` is missing."""
    manifests = persisted(run_dir)
    if kind is not None:
        manifests = [m for m in manifests if m.get("kind") == kind]
        if not manifests:
            raise FileNotFoundError(f"no persisted {kind} index in {Path(run_dir) / INDEX_DIR}: build it with "
                                    f"`clip4rec index {run_dir} --kind {kind}`")
    if not manifests:
        return None
    manifest = manifests[0]
    path, _ = index_paths(run_dir, manifest["kind"])
    want = table_fingerprint(table, item_ids)
    if manifest.get("table_sha256") != want:
        raise StaleIndexError(
            f"{path} was built from another item table (sha256 {str(manifest.get('table_sha256'))[:12]}, "
            f"{manifest.get('n_items')} items) than this Run's ({want[:12]}, {len(item_ids)} items): rebuild it "
            f"with `clip4rec index {run_dir} --kind {manifest['kind']}`, or serve with --index exact")
    if not path.is_file() or path.stat().st_size != manifest.get("index_bytes"):
        raise StaleIndexError(f"{path} is missing or incomplete: rebuild it with "
                              f"`clip4rec index {run_dir} --kind {manifest['kind']}`")
    faiss = _faiss()
    faiss.omp_set_num_threads(max(1, torch.get_num_threads()))
    index = FaissIndex.from_faiss(faiss.read_index(str(path)), manifest["kind"])
    if index.n != len(item_ids):
        raise StaleIndexError(f"{path} holds {index.n} vectors for {len(item_ids)} items: rebuild it")
    return index, manifest
