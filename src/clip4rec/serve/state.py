"""What the service holds in memory, and every operation it answers, with no HTTP in sight.

Loaded once from a Run directory alone (model.artifact.Run): the user tower (eval mode), the item table
[n, hidden] the Run scores against, the catalog (ids, titles, training counts, posters, users' histories) and,
for "similar" by image or text, the Run's embedding stores where they still are.

Reads never take a lock. Every request reads one immutable `Snapshot` (table view, index, row count); a
write (POST /items) builds the next snapshot under a writer lock and swaps one attribute. Appended rows go
to a growable buffer beyond the end that older snapshots never look at; replacing a row copies the table
first, so a request in flight never sees a half-written vector.

A request costs: id lookup -> one user-tower pass over the last `max_len` items -> table @ user vector ->
the ranking kernel's exact top-k (a partial sort; ties to the lower item index, as evaluation ranks them), or a
FAISS search plus an exact scan of the rows published after it was built.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from clip4rec.config import IndexChoice, IndexKind, ServeLimits
from clip4rec.model.artifact import Run
from clip4rec.serve.index import ExactIndex, FaissIndex, build_index, exact_top_k, in_rank_order

SimilarBy = Literal["image", "text", "fused"]


class ServeError(Exception):
    """A request the service understood but cannot answer; `status` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class Rows:
    """A [n, d] float32 tensor that grows by appending; views handed out earlier never change.

    A table that is scored (table @ user vector) is stored column-major (a contiguous [d, capacity] buffer;
    `view()` is its transpose): the product then streams each column once with vector adds, which on this
    project's CPU ran 2.2-2.5x faster at width 192 (fused-id) than the row-by-row dot products over a row-major
    table (MKL's transposed gemv), and as fast at width 64 (bench/table_layout.py). Row reads (a history's ~50
    inputs, one item's vector) gather d strided values. `column_major=False` keeps rows contiguous, for a table
    that is only read by rows (the tower's cache).
    """

    def __init__(self, data: torch.Tensor, column_major: bool = True):
        data = data.detach().to(torch.float32)
        self.n, self.column_major = int(data.shape[0]), column_major
        self._buffer = data.t().contiguous() if column_major else data.contiguous()  # [d, n] or [n, d]
        self._lock = threading.Lock()

    def _rows_of(self, buffer: torch.Tensor) -> torch.Tensor:
        """The buffer as [capacity, d] (a view)."""
        return buffer.t() if self.column_major else buffer

    def view(self) -> torch.Tensor:
        return self._rows_of(self._buffer)[: self.n]

    def append(self, row: torch.Tensor) -> torch.Tensor:
        with self._lock:
            rows = self._rows_of(self._buffer)
            if self.n == rows.shape[0]:
                shape = (rows.shape[1], max(16, 2 * self.n))
                bigger = torch.empty(shape if self.column_major else shape[::-1], dtype=torch.float32)
                self._rows_of(bigger)[: self.n] = rows[: self.n]
                self._buffer, rows = bigger, self._rows_of(bigger)
            rows[self.n] = row
            self.n += 1
            return self.view()

    def replace(self, i: int, row: torch.Tensor) -> torch.Tensor:
        with self._lock:
            fresh = self._buffer.clone()  # copy-on-write: readers of the old view keep a consistent table
            self._rows_of(fresh)[i] = row
            self._buffer = fresh
            return self.view()


@dataclass(frozen=True)
class Snapshot:
    n: int
    table: torch.Tensor                    # [n, hidden] view
    index: ExactIndex | FaissIndex         # exact over `table`, or FAISS over the first `ann_n` rows
    ann_n: int = 0
    stale: frozenset[int] = frozenset()    # rows < ann_n whose vector changed after the FAISS build
    keys_values: torch.Tensor | None = None  # [n, c] the user tower's per-item cache (tower_keys_values), if any


@dataclass
class SimilarTable:
    """L2-normalised vectors of one modality (store rows with usable input, plus published items)."""

    key: str
    ids: list[str]
    index_of: dict[str, int]
    rows: Rows
    _view: torch.Tensor | None = field(default=None, repr=False)

    def view(self) -> torch.Tensor:
        return self._view if self._view is not None else self.rows.view()


