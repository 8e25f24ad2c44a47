"""Online latency: does the multimodal (fused-id) model answer as fast as the ID-only one, and what does a
pretrained-LM user tower (SmolLM2, first N layers) cost a request next to the scratch tower?

In one run, on one machine, with the same service code (clip4rec.serve):
  * an `id` Run and a `fused-id` Run (trained here, tiny, on the generated ring catalog, with the default
    scratch user-tower shape: hidden 64, 2 layers, window 50; or given with --run-id / --run-fused-id),
  * the tower dimension (--towers, backbone names as `clip4rec compare --backbones` reads them): the same
    `fused-id` item side with a SmolLM2 tower (`smollm2-1L-lora`: the first pretrained layer with LoRA;
    `...-bf16`: the same Run served with the LM's matmuls in bfloat16), measured request by request against
    the scratch `fused-id` Run and saved as ratios under
    `towers.<tower name>.<items>.{in_process,http}.{p50_ratio,p99_ratio}`,
  * their item tables scaled to 10^4, 10^5, 10^6 items (the trained table replicated, with noise),
  * (a) in-process `ServiceState.recommend` latency, the two variants interleaved request by request,
    with the user-tower / top-k split, and FAISS IVF (fused-id) with its recall@10 against exact;
  * (b) HTTP latency on loopback: one uvicorn server process per variant, an asyncio client with
    `--concurrency` requests in flight, the two servers measured in alternating rounds.

Writes bench/results/serve_latency.{json,md,png}. Bounded: fixed request counts; stops by itself.

    .venv/bin/python bench/serve_latency.py                 # ~15 minutes on 2 busy cores (5-8 with --towers '')
    .venv/bin/python bench/serve_latency.py --quick         # 10^4 and 10^5 only, fewer requests
    .venv/bin/python bench/serve_latency.py --render-only   # rewrite serve_latency.md/png from the JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # tests.support: the generated ring catalog

from clip4rec.model.backbone import GRAMMAR, Backbone, parse_backbone, parse_backbones  # noqa: E402
from clip4rec.serve.state import ServiceState  # noqa: E402

VARIANTS = ("id", "fused-id")
# The tower dimension: LLM backbone names (model.backbone's grammar). Every tower reads the fused-id item side
# and is compared with the scratch fused-id Run, request by request; `-bf16` serves its float32 twin's Run.
DEFAULT_TOWERS = "smollm2-1L-lora,smollm2-1L-lora-bf16,smollm2-2L-lora"


def tower_label(tower: str) -> str:
    return f"fused-id/{tower}"


def tower_run(tower: str) -> str:
    """The Run a tower serves: the same layers and training mode in float32 (bf16 is only how it computes)."""
    b = parse_backbone(tower)
    return tower_label(Backbone(b.kind, b.layers, b.train).name)


def tower_dtype(tower: str) -> str:
    return "bfloat16" if parse_backbone(tower).bf16 else "float32"


# ---- the catalogs ------------------------------------------------------------------------------------------
def train_runs(work: Path, epochs: int, towers: list[str]) -> dict[str, Path]:
    from tests.support.toy import build_toy, toy_config
    from clip4rec.api import train  # train, then evaluate (metrics.json marks a finished Run)
    root = build_toy(work, n_items=1000, n_users=400, images=False, min_len=20, max_len=60)
    wanted = {v: (v, "scratch") for v in VARIANTS}
    wanted.update({tower_run(t): ("fused-id", tower_run(t).split("/")[1]) for t in towers})
    runs = {}
    for name, (variant, backbone) in wanted.items():
        out = work / name.replace("/", "-")
        if not (out / "metrics.json").exists():
            t0 = time.perf_counter()
            cfg = toy_config(variant, root / "store", epochs=epochs, hidden=64, max_len=50)
            # The default scratch shape (toy_config's has 1 layer): 2 layers, the one users would deploy.
            cfg.model.layers, cfg.model.heads = 2, 2
            cfg.model = parse_backbone(backbone).apply(cfg.model)
            train(root / "ds", out, cfg, progress=False)
            print(f"  trained {name} in {time.perf_counter() - t0:.1f}s", flush=True)
        runs[name] = out
    return runs


def scaled_state(run: str | Path, n: int, seed: int = 0, noise: float = 0.05, compute_dtype: str | None = None,
                 **options) -> ServiceState:
    """The Run's service with its item table replicated (plus Gaussian noise) to n rows."""
    base = ServiceState.from_run(run, llm_dtype=compute_dtype)  # SmolLM2 towers: the LM's matmul dtype
    table = base.snapshot.table
    n0, hidden = table.shape
    if n <= n0:
        ids, big, counts = base.item_ids[:n], table[:n].clone(), base.train_counts[:n]
    else:
        g = torch.Generator().manual_seed(seed)
        big = table.repeat(math.ceil(n / n0), 1)[:n].clone()
        big[n0:] += noise * float(table.std()) * torch.randn(n - n0, hidden, generator=g)
        ids = base.item_ids + [f"{base.item_ids[j % n0]}~{j // n0}" for j in range(n0, n)]
        counts = np.concatenate([base.train_counts, np.zeros(n - n0, np.int64)])
    state = ServiceState(base.model, ids, big, train_counts=counts, info={**base.info, "scaled_to": n}, **options)
    state.users = base.users
    return state


