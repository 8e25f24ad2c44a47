"""Scale-out: (a) encode throughput, local engine vs Ray engine; (b) FAISS indexes over a 10^6-item table.

(a) The same catalog (first --items ML-100K posters + texts), the same encoder (lite) and batch size, encoded
    into a fresh store by each engine. Ray is started once beforehand (its start-up is reported, not counted);
    the Ray engine's time includes its actors starting and loading the model (the local engine gets the
    already-loaded encoder), so "steady" (rows after the first batch / time since it) is shown too.
    Repeats are interleaved (local, ray, local, ray) and the best of each is kept: background load on a
    shared machine hurts both alike. On 2 cores the engines should be about equal: the point of the Ray
    engine is that the same code runs on a cluster, not that it is faster here.
(b) A synthetic table standing in for a learned item table: a seeded mixture of Gaussians (Zipf-sized
    clusters, per-cluster spread), 10^6 x 64 float32, and seeded queries near cluster centres. For the
    service's exact top-k and each FAISS kind (the service's own FaissIndex class): build seconds, index
    memory (faiss serialisation size) and RSS growth, p50/p99 single-query latency, recall@10 vs exact.

Writes bench/results/scale.json.

    python bench/scale.py [--part a|b|all] [--items 256] [--n 1000000] [--dim 64] [--queries 300]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from encode_throughput import catalog  # noqa: E402  (the same ML-100K subset as the throughput bench)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- (a) encode: local vs ray ------------------------------------------------------------------------------
class Timed:
    """Wraps an engine and records when each batch came back (to separate start-up from steady state)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name = inner, inner.name
        self.t0, self.marks = 0.0, []

    def compute(self, *args: Any) -> Iterator[Any]:
        self.t0, self.marks = time.perf_counter(), []
        for out in self.inner.compute(*args):
            self.marks.append((time.perf_counter(), len(out[2].mask)))
            yield out

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