class ServiceState:
    def __init__(self, model: torch.nn.Module, item_ids: list[str], table: torch.Tensor, *,
                 titles: Sequence[str | None] | None = None, train_counts: np.ndarray | None = None,
                 images: Sequence[Path | None] | None = None, users: dict[str, list[str]] | None = None,
                 similar: dict[str, SimilarTable] | None = None, index: IndexKind = "exact",
                 index_options: dict[str, Any] | None = None, limits: ServeLimits | None = None,
                 info: dict[str, Any] | None = None, prebuilt: FaissIndex | None = None):
        if len(item_ids) != table.shape[0]:
            raise ValueError(f"{len(item_ids)} item ids for a table of {table.shape[0]} rows")
        self.model = model.eval()
        self.max_len = int(getattr(model, "max_len", 50))
        self.limits = limits or ServeLimits()
        self.info = dict(info or {})
        self.n_base = len(item_ids)
        # Append-only catalog: entries at positions >= a snapshot's n are invisible to that snapshot.
        self.item_ids = list(item_ids)
        self.index_of = {item: i for i, item in enumerate(self.item_ids)}
        if len(self.index_of) != len(self.item_ids):
            raise ValueError("duplicate item ids in the catalog")
        self.titles: list[str | None] = list(titles) if titles is not None else [None] * self.n_base
        self.images: list[Path | None] = list(images) if images is not None else [None] * self.n_base
        counts = np.zeros(self.n_base, np.int64) if train_counts is None else np.asarray(train_counts, np.int64)
        self.train_counts = counts
        self.popular = np.argsort(-counts, kind="stable")
        self.published: dict[str, float] = {}   # item id -> unix time it was published
        self.users = users or {}
        self.user_ids = list(self.users)
        self.similar = similar or {}
        self.index_kind: IndexKind = index
        self.index_options = dict(index_options or {})
        self._rows = Rows(table)
        # A tower with a per-item cache (a one-layer SmolLM2: its keys and values) computes it once here, and
        # for each published item as it is published; a request then reads it for its history.
        keys_values = getattr(self.model, "tower_keys_values", None)
        cache = None if keys_values is None else keys_values(self._rows.view())
        self._cache = None if cache is None else Rows(cache, column_major=False)
        self._write = threading.Lock()
        if prebuilt is not None:  # e.g. loaded from RUN/index/ (see index_store.py)
            if prebuilt.n != self.n_base:
                raise ValueError(f"the prebuilt index holds {prebuilt.n} rows for {self.n_base} items")
            self.index_kind = "faiss"
        built = prebuilt if prebuilt is not None else build_index(self._rows.view(), index, **self.index_options)
        self.snapshot = Snapshot(self.n_base, self._rows.view(), built,
                                 ann_n=self.n_base if isinstance(built, FaissIndex) else 0,
                                 keys_values=None if self._cache is None else self._cache.view())

    # ---- loading ------------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run_dir: str | Path, *, stores: Sequence[str | Path] = (),
                 index: IndexChoice = "exact", index_options: dict[str, Any] | None = None,
                 limits: ServeLimits | None = None, llm_dtype: str | None = None) -> "ServiceState":
        """``index``: exact | faiss (built now, in memory) | persisted (the FAISS index `clip4rec index` saved
        beside the Run; ``index_options["kind"]`` picks one, else the newest) | auto (persisted if the Run has
        one, else exact). A persisted index built from another item table is refused (StaleIndexError).
        ``llm_dtype``: an LLM tower's matmul dtype when serving (None: as trained)."""
        run_dir = Path(run_dir)
        t0 = time.perf_counter()
        run = Run.load(run_dir)
        model, item_ids, table, config = run.model, run.item_ids, run.item_table, run.config
        if hasattr(model.tower, "for_serving"):  # an LLM tower: LoRA folded in, weights laid out for one-row requests
            model.tower.for_serving()
            model.tower.compute_dtype = llm_dtype or model.tower.compute_dtype
        prebuilt, index_info = None, None
        if index in ("auto", "persisted"):
            from clip4rec.serve.index_store import load_persisted
            opts = dict(index_options or {})
            found = load_persisted(run_dir, table, item_ids, kind=opts.pop("kind", None))
            if found is None and index == "persisted":
                raise FileNotFoundError(f"{run_dir} has no persisted index: build one with "
                                        f"`clip4rec index {run_dir}`")
            if found is not None:
                prebuilt, manifest = found
                prebuilt.set_search(nprobe=opts.get("nprobe"), ef_search=opts.get("ef_search"))
                index_info = {"kind": prebuilt.kind, "params": prebuilt.params(), "persisted": True,
                              "built": manifest.get("created"), "build_seconds": manifest.get("build_seconds")}
            index, index_options = "faiss" if found is not None else "exact", None
        catalog = run.catalog
        # Images are referenced, not copied: a Run moved away from its Dataset's images serves none.
        images = [None if p is None or not Path(p).exists() else Path(p) for p in catalog.images]
        users = {user: [item_ids[i] for i in rows.tolist()] for user, rows in zip(catalog.user_ids, catalog.user_items)}
        store_dirs = list(stores) or list(config.model.stores)
        used = list(getattr(_fusion(model.item_side), "names", []) or [])
        similar = load_similar_tables(store_dirs, prefer=used)
        info = {"run": str(run_dir), "variant": config.model.variant, "hidden": int(table.shape[1]),
                "max_len": config.model.max_len, "dataset": run.record["dataset"], "modalities": used,
                "stores": [str(s) for s in store_dirs], "load_seconds": None}
        state = cls(model, item_ids, table, titles=catalog.titles, train_counts=run.train_counts, images=images,
                    users=users, similar=similar, index=index, index_options=index_options, limits=limits, info=info,
                    prebuilt=prebuilt)
        built = state.snapshot.index
        if index_info is None and isinstance(built, FaissIndex):
            index_info = {"kind": built.kind, "params": built.params(), "persisted": False}
        if index_info is not None:
            state.info["faiss"] = index_info
        state.info["load_seconds"] = round(time.perf_counter() - t0, 3)
        return state

    # ---- reads ---------------------------------------------------------------------------------------
    def lookup(self, item_id: str, snap: Snapshot | None = None) -> int | None:
        snap = snap or self.snapshot
        i = self.index_of.get(item_id)
        return i if i is not None and i < snap.n else None

    def item_info(self, i: int) -> dict[str, Any]:
        item_id = self.item_ids[i]
        count = int(self.train_counts[i]) if i < self.n_base else 0
        return {"item_id": item_id, "title": self.titles[i], "published": item_id in self.published,
                "cold_start": count == 0, "train_count": count, "has_image": self.images[i] is not None}

    def history_for(self, user_id: str | None, history: Sequence[str] = ()) -> tuple[list[str], int]:
        """(history to score, how many of its ids came from the user): the user's interactions in the Run's
        Dataset, oldest first, then `history`; at most `limits.max_history` ids, the newest kept."""
        if user_id is None:
            return list(history), 0
        if user_id not in self.users:
            raise ServeError(f"unknown user id {user_id!r}", 404)
        room = max(0, self.limits.max_history - len(history))
        stored = self.users[user_id]
        taken = stored[len(stored) - room:] if room else []
        return taken + list(history), len(taken)

    def recommend(self, history: Sequence[str] = (), k: int = 10, exclude_seen: bool = True,
                  user_id: str | None = None) -> dict[str, Any]:
        history, from_user = self.history_for(user_id, history)
        out = self.recommend_many([(history, k, exclude_seen)])[0]
        if isinstance(out, ServeError):
            raise out
        return {**out, "user_id": user_id, "history_from_user": from_user}

    def recommend_many(self, requests: Sequence[tuple[Sequence[str], int, bool]]) -> list[dict[str, Any] | ServeError]:
        """Answers a batch of (history, k, exclude_seen) with one user-tower pass and one table product.

        Concurrent HTTP requests are coalesced into such batches (see app.py): the table is read from memory
        once per batch instead of once per request, which is what bounds throughput on a few cores.
        """
        snap = self.snapshot
        outs: list[dict[str, Any] | ServeError] = []
        pending: list[tuple[int, list[int], list[int], int, bool]] = []
        for j, (history, k, exclude_seen) in enumerate(requests):
            if not 1 <= k <= self.limits.max_k:
                outs.append(ServeError(f"k must be between 1 and {self.limits.max_k}, got {k}"))
                continue
            if len(history) > self.limits.max_history:
                outs.append(ServeError(f"history has {len(history)} ids; at most {self.limits.max_history} are accepted"))
                continue
            known: list[int] = []
            unknown: list[str] = []
            for item in history:
                i = self.lookup(item, snap)
                if i is None:
                    unknown.append(item)
                else:
                    known.append(i)
            window = known[-self.max_len:]
            out: dict[str, Any] = {"unknown_ids": unknown, "history_used": len(window),
                                   "truncated": len(known) - len(window), "max_len": self.max_len, "fallback": None,
                                   "score_kind": "model"}
            outs.append(out)
            if not window:
                # No user vector, so no model score: a training count is not on the model's scale (575 next to
                # ~39), so score is null and train_count (already in every item) is what orders the list.
                out.update(fallback="popularity", score_kind="popularity")
                out["items"] = [{**self.item_info(int(i)), "score": None, "rank": r + 1}
                                for r, i in enumerate(self.popular[:k])]
            else:
                pending.append((j, window, known, k, exclude_seen))
        if not pending:
            return outs
        users = self.model.user_vectors([np.asarray(w, dtype=np.int64) for _, w, _, _, _ in pending], snap.table,
                                        snap.keys_values)
        if isinstance(snap.index, FaissIndex):
            results = [self._search_request(users[b], window, known, k, ex, snap)
                       for b, (_, window, known, k, ex) in enumerate(pending)]
        else:
            results = self._exact_many(users, pending, snap)
        for (j, *_), (indices, scores) in zip(pending, results):
            outs[j]["items"] = [{**self.item_info(int(i)), "score": float(s), "rank": r + 1}
                                for r, (i, s) in enumerate(zip(indices, scores))]
        return outs

    def _exact_many(self, users: torch.Tensor, pending, snap: Snapshot) -> list[tuple[np.ndarray, np.ndarray]]:
        with torch.inference_mode():
            if len(users) == 1:
                scores = torch.mv(snap.table, users[0])[None]
            else:
                scores = torch.mm(users, snap.table.T)  # [B, n]: the table is read once for the whole batch
            # The repeat bias only moves seen items, which a request that excludes them never lists.
            scores = self.model.with_repeat_term(scores, [np.asarray([] if ex else w, dtype=np.int64)
                                                          for _, w, _, _, ex in pending])
            # One top-k at the largest k: the order is total, so each row's first k are its own top k.
            tops = exact_top_k(scores, max(p[3] for p in pending),
                               [known if exclude_seen else [] for _, _, known, _, exclude_seen in pending])
        return [(items[:k], values[:k]) for (items, values), (_, _, _, k, _) in zip(tops, pending)]

    def _search_request(self, user: torch.Tensor, window: list[int], known: list[int], k: int, exclude_seen: bool,
                        snap: Snapshot) -> tuple[np.ndarray, np.ndarray]:
        """One request through the FAISS index. A model's repeat bias moves the window's items, which the index
        does not know: they are left out of its search, scored exactly with the bias, and merged."""
        if exclude_seen:
            return self.search(user, k, sorted(set(known)), snap)
        bias = getattr(self.model, "repeat_bias", None)
        if bias is None:
            return self.search(user, k, [], snap)
        rows = sorted(set(window))
        idx, sc = self.search(user, k, rows, snap)
        with torch.inference_mode():
            own = (torch.mv(snap.table[torch.as_tensor(rows)], user) + bias).numpy()
        return in_rank_order(np.concatenate([idx, np.asarray(rows, dtype=np.int64)]),
                             np.concatenate([sc, own.astype(sc.dtype)]), k)

    def user_vector(self, window: Sequence[int], snap: Snapshot | None = None) -> torch.Tensor:
        snap = snap or self.snapshot
        return self.model.user_vectors([np.asarray(window, dtype=np.int64)], snap.table, snap.keys_values)[0]

    def search(self, query: torch.Tensor, k: int, exclude: Sequence[int] = (),
               snap: Snapshot | None = None) -> tuple[np.ndarray, np.ndarray]:
        snap = snap or self.snapshot
        if not isinstance(snap.index, FaissIndex):
            return snap.index.search(query, k, exclude)
        # FAISS covers rows [0, ann_n) as they were at build time; newer or changed rows are scanned exactly.
        idx, sc = snap.index.search(query, k, list(exclude) + sorted(snap.stale))
        extra = sorted(set(range(snap.ann_n, snap.n)) | set(snap.stale))
        if extra:
            rows = torch.as_tensor(extra, dtype=torch.long)
            extra_scores = torch.mv(snap.table[rows], query).numpy()
            drop = np.isin(np.asarray(extra), np.asarray(list(exclude), dtype=np.int64))
            idx, sc = in_rank_order(np.concatenate([idx, np.asarray(extra)[~drop]]),
                                    np.concatenate([sc, extra_scores[~drop]]), k)
        return idx, sc

    def similar_items(self, item_id: str, by: SimilarBy = "fused", k: int = 10) -> dict[str, Any]:
        if not 1 <= k <= self.limits.max_k:
            raise ServeError(f"k must be between 1 and {self.limits.max_k}, got {k}")
        snap = self.snapshot
        if by == "fused":
            i = self.lookup(item_id, snap)
            if i is None:
                raise ServeError(f"unknown item id {item_id!r}", 404)
            table = self.model.item_vectors(snap.table)
            norms = torch.linalg.vector_norm(table, dim=1).clamp_min(1e-12)
            scores = torch.mv(table, table[i]) / (norms * norms[i])
            (top, values), = exact_top_k(scores[None], k, [[i]])
            pairs = [(int(j), float(s)) for j, s in zip(top, values)]
            source = "item table (the Run's fused vectors)"
        else:
            sim = self.similar.get(by)
            if sim is None:
                raise ServeError(f"no {by} vectors: this service has no embedding store with an {by} modality "
                                 f"(serve with --store STORE)", 404)
            table = sim.view()
            row = sim.index_of.get(item_id)
            if row is None or row >= table.shape[0]:
                raise ServeError(f"item {item_id!r} has no usable {by} vector in {sim.key}", 404)
            # a few extra: store rows of items this Run does not serve (yet) are skipped
            (top, values), = exact_top_k(torch.mv(table, table[row])[None], k + 16, [[row]])
            pairs = []
            for j, s in zip(top.tolist(), values.tolist()):
                i = self.lookup(sim.ids[j], snap)
                if i is not None and len(pairs) < k:
                    pairs.append((i, float(s)))
            source = sim.key
        return {"item_id": item_id, "by": by, "source": source,
                "items": [{**self.item_info(i), "score": s, "rank": r + 1} for r, (i, s) in enumerate(pairs)]}

    def health(self) -> dict[str, Any]:
        snap = self.snapshot
        return {"status": "ok", **self.info, "items": snap.n, "published": len(self.published),
                "index": self.index_kind, "similar_by": ["fused", *sorted(self.similar)], "users": len(self.users)}

    # ---- writes: the live cold-start path -----------------------------------------------------------
    def publish(self, item_id: str, vectors: dict[str, Sequence[float]], title: str | None = None) -> dict[str, Any]:
        """Add (or update) an item from its offline encoder vectors; recommendable as soon as this returns."""
        fusion = _fusion(self.model.item_side)
        if fusion is None:
            raise ServeError(f"this Run (variant {self.info.get('variant', 'id')!r}) has no content path: "
                             "new items need a content variant (text, image, fused, fused-id)", 409)
        content, ignored = self._resolve(fusion, vectors)
        with self._write:
            snap = self.snapshot
            existing = self.lookup(item_id, snap)
            # A trained item keeps its learned ID part; a new one is scored through its content alone.
            trained = existing if existing is not None and existing < self.n_base else None
            vector = self.model.item_side.vector_for(content, index=trained).to(torch.float32)
            cache_row = None if self._cache is None else self.model.tower_keys_values(vector[None])[0]
            if existing is None:
                i = snap.n
                self.item_ids.append(item_id)
                self.titles.append(title)
                self.images.append(None)
                self.index_of[item_id] = i
                table = self._rows.append(vector)
                cache = None if cache_row is None else self._cache.append(cache_row)
                stale = snap.stale
            else:
                i = existing
                if title is not None:
                    self.titles[i] = title
                table = self._rows.replace(i, vector)
                cache = None if cache_row is None else self._cache.replace(i, cache_row)
                stale = snap.stale | {i} if i < snap.ann_n else snap.stale
            index = snap.index if isinstance(snap.index, FaissIndex) else ExactIndex(table)
            self.published[item_id] = time.time()
            self._publish_similar(item_id, vectors)
            self.snapshot = Snapshot(int(table.shape[0]), table, index, snap.ann_n, stale, cache)
        return {"item_id": item_id, "created": existing is None, "row": i, "modalities_used": sorted(content),
                "ignored": ignored, "items": self.snapshot.n}

    def _resolve(self, fusion, vectors: dict[str, Sequence[float]]) -> tuple[dict[str, np.ndarray], list[str]]:
        content: dict[str, np.ndarray] = {}
        ignored: list[str] = []
        for key, values in vectors.items():
            matches = [n for n in fusion.names if n == key or n.rpartition(":")[2] == key]
            if len(matches) != 1:
                ignored.append(key)
                continue
            name = matches[0]
            dim = int(getattr(fusion, "raw_dims", fusion.dims)[fusion.names.index(name)])  # what the encoder wrote
            arr = np.asarray(values, dtype=np.float32)
            if arr.ndim != 1 or arr.shape[0] != dim:
                raise ServeError(f"vector {key!r} has {arr.size} values; the Run's {name} vectors have {dim}")
            if not np.isfinite(arr).all():
                raise ServeError(f"vector {key!r} holds NaN or infinite values")
            content[name] = arr
        if not content:
            raise ServeError(f"none of the vectors {sorted(vectors)} is a modality this Run uses ({fusion.names}); "
                             "send ENCODER:MODALITY keys as written by `clip4rec encode`")
        return content, ignored

    def _publish_similar(self, item_id: str, vectors: dict[str, Sequence[float]]) -> None:
        for sim in self.similar.values():
            values = vectors.get(sim.key, vectors.get(sim.key.rpartition(":")[2]))
            if values is None:
                continue
            v = torch.as_tensor(np.asarray(values, dtype=np.float32))
            if v.ndim != 1 or v.shape[0] != sim.rows.view().shape[1] or not torch.isfinite(v).all():
                continue
            v = v / v.norm().clamp_min(1e-12)
            row = sim.index_of.get(item_id)
            if row is None:
                sim.ids.append(item_id)
                sim.index_of[item_id] = len(sim.ids) - 1
                sim._view = sim.rows.append(v)
            else:
                sim._view = sim.rows.replace(row, v)