def histories(state: ServiceState, count: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    users = list(state.users.values())
    return [users[i][-state.max_len:] for i in rng.integers(len(users), size=count)]


def pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "n": int(a.size)}


# ---- (a) in process ------------------------------------------------------------------------------------------
def ratio_ci(a: list[float], b: list[float], q: float, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% bootstrap interval of percentile_q(b) / percentile_q(a) over paired requests (same histories)."""
    a_, b_ = np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    idx = rng.integers(len(a_), size=(n_boot, len(a_)))
    ratios = np.percentile(b_[idx], q, axis=1) / np.percentile(a_[idx], q, axis=1)
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


def in_process(states: dict[str, ServiceState], hist: list[list[str]], warmup: int = 30
               ) -> tuple[dict[str, dict], dict[str, list[float]]]:
    """Percentiles per model, and the raw per-request times (request j of every model saw the same history)."""
    times: dict[str, list[float]] = {v: [] for v in states}
    for j, h in enumerate(hist):  # interleaved: drift (other load, thermal) hits every model alike
        order = list(states) if j % 2 == 0 else list(reversed(states))
        for variant in order:
            t0 = time.perf_counter()
            states[variant].recommend(h, 10, True)
            if j >= warmup:
                times[variant].append(time.perf_counter() - t0)
    out = {v: pct(t) for v, t in times.items()}
    out["p99_ratio_ci95"] = ratio_ci(times["id"], times["fused-id"], 99)
    out["p50_ratio_ci95"] = ratio_ci(times["id"], times["fused-id"], 50)
    return out, times


def tower_ratios(tower: str, a: dict, times: dict[str, list[float]], b: dict) -> dict:
    """`tower` over the scratch tower (both fused-id), in process (with paired bootstrap CIs) and over HTTP."""
    label, base = tower_label(tower), "fused-id"
    inside = {"p50_ratio": a[label]["p50_ms"] / a[base]["p50_ms"], "p99_ratio": a[label]["p99_ms"] / a[base]["p99_ms"],
              "p50_ratio_ci95": ratio_ci(times[base], times[label], 50),
              "p99_ratio_ci95": ratio_ci(times[base], times[label], 99),
              "p50_ms": a[label]["p50_ms"], "p99_ms": a[label]["p99_ms"],
              "scratch_p50_ms": a[base]["p50_ms"], "scratch_p99_ms": a[base]["p99_ms"]}
    out = {"in_process": inside}
    if b.get(label) and b.get(base):
        out["http"] = {"p50_ratio": b[label]["p50_ms"] / b[base]["p50_ms"],
                       "p99_ratio": b[label]["p99_ms"] / b[base]["p99_ms"],
                       "p50_ms": b[label]["p50_ms"], "p99_ms": b[label]["p99_ms"],
                       "scratch_p50_ms": b[base]["p50_ms"], "scratch_p99_ms": b[base]["p99_ms"]}
    return out


def breakdown(state: ServiceState, hist: list[list[str]]) -> dict[str, float]:
    tower, topk = [], []
    for h in hist:
        window = [state.lookup(i) for i in h][-state.max_len:]
        t0 = time.perf_counter()
        user = state.user_vector(window)
        t1 = time.perf_counter()
        state.search(user, 10, sorted(set(window)))
        t2 = time.perf_counter()
        tower.append(t1 - t0)
        topk.append(t2 - t1)
    return {"user_tower_p50_ms": float(np.median(tower) * 1000), "topk_p50_ms": float(np.median(topk) * 1000)}


def faiss_row(run: Path, n: int, hist: list[list[str]], exact: ServiceState, nprobe: int, kind: str = "ivf"
              ) -> dict | None:
    from clip4rec.serve.index import faiss_available
    from tests.support.recall import recall_vs_exact
    if not faiss_available():
        return None
    t0 = time.perf_counter()
    state = scaled_state(run, n, index="faiss", index_options={"nprobe": nprobe, "kind": kind})
    build = time.perf_counter() - t0
    times = []
    for j, h in enumerate(hist):
        t0 = time.perf_counter()
        state.recommend(h, 10, True)
        if j >= 30:
            times.append(time.perf_counter() - t0)
    queries = torch.stack([exact.user_vector([exact.lookup(i) for i in h]) for h in hist[:200]])
    recall = recall_vs_exact(state.snapshot.index, exact.snapshot.table, queries, k=10)
    return {**pct(times), "recall@10_vs_exact": recall, "nprobe": nprobe if kind == "ivf" else None,
            "kind": kind, "build_s": round(build, 1)}


# ---- (b) over HTTP --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, n: int, threads: int, faiss_kind: str | None = None, compute_dtype: str | None = None
                 ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, __file__, "--_serve", str(run), "--_n", str(n), "--_port", str(port),
           "--server-threads", str(threads)] + (["--_faiss", faiss_kind] if faiss_kind else [])
    cmd += ["--_dtype", compute_dtype] if compute_dtype else []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 180) -> None:
    import httpx
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {timeout}s")


async def http_round(url: str, hist: list[list[str]], concurrency: int) -> tuple[list[float], int]:
    requests = [("POST", "/recommend", json.dumps({"history": h, "k": 10, "exclude_seen": True}).encode())
                for h in hist]
    latencies, statuses = await send_all(url, requests, concurrency)
    return latencies, sum(s != 200 for s in statuses)


async def send_all(url: str, requests: list[tuple[str, str, bytes | None]], concurrency: int
                   ) -> tuple[list[float], list[int]]:
    """`concurrency` keep-alive connections, each sending its next request when the last answer is read.

    A minimal HTTP/1.1 client on asyncio streams: on a 2-core machine a heavy client (httpx: ~1 ms of Python per
    request) would steal the server's CPU and mostly measure itself. Returns latencies and status codes.
    """
    host, port = url.removeprefix("http://").split(":")
    todo = deque(enumerate(requests))
    latencies: list[float] = [float("nan")] * len(requests)   # in request order
    statuses: list[int] = [0] * len(requests)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while todo:
                i, (method, path, body) = todo.popleft()
                head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
                if body is not None:
                    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                t0 = time.perf_counter()
                writer.write(head.encode() + b"\r\n" + (body or b""))
                status, _ = await read_response(reader)
                latencies[i] = time.perf_counter() - t0
                statuses[i] = status
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def run_async(coro):
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def over_http(specs: dict[str, tuple[Path, str | None, str | None]], n: int, hist: list[list[str]], concurrency: int,
              rounds: int, threads: int) -> dict[str, dict]:
    """specs: label -> (Run, FAISS kind or None for exact, LM compute dtype or None); all servers run at once,
    measured in alternating rounds."""
    servers = {label: start_server(run, n, threads, faiss, dtype) for label, (run, faiss, dtype) in specs.items()}
    runs = specs
    try:
        for proc, url in servers.values():
            wait_ready(proc, url)
        times: dict[str, list[float]] = {v: [] for v in runs}
        errors = {v: 0 for v in runs}
        for v, (_, url) in servers.items():  # warm-up
            run_async(http_round(url, hist[:50], concurrency))
        chunk = math.ceil(len(hist) / rounds)
        for r in range(rounds):
            part = hist[r * chunk:(r + 1) * chunk]
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for v in order:
                lat, err = run_async(http_round(servers[v][1], part, concurrency))
                times[v] += lat
                errors[v] += err
        return {v: {**pct(times[v]), "errors": errors[v], "concurrency": concurrency} for v in runs}
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def serve_mode(args: argparse.Namespace) -> None:
    from clip4rec.serve.app import serve
    if args.server_threads:
        torch.set_num_threads(args.server_threads)
    options = {"index": "faiss", "index_options": {"kind": args._faiss}} if args._faiss else {}
    serve(scaled_state(args._serve, args._n, compute_dtype=args._dtype, **options), host="127.0.0.1", port=args._port,
          log_level="warning")


# ---- report ---------------------------------------------------------------------------------------------------
def write_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_latency.json").write_text(json.dumps(result, indent=2))
    render(result, out)


def tower_section(result: dict) -> list[str]:
    """The tower dimension: each tower vs scratch (both fused-id), per catalog size, from result["towers"]."""
    towers = result.get("towers") or {}
    if not towers:
        return []
    rows = ["| items | tower | in-process p50 | p99 | tower p50 | p50 ratio [95% CI] | p99 ratio [95% CI] | "
            "HTTP p50 | HTTP p99 | HTTP p50 ratio | HTTP p99 ratio |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in result["sizes"]:
        n = size["n"]
        base = size["in_process"]["fused-id"]
        http = size["http"].get("fused-id")
        rows.append(f"| {n:,} | scratch | {base['p50_ms']:.3f} | {base['p99_ms']:.3f} | "
                    f"{size['breakdown']['fused-id']['user_tower_p50_ms']:.3f} | 1 | 1 | "
                    + (f"{http['p50_ms']:.2f} | {http['p99_ms']:.2f} | 1 | 1 |" if http else "- | - | - | - |"))
        for tower, by_size in towers.items():
            r = by_size.get(str(n))
            if r is None:
                continue
            a, h = r["in_process"], r.get("http")
            c50, c99 = a["p50_ratio_ci95"], a["p99_ratio_ci95"]
            rows.append(f"| {n:,} | {tower} | {a['p50_ms']:.3f} | {a['p99_ms']:.3f} | "
                        f"{size['breakdown'][tower_label(tower)]['user_tower_p50_ms']:.3f} | "
                        f"{a['p50_ratio']:.2f} [{c50[0]:.2f}, {c50[1]:.2f}] | {a['p99_ratio']:.2f} [{c99[0]:.2f}, {c99[1]:.2f}] | "
                        + (f"{h['p50_ms']:.2f} | {h['p99_ms']:.2f} | {h['p50_ratio']:.2f} | {h['p99_ratio']:.2f} |"
                           if h else "- | - | - | - |"))
    return ["## User tower: SmolLM2 vs scratch (fused-id, same item table)", "",
            "Ratios are tower / scratch, request by request on the same histories (in process: the models "
            "interleaved; HTTP: one server each, alternating rounds). `smollm2-<N>L-<mode>`: the first N layers of "
            "SmolLM2-135M, trained as said, float32; `-bf16`: the same Run with the LM's matmuls under bfloat16 "
            "autocast. As `serve` loads them: LoRA folded in and weights stored column-major (`for_serving`). A "
            "user vector is the last layer's output at the last position only (`last_hidden`); a one-layer LM "
            "reads the window's keys and values from a per-item cache the service computes at load (and at "
            "publish), and computes everything else for one position. "
            "Scratch: hidden 64, 2 layers. Latencies in milliseconds.", "",
            *rows, ""]


def render(result: dict, out: Path) -> None:
    """serve_latency.md (and .png) from the result dict alone, so --render-only can rewrite them from the JSON."""
    rows = ["| items | variant | in-process p50 | p95 | p99 | tower p50 | top-k p50 | HTTP p50 | HTTP p95 | HTTP p99 | HTTP errors |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in result["sizes"]:
        for v in VARIANTS:
            a, b = size["in_process"][v], size["http"].get(v)
            br = size["breakdown"][v]
            http = (f"{b['p50_ms']:.2f} | {b['p95_ms']:.2f} | {b['p99_ms']:.2f} | {b['errors']}" if b else "- | - | - | -")
            rows.append(f"| {size['n']:,} | {v} | {a['p50_ms']:.3f} | {a['p95_ms']:.3f} | {a['p99_ms']:.3f} | "
                        f"{br['user_tower_p50_ms']:.3f} | {br['topk_p50_ms']:.3f} | {http} |")
    ratios = ["| items | in-process p50 ratio [95% CI] | in-process p99 ratio [95% CI] | HTTP p50 ratio | HTTP p99 ratio |",
              "|---:|---:|---:|---:|---:|"]
    for size in result["sizes"]:
        r = size["ratio_fused_id_over_id"]
        c50, c99 = r["in_process_p50_ci95"], r["in_process_p99_ci95"]
        ratios.append(f"| {size['n']:,} | {r['in_process_p50']:.3f} [{c50[0]:.3f}, {c50[1]:.3f}] | "
                      f"{r['in_process_p99']:.3f} [{c99[0]:.3f}, {c99[1]:.3f}] | "
                      f"{r.get('http_p50', float('nan')):.3f} | {r.get('http_p99', float('nan')):.3f} |")
    faiss = ["| items | index | p50 ms | p99 ms | recall@10 vs exact | nprobe | build s |", "|---:|---|---:|---:|---:|---:|---:|"]
    for size in result["sizes"]:
        if size.get("faiss_fused_id"):
            e = size["in_process"]["fused-id"]
            faiss.append(f"| {size['n']:,} | exact (torch) | {e['p50_ms']:.3f} | {e['p99_ms']:.3f} | 1.000 | - | - |")
        for key, name in (("faiss_flat_fused_id", "FAISS flat (exact)"), ("faiss_fused_id", "FAISS IVF")):
            f = size.get(key)
            if f:
                faiss.append(f"| {size['n']:,} | {name} | {f['p50_ms']:.3f} | {f['p99_ms']:.3f} | "
                             f"{f['recall@10_vs_exact']:.3f} | {f['nprobe'] or '-'} | {f['build_s']} |")
        extra = size["http"].get("fused-id, faiss flat")
        if extra:
            faiss.append(f"| {size['n']:,} | HTTP, FAISS flat, concurrency {extra['concurrency']} | {extra['p50_ms']:.3f} | "
                         f"{extra['p99_ms']:.3f} | 1.000 | - | - |")
    env = result["environment"]
    md = [
        "# Serving latency: `fused-id` vs `id`, same service code",
        "",
        f"Generated by `bench/serve_latency.py` on {env['when']} ({env['cpus']} CPUs, {env['machine']}, torch "
        f"{env['torch']}, {env['torch_threads']} intra-op thread(s) in process, {result['server_threads']} per server). "
        f"Runs: {result['runs']}. Scratch user tower: hidden {result['hidden']}, 2 layers, window {result['max_len']}; "
        f"histories are real user sequences of the catalog (last {result['max_len']} items), k=10, seen items excluded.",
        "Item tables are the trained tables replicated with noise to each size. Latencies in milliseconds.",
        "",
        "## Latency", "", *rows, "",
        "## fused-id / id", "", *ratios, "",
        "The item side (CLIP/lite vectors -> ID or content->ID map, plus the content-knn term) is precomputed into the table, so both variants do "
        "identical work per request: one user-tower pass + one matrix-vector product + top-k.",
        "",
        *tower_section(result),
    ]
    if len(faiss) > 2:
        md += ["## FAISS (fused-id, in process)", "", *faiss, ""]
    md += [f"HTTP: `clip4rec.serve` app in one uvicorn process per variant on 127.0.0.1 (torch {result['server_threads']} "
           f"thread; concurrent /recommend calls are coalesced into batches: one tower pass + one table product per "
           f"batch), a minimal asyncio keep-alive client with {result['concurrency']} requests in flight on the same "
           "machine (client and server share the cores), variants in alternating rounds.",
           "",
           f"Load average of the machine at the end: {env['load_average_at_end']} (other jobs share these cores: "
           "tails (p95/p99) are inflated by them; the ratios compare the variants under the same conditions, "
           "request by request).",
           "", "![latency](serve_latency.png)", ""]
    (out / "serve_latency.md").write_text("\n".join(md))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        ns = [s["n"] for s in result["sizes"]]
        for ax, kind, title in ((axes[0], "in_process", "in-process recommend"),
                                (axes[1], "http", f"HTTP, concurrency {result['concurrency']}")):
            labels = [*VARIANTS, *(tower_label(t) for t in result.get("towers") or {})]
            for v, color in zip(labels, ("tab:gray", "tab:blue", "tab:red", "tab:orange")):
                for q, style in (("p50_ms", "-o"), ("p99_ms", "--^")):
                    ys = [s[kind][v][q] if s[kind].get(v) else np.nan for s in result["sizes"]]
                    ax.plot(ns, ys, style, color=color, label=f"{v} {q[:3]}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("items in catalog")
            ax.set_ylabel("latency (ms)")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "serve_latency.png", dpi=120)
    except ImportError:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-id", type=Path)
    p.add_argument("--run-fused-id", type=Path)
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--requests", type=int, default=4000, help="in-process requests per variant (fewer at 10^6)")
    p.add_argument("--http-requests", type=int, default=2000, help="HTTP requests per variant (fewer at 10^6)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads for the in-process measurement")
    p.add_argument("--server-threads", type=int, default=1, help="torch threads in each server process")
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--work", type=Path, default=None, help="where the tiny Runs are trained (default: a temp dir)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--quick", action="store_true", help="10^4 and 10^5 only, 500 requests")
    p.add_argument("--towers", default=DEFAULT_TOWERS,
                   help=f"user towers measured against scratch on fused-id ({GRAMMAR}; '' for none)")
    p.add_argument("--render-only", action="store_true", help="rewrite serve_latency.md/png from serve_latency.json")
    p.add_argument("--_dtype", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_serve", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--_port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--_faiss", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._serve:
        serve_mode(args)
        return
    if args.render_only:
        render(json.loads((args.out / "serve_latency.json").read_text()), args.out)
        print(f"wrote {args.out / 'serve_latency.md'} from {args.out / 'serve_latency.json'}")
        return
    try:
        towers = [b.name for b in parse_backbones(args.towers) if b.is_llm] if args.towers.strip() else []
    except ValueError as exc:
        p.error(str(exc))
    if args.quick:
        args.sizes, args.requests, args.http_requests = "10000,100000", 500, 500
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    work_dir = args.work or Path(tempfile.mkdtemp(prefix="clip4rec-serve-bench-"))
    given = {"id": args.run_id, "fused-id": args.run_fused_id}
    needed = set(VARIANTS) | {tower_run(t) for t in towers}
    if all(given.get(name) for name in needed):
        runs = {name: given[name] for name in needed}
    else:
        print(f"training tiny Runs ({', '.join(sorted(needed))}) under {work_dir}", flush=True)
        runs = train_runs(work_dir, args.epochs, towers)
    # label -> (Run, LM compute dtype): the two variants on the scratch tower, then each tower on fused-id
    models: dict[str, tuple[Path, str | None]] = {v: (runs[v], None) for v in VARIANTS}
    models.update({tower_label(t): (runs[tower_run(t)], tower_dtype(t)) for t in towers})
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    result: dict = {"runs": {v: str(r) for v, r in runs.items()}, "concurrency": args.concurrency,
                    "server_threads": args.server_threads, "sizes": [], "towers": {t: {} for t in towers},
                    "tower_settings": {"variant": "fused-id", "vs": "scratch", "scratch_layers": 2}}
    for n in sizes:
        scale = 1 if n <= 100_000 else 5
        print(f"== {n:,} items", flush=True)
        states = {label: scaled_state(run, n, compute_dtype=dtype) for label, (run, dtype) in models.items()}
        result["hidden"], result["max_len"] = int(states["id"].snapshot.table.shape[1]), states["id"].max_len
        hist = histories(states["id"], args.requests // scale + 30, seed=n)
        a, raw = in_process(states, hist)
        br = {v: breakdown(states[v], hist[:300 // scale]) for v in models}
        print("  in-process " + ", ".join(f"{v}: p50 {a[v]['p50_ms']:.3f} p99 {a[v]['p99_ms']:.3f} ms" for v in models),
              flush=True)
        size = {"n": n, "in_process": a, "breakdown": br}
        if n >= 100_000:
            size["faiss_fused_id"] = faiss_row(runs["fused-id"], n, hist, states["fused-id"], args.nprobe)
            size["faiss_flat_fused_id"] = faiss_row(runs["fused-id"], n, hist, states["fused-id"], args.nprobe, "flat")
        del states
        if args.http_requests > 0:
            specs = {label: (run, None, dtype) for label, (run, dtype) in models.items()}
            if n == 100_000 and size.get("faiss_flat_fused_id"):
                specs["fused-id, faiss flat"] = (runs["fused-id"], "flat", None)
            b = over_http(specs, n, histories_for_http(runs, n, args.http_requests // scale), args.concurrency,
                          args.rounds, args.server_threads)
            print("  HTTP " + ", ".join(f"{v}: p50 {b[v]['p50_ms']:.2f} p99 {b[v]['p99_ms']:.2f} ms "
                                        f"({b[v]['errors']} errors)" for v in b), flush=True)
        else:
            b = {}
        size["http"] = b
        ratio = {"in_process_p50": a["fused-id"]["p50_ms"] / a["id"]["p50_ms"],
                 "in_process_p99": a["fused-id"]["p99_ms"] / a["id"]["p99_ms"],
                 "in_process_p50_ci95": a["p50_ratio_ci95"], "in_process_p99_ci95": a["p99_ratio_ci95"]}
        if b:
            ratio.update(http_p50=b["fused-id"]["p50_ms"] / b["id"]["p50_ms"],
                         http_p99=b["fused-id"]["p99_ms"] / b["id"]["p99_ms"])
        size["ratio_fused_id_over_id"] = ratio
        for t in towers:
            result["towers"][t][str(n)] = r = tower_ratios(t, a, raw, b)
            print(f"  {t} / scratch: in-process p50 x{r['in_process']['p50_ratio']:.2f} p99 x{r['in_process']['p99_ratio']:.2f}"
                  + (f", HTTP p50 x{r['http']['p50_ratio']:.2f} p99 x{r['http']['p99_ratio']:.2f}" if "http" in r else ""),
                  flush=True)
        result["sizes"].append(size)
    result["environment"] = {"when": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                             "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                             "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                             "load_average_at_end": os.getloadavg()}
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    write_report(result, args.out)
    print(f"wrote {args.out / 'serve_latency.md'} ({result['wall_s']}s)")


def histories_for_http(runs: dict[str, Path], n: int, count: int) -> list[list[str]]:
    base = ServiceState.from_run(runs["id"])
    return histories(base, count, seed=n + 1)


if __name__ == "__main__":
    main()