def part_a(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from clip4rec.encode.encoders import load_encoder
    from clip4rec.encode.engines.local import LocalEngine
    from clip4rec.encode.engines.ray_engine import RayEngine
    from clip4rec.encode.pipeline import encode_dataset
    from clip4rec.config import EncodeConfig

    tmp = Path(tempfile.mkdtemp(prefix="c4r-scale-"))
    try:
        ds, source = catalog(args.data, args.items, tmp)
        enc = load_encoder(args.encoder)
        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ray_init_s = time.perf_counter() - t0
        runs: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
        for rep in range(args.repeats):
            for name in ("local", "ray"):
                timed = Timed(LocalEngine() if name == "local" else RayEngine())
                store = tmp / f"{name}{rep}"
                t0 = time.perf_counter()
                encode_dataset(ds, encoder=enc if name == "local" else args.encoder, out=store,
                               settings=EncodeConfig(batch_size=args.batch_size), engine=timed, progress=False, log=lambda m: None)
                wall = time.perf_counter() - t0
                (t_first, first_rows), (t_last, _) = timed.marks[0], timed.marks[-1]
                rows = sum(r for _, r in timed.marks)
                runs[name].append({"wall_s": wall, "compute_s": t_last - timed.t0,
                                   "steady_rows_per_s": (rows - first_rows) / max(t_last - t_first, 1e-9),
                                   "rows": rows})
                shutil.rmtree(store, ignore_errors=True)
                print(f"repeat {rep} {name:5s}: compute {runs[name][-1]['compute_s']:.1f}s, wall {wall:.1f}s",
                      flush=True)
        engine = RayEngine()
        settings = engine.describe() | {"actors": engine.pool_size(ray), "ray_cpus": ray.cluster_resources()["CPU"]}
        ray.shutdown()
        n = len(ds.items)
        out: dict[str, Any] = {"encoder": enc.name, "encoder_is_clip": bool(enc.is_clip), "data": source,
                               "items": n, "batch_size": args.batch_size, "ray_init_s": round(ray_init_s, 2),
                               "ray_engine": settings, "local_engine": LocalEngine().describe()}
        for name, rs in runs.items():
            best = min(rs, key=lambda r: r["compute_s"])
            out[name] = {"items_per_s": round(n / best["compute_s"], 2),
                         "steady_rows_per_s": round(max(r["steady_rows_per_s"] for r in rs), 2),
                         "compute_s": [round(r["compute_s"], 2) for r in rs],
                         "wall_s": [round(r["wall_s"], 2) for r in rs], "rows": best["rows"]}
        out["ray_over_local"] = round(out["ray"]["items_per_s"] / out["local"]["items_per_s"], 3)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- (b) FAISS at 10^6 items -------------------------------------------------------------------------------
def mixture_table(n: int, dim: int, clusters: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8  # Zipf-like cluster sizes: a few big genres, a long tail
    weights /= weights.sum()
    spread = rng.uniform(0.3, 0.8, clusters).astype(np.float32)
    table = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):  # chunks: no float64 temporaries of the whole table
        e = min(n, s + 100_000)
        a = rng.choice(clusters, e - s, p=weights)
        table[s:e] = centres[a] + spread[a, None] * rng.standard_normal((e - s, dim), dtype=np.float32)
    a = rng.choice(clusters, queries, p=weights)
    qs = centres[a] + 0.5 * rng.standard_normal((queries, dim), dtype=np.float32)
    what = (f"mixture of {clusters} Gaussians in {dim}-d (centres N(0,I), Zipf(0.8) cluster sizes, per-cluster "
            f"std U(0.3,0.8)), {n} rows, seed {seed}; {queries} queries = a cluster centre (same weights) + "
            f"N(0, 0.5^2 I); inner-product scores, not normalised (like the model's item table)")
    return table, qs, what


def latencies(index: Any, queries: Any, k: int) -> tuple[list[np.ndarray], np.ndarray]:
    found, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        idx, _ = index.search(q, k)
        times.append(time.perf_counter() - t0)
        found.append(idx)
    return found, np.asarray(times) * 1e3


def part_b(args: argparse.Namespace) -> dict[str, Any]:
    import faiss
    import torch

    from clip4rec.serve.index import ExactIndex, FaissIndex

    table, qs, what = mixture_table(args.n, args.dim, args.clusters, args.queries, args.seed)
    t = torch.from_numpy(table)
    queries = torch.from_numpy(qs)
    k = 10
    exact = ExactIndex(t)
    latencies(exact, queries[:5], k)  # warm-up
    truth, ms = latencies(exact, queries, k)
    truth_sets = [set(x.tolist()) for x in truth]
    rows = [{"index": "exact (torch mv + topk)", "build_s": 0.0, "index_bytes": int(table.nbytes),
             "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "recall_at_10": 1.0}]
    print(f"exact: p50 {rows[0]['p50_ms']:.2f} ms", flush=True)
    configs = [("ivf", {"nprobe": p}, "nprobe") for p in args.nprobe] + \
              [("hnsw", {"ef_search": e}, "ef_search") for e in args.ef_search]
    for kind in ("ivf", "hnsw"):
        gc.collect()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        index = FaissIndex(t, kind=kind, m=args.m, ef_construction=args.ef_construction)  # type: ignore[arg-type]
        build_s = time.perf_counter() - t0
        rss_delta = rss_bytes() - rss0
        with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
            faiss.write_index(index.index, f.name)
            size = os.path.getsize(f.name)
        print(f"{kind}: built in {build_s:.1f}s, {size / 2**20:.0f} MiB, {index.params()}", flush=True)
        for _, knob, label in (c for c in configs if c[0] == kind):
            index.set_search(**knob)
            latencies(index, queries[:5], k)
            found, ms = latencies(index, queries, k)
            recall = float(np.mean([len(truth_sets[i] & set(f.tolist())) / k for i, f in enumerate(found)]))
            row = {"index": f"{kind} {label}={next(iter(knob.values()))}", "kind": kind, "params": index.params(),
                   "build_s": round(build_s, 2), "index_bytes": size, "rss_growth_bytes": rss_delta,
                   "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                   "recall_at_10": round(recall, 4)}
            rows.append(row)
            print(f"  {row['index']}: p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms, "
                  f"recall@10 {recall:.4f}", flush=True)
        del index
    for r in rows:
        r["p50_ms"], r["p99_ms"] = round(r["p50_ms"], 3), round(r["p99_ms"], 3)
    ok = [r for r in rows[1:] if r["recall_at_10"] >= 0.95 and r["p50_ms"] <= 5.0]
    return {"table": what, "n": args.n, "dim": args.dim, "queries": args.queries, "k": k,
            "threads": {"torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads()},
            "faiss": faiss.__version__, "rows": rows,
            "target": "recall@10 >= 0.95 and p50 <= 5 ms",
            "meets_target": [r["index"] for r in ok]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["a", "b", "all"], default="all")
    ap.add_argument("--encoder", default="lite")
    ap.add_argument("--items", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="ml100k-posters folder (default ../shared/data/...)")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=80)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    ap.add_argument("--render-only", action="store_true", help="rewrite scale.md from scale.json, measure nothing")
    args = ap.parse_args()

    result: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if not args.render_only:
        if args.part in ("a", "all"):
            result["encode"] = part_a(args)
        if args.part in ("b", "all"):
            result["index"] = part_b(args)
        result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "python": platform.python_version(), "note": "shared VM: other jobs ran at the same time",
                             "loadavg_at_end": list(os.getloadavg())}
        result["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    page = render_markdown(result)
    args.out.with_suffix(".md").write_text(page)
    print(page)
    print(f"-> {args.out}, {args.out.with_suffix('.md')}")


def render_markdown(result: dict[str, Any]) -> str:
    """bench/results/scale.md: the tables docs/scale.md refers to, from scale.json (never typed by hand)."""
    m = result.get("machine", {})
    lines = ["# bench/scale.py results", "",
             f"Generated by `python bench/scale.py` at {result.get('created', '?')}; machine: {m.get('cpus')} CPUs, "
             f"{m.get('platform')}, Python {m.get('python')} ({m.get('note', '')}; load average at the end "
             f"{', '.join(f'{x:.1f}' for x in m.get('loadavg_at_end', []))}).", ""]
    if "encode" in result:
        e = result["encode"]
        lines += [f"## (a) encode throughput, local vs ray engine", "",
                  f"Encoder `{e['encoder']}` (CLIP: {e['encoder_is_clip']}), {e['items']} items of {e['data']}, "
                  f"batch {e['batch_size']}; best of {len(e['local']['wall_s'])} interleaved runs; Ray start-up "
                  f"({e['ray_init_s']} s) not counted.", "",
                  "| engine | settings | items/s (best run) | compute s per run | steady rows/s |", "|---|---|---|---|---|"]
        for name, settings in (("local", e["local_engine"]), ("ray", e["ray_engine"])):
            row = e[name]
            desc = ", ".join(f"{k} {v}" for k, v in settings.items() if k != "engine" and v is not None)
            lines.append(f"| {name} | {desc} | {row['items_per_s']} | {', '.join(map(str, row['compute_s']))} | "
                         f"{row['steady_rows_per_s']} |")
        lines += ["", f"ray / local = {e['ray_over_local']}", ""]
    if "index" in result:
        ix = result["index"]
        lines += ["## (b) top-10 over a 10^6-item table: exact vs FAISS", "",
                  f"Table: {ix['table']}. Threads: {ix['threads']}. faiss {ix['faiss']}. Memory = serialised index "
                  "size. Recall@10 against the exact top-10 of the same queries.", "",
                  "| index | build s | memory MiB | p50 ms | p99 ms | recall@10 |", "|---|---|---|---|---|---|"]
        for r in ix["rows"]:
            lines.append(f"| {r['index']} | {r['build_s']:.1f} | {r['index_bytes'] / 2**20:.0f} | {r['p50_ms']:.3f} | "
                         f"{r['p99_ms']:.2f} | {r['recall_at_10']:.4f} |")
        if "meets_target" in ix:
            lines += ["", "Meets recall@10 >= 0.95 and p50 <= 5 ms: "
                      + (", ".join(ix["meets_target"]) or "none"), ""]
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    main()