def _fusion(item_side):
    """The item side when it has a content path (new items can be published), else None (id, pop)."""
    return item_side if hasattr(item_side, "vector_for") else None


def load_similar_tables(stores: Sequence[str | Path], prefer: Sequence[str] = ()) -> dict[str, SimilarTable]:
    """For by=image and by=text: one modality each from the stores (the Run's own modality first)."""
    from clip4rec.encode.store import EmbeddingStore, StoreError
    found: dict[str, list[tuple[int, str, EmbeddingStore, str, str]]] = {"image": [], "text": []}
    for path in stores:
        try:
            store = EmbeddingStore.load(path)
        except StoreError:
            continue
        for enc in store.encoders:
            kinds = store.entry(enc).get("kinds", {})
            for modality, kind in kinds.items():
                if kind in found:
                    key = f"{enc}:{modality}"
                    rank = 0 if key in prefer else 1
                    found[kind].append((rank, key, store, enc, modality))
    out: dict[str, SimilarTable] = {}
    for by, cands in found.items():
        if not cands:
            continue
        _, key, store, enc, modality = sorted(cands, key=lambda c: c[0])[0]
        ids, vecs, mask = store.vectors(modality, encoder=enc)
        keep = np.flatnonzero(mask)
        vecs = vecs[keep]
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        kept = [ids[i] for i in keep]
        out[by] = SimilarTable(key, kept, {item: r for r, item in enumerate(kept)}, Rows(torch.from_numpy(vecs)))
    return out
