"""Bounded load and fuzz run against `clip4rec serve` on loopback: must end with 0 errors and 0 5xx.

1. Starts the real command (`clip4rec serve RUN --port P`) in a subprocess (a tiny fused-id Run on the
   generated catalog is trained first unless --run is given).
2. Load: `--requests` (10,000) valid requests at `--concurrency` (16) in flight, a mix of POST /recommend
   (real histories; some with unknown ids, some empty), GET /items/{id}/similar (image/text/fused), POST /items
   (live cold-start publishes under load), GET /items/{id}, /health, /metrics. Counts every non-2xx.
3. Fuzz: schemathesis against the service's own OpenAPI document (positive and negative data for every
   operation; falls back to plain hypothesis if schemathesis is missing), plus a list of hand-made malformed
   HTTP requests (bad JSON, lying Content-Length, oversized and chunked bodies, NaN, deep nesting, odd paths).
   Counts 5xx; afterwards the service must still answer /health.

Writes bench/results/serve_load.{json,md}; exits 1 if anything failed. Only 127.0.0.1 is ever contacted.

    .venv/bin/python bench/serve_load.py                  # ~2-4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # tests.support: the generated ring catalog
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_latency import free_port, pct, run_async, send_all  # noqa: E402


def train_run(work: Path) -> Path:
    from tests.support.toy import build_toy, train_toy_run
    out = work / "fused-id"
    if not (out / "metrics.json").exists():
        root = build_toy(work, n_items=300, n_users=400, min_len=8, max_len=30)
        train_toy_run(root, "fused-id", out, epochs=1, hidden=64, max_len=50)
    return out


def start(run: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from clip4rec.cli import app; app()", "serve", str(run), "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def get_json(url: str, timeout: float = 10) -> dict:
    import urllib.request
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-3000:]}")
        try:
            get_json(url + "/health", 2)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server not ready")


# ---- load ----------------------------------------------------------------------------------------------------
def request_mix(run: Path, n: int, seed: int = 0) -> tuple[list[tuple[str, str, bytes | None]], Counter]:
    from clip4rec.serve.cli import store_vectors
    from clip4rec.serve.state import ServiceState
    from clip4rec.encode.store import EmbeddingStore
    state = ServiceState.from_run(run)
    rng = random.Random(seed)
    users = list(state.users.values())
    items = state.item_ids
    stores = state.info.get("stores") or []
    vectors = list(store_vectors(EmbeddingStore.load(stores[0])).values()) if stores else []
    out: list[tuple[str, str, bytes | None]] = []
    labels: list[str] = []
    for j in range(n):
        r = rng.random()
        if r < 0.80:
            seq = rng.choice(users)
            h = seq[: rng.randint(0, len(seq))]
            if rng.random() < 0.1:
                h = h + [f"unknown-{rng.randint(0, 999)}"]
            body = {"history": h, "k": rng.randint(1, 100), "exclude_seen": rng.random() < 0.8}
            out.append(("POST", "/recommend", json.dumps(body).encode()))
            labels.append("POST /recommend")
        elif r < 0.88:
            by = rng.choice(["image", "text", "fused"] if stores else ["fused"])
            out.append(("GET", f"/items/{rng.choice(items)}/similar?by={by}&k=10", None))
            labels.append("GET /items/{id}/similar")
        elif r < 0.93 and vectors:
            body = {"item_id": f"load-new-{j}", "title": f"Published under load {j}", "vectors": rng.choice(vectors)}
            out.append(("POST", "/items", json.dumps(body).encode()))
            labels.append("POST /items")
        elif r < 0.97:
            out.append(("GET", f"/items/{rng.choice(items)}", None))
            labels.append("GET /items/{id}")
        elif r < 0.985:
            out.append(("GET", "/health", None))
            labels.append("GET /health")
        else:
            out.append(("GET", "/metrics", None))
            labels.append("GET /metrics")
    return out, Counter(labels), labels


# ---- fuzz ----------------------------------------------------------------------------------------------------
def raw_exchange(port: int, payload: bytes, timeout: float = 10) -> int | None:
    """Send bytes as they are on a fresh connection; the status code, or None if the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(payload)
        except OSError:
            pass
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    line = data.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else None


def malformed(port: int) -> list[tuple[str, bytes]]:
    def post(path: str, body: bytes, ctype: str = "application/json", extra: str = "") -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"{extra}Connection: close\r\n\r\n").encode() + body

    def get(path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()

    deep = b'{"history": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    chunked_big = (b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                   + b"".join(b"10000\r\n" + b" " * 0x10000 + b"\r\n" for _ in range(20)) + b"0\r\n\r\n")
    cases = [
        ("bad json", post("/recommend", b"{")),
        ("json array", post("/recommend", b"[]")),
        ("json null", post("/recommend", b"null")),
        ("history null", post("/recommend", b'{"history": null}')),
        ("history of ints", post("/recommend", b'{"history": [1, 2, 3]}')),
        ("k as text", post("/recommend", b'{"history": ["i1"], "k": "ten"}')),
        ("k huge float", post("/recommend", b'{"history": ["i1"], "k": 1e308}')),
        ("k negative", post("/recommend", b'{"history": ["i1"], "k": -1}')),
        ("NUL in id", post("/recommend", b'{"history": ["\\u0000"]}')),
        ("lone surrogate", post("/recommend", b'{"history": ["\\ud800"]}')),
        ("invalid utf-8", post("/recommend", b'{"history": ["\xff\xfe"]}')),
        ("deep nesting", post("/recommend", deep)),
        ("text/plain body", post("/recommend", b'{"history": ["i1"]}', ctype="text/plain")),
        ("form body", post("/recommend", b"history=i1", ctype="application/x-www-form-urlencoded")),
        ("lying content-length", (b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: 99999999\r\nConnection: close\r\n\r\n{}")),
        ("non-numeric content-length", (b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n"
                                        b"Connection: close\r\n\r\n{}")),
        ("chunked 1.3 MB", chunked_big),
        ("publish NaN", post("/items", b'{"item_id": "z", "vectors": {"ring:image": [NaN]}}')),
        ("publish overflow", post("/items", b'{"item_id": "z", "vectors": {"ring:image": [1e999]}}')),
        ("publish 10k floats", post("/items", json.dumps({"item_id": "z", "vectors": {"a": [0.5] * 10000}}).encode())),
        ("publish 17 keys", post("/items", json.dumps({"item_id": "z", "vectors": {f"k{i}": [1.0] for i in range(17)}}).encode())),
        ("publish long id", post("/items", json.dumps({"item_id": "x" * 300, "vectors": {"a": [1.0]}}).encode())),
        ("publish path as vector", post("/items", b'{"item_id": "z", "vectors": {"ring:image": "/etc/passwd"}}')),
        ("similar NUL id", get("/items/%00/similar")),
        ("similar long id", get("/items/" + "x" * 300 + "/similar")),
        ("similar k text", get("/items/i1/similar?k=abc")),
        ("similar by traversal", get("/items/i1/similar?by=../../etc")),
        ("image traversal", get("/items/..%2F..%2F..%2Fetc%2Fpasswd/image")),
        ("image absolute", get("/items/%2Fetc%2Fpasswd/image")),
        ("users bad offset", get("/users?offset=-5")),
        ("items huge limit", get("/items?limit=100000000000000000000")),
        ("method not allowed", b"DELETE /recommend HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("unknown path", get("/../../etc/passwd")),
        ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
    ]
    return cases


def fuzz_schemathesis(url: str, examples: int, seed: int) -> dict:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    statuses: Counter = Counter()
    errors: list[dict] = []
    skipped: list[str] = []
    per_op: dict[str, Counter] = {}
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for result in schema.get_all_operations():
            op = result.ok()
            label = f"{op.method.upper()} {op.path}"
            counts = per_op.setdefault(label, Counter())

            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case) -> None:
                response = case.call(base_url=url, timeout=30)
                statuses[response.status_code] += 1
                counts[response.status_code] += 1
                if response.status_code >= 500:
                    errors.append({"operation": label, "mode": str(mode), "status": response.status_code,
                                   "body": response.text[:300], "request": case.as_curl_command()[:500]})

            try:
                run()
            except Unsatisfiable:  # e.g. no negative data exists for an operation without parameters
                skipped.append(f"{label} ({mode})")
    return {"tool": f"schemathesis {schemathesis.SCHEMATHESIS_VERSION}", "examples_per_operation_and_mode": examples,
            "requests": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
            "per_operation": {k: dict(v) for k, v in per_op.items()}, "server_errors": errors,
            "no_data_for": skipped}


def fuzz_hypothesis(url: str, examples: int, seed: int) -> dict:
    """Fallback without schemathesis: arbitrary JSON bodies at the JSON endpoints, odd path segments and queries."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                               lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                               max_leaves=20)
    bodies = st.one_of(json_values, st.fixed_dictionaries({}, optional={
        "history": st.lists(st.text(max_size=30), max_size=40) | json_values, "k": st.integers() | json_values,
        "exclude_seen": json_values, "item_id": st.text(max_size=40) | json_values,
        "vectors": st.dictionaries(st.text(max_size=20), st.lists(st.floats(allow_nan=False), max_size=20)) | json_values}))
    statuses: Counter = Counter()
    errors: list[dict] = []

    def call(method: str, path: str, body: bytes | None = None) -> None:
        req = urllib.request.Request(url + path, body, {"Content-Type": "application/json"}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                code = resp.status
        except urllib.error.HTTPError as err:
            code = err.code
        statuses[code] += 1
        if code >= 500:
            errors.append({"method": method, "path": path, "body": (body or b"")[:300].decode(errors="replace")})

    @settings(max_examples=examples * 4, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(body=bodies, path=st.sampled_from(["/recommend", "/items"]))
    def post(body, path) -> None:
        call("POST", path, json.dumps(body).encode())

    @settings(max_examples=examples * 4, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(segment=st.text(min_size=1, max_size=40), query=st.dictionaries(st.sampled_from(["by", "k", "offset", "limit"]),
                                                                          st.text(max_size=10), max_size=3),
           tail=st.sampled_from(["", "/similar", "/image"]))
    def get(segment, query, tail) -> None:
        call("GET", "/items/" + urllib.parse.quote(segment, safe="") + tail + "?" + urllib.parse.urlencode(query))

    post()
    get()
    return {"tool": "hypothesis (schemathesis not installed)", "requests": sum(statuses.values()),
            "statuses": dict(sorted(statuses.items())), "server_errors": errors}


# ---- main ----------------------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="Run directory to serve (default: train a tiny fused-id Run)")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--fuzz-examples", type=int, default=50, help="schemathesis examples per operation and mode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    t_start = time.perf_counter()
    run = args.run or train_run(args.work or Path(tempfile.mkdtemp(prefix="clip4rec-serve-load-")))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(run, port)
    result: dict = {"run": str(run), "url": url}
    try:
        wait_ready(proc, url)
        requests, kinds, labels = request_mix(run, args.requests, args.seed)
        t0 = time.perf_counter()
        latencies, statuses = run_async(send_all(url, requests, args.concurrency))
        wall = time.perf_counter() - t0
        codes = Counter(statuses)
        non2xx = sum(n for c, n in codes.items() if not 200 <= c < 300)
        metrics_text = proc_metrics(url)
        result["load"] = {"requests": len(statuses), "concurrency": args.concurrency, "mix": dict(kinds),
                          "statuses": dict(sorted(codes.items())), "non_2xx": non2xx, "wall_s": round(wall, 2),
                          "requests_per_s": round(len(statuses) / wall, 1), "latency": pct(latencies),
                          "server_counted_2xx": metrics_text,
                          "latency_by_kind": {k: pct([l for l, lab in zip(latencies, labels) if lab == k]) for k in kinds}}
        print(f"load: {len(statuses)} requests at concurrency {args.concurrency} in {wall:.1f}s "
              f"({len(statuses) / wall:.0f}/s), non-2xx {non2xx}, p50 {np.percentile(latencies, 50) * 1000:.1f} ms, "
              f"p99 {np.percentile(latencies, 99) * 1000:.1f} ms", flush=True)
        try:
            fuzz = fuzz_schemathesis(url, args.fuzz_examples, args.seed)
        except ImportError:
            fuzz = fuzz_hypothesis(url, args.fuzz_examples, args.seed)
        raw = []
        for name, payload in malformed(port):
            status = raw_exchange(port, payload)
            raw.append({"case": name, "status": status})
        fuzz["malformed_http"] = raw
        fuzz["malformed_5xx"] = [r for r in raw if r["status"] is not None and r["status"] >= 500]
        fuzz["server_errors_5xx"] = sum(n for c, n in fuzz["statuses"].items() if int(c) >= 500) + len(fuzz["malformed_5xx"])
        health = get_json(url + "/health")
        fuzz["healthy_after"] = health.get("status") == "ok"
        result["fuzz"] = fuzz
        print(f"fuzz: {fuzz['tool']}: {fuzz['requests']} generated requests {fuzz['statuses']}, "
              f"{len(raw)} malformed HTTP requests; 5xx: {fuzz['server_errors_5xx']}; healthy after: "
              f"{fuzz['healthy_after']}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        result["server_tracebacks"] = stderr.count("Traceback")
        result["server_log_tail"] = stderr[-4000:]
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["environment"] = {"when": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                             "load_average_at_end": os.getloadavg()}
    ok = (result.get("load", {}).get("non_2xx", 1) == 0 and result.get("fuzz", {}).get("server_errors_5xx", 1) == 0
          and result["fuzz"].get("healthy_after", False))
    result["passed"] = bool(ok)
    write_report(result, args.out)
    print(f"{'PASSED' if ok else 'FAILED'}; wrote {args.out / 'serve_load.md'} ({result['wall_s']}s)")
    return 0 if ok else 1


def proc_metrics(url: str) -> int:
    """2xx responses the server itself counted in /metrics (should match what the client saw, plus probes)."""
    import urllib.request
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("clip4rec_http_requests_total{") and 'status="2' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def write_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(result, indent=2, default=str))
    load, fuzz = result.get("load", {}), result.get("fuzz", {})
    md = ["# Serving load and fuzz run", "",
          f"Generated by `bench/serve_load.py` on {result['environment']['when']} ({result['environment']['cpus']} CPUs, "
          f"load average at end {tuple(round(x, 1) for x in result['environment']['load_average_at_end'])}); "
          f"`clip4rec serve {result['run']}` on 127.0.0.1. **{'PASSED' if result['passed'] else 'FAILED'}**", ""]
    if load:
        lat = load["latency"]
        md += ["## Load", "",
               "| requests | concurrency | non-2xx | statuses | req/s | p50 ms | p95 ms | p99 ms |",
               "|---:|---:|---:|---|---:|---:|---:|---:|",
               f"| {load['requests']:,} | {load['concurrency']} | {load['non_2xx']} | {load['statuses']} | "
               f"{load['requests_per_s']} | {lat['p50_ms']:.1f} | {lat['p95_ms']:.1f} | {lat['p99_ms']:.1f} |", "",
               "| request kind | count | p50 ms | p99 ms |", "|---|---:|---:|---:|",
               *[f"| {k} | {v['n']} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} |" for k, v in load["latency_by_kind"].items()],
               "",
               f"Mix: {load['mix']}. The server's own /metrics counted {load['server_counted_2xx']:,} 2xx responses "
               "(the load plus readiness probes).", ""]
    if fuzz:
        md += ["## Fuzz", "",
               f"{fuzz['tool']}: {fuzz['requests']:,} generated requests (positive and negative data for every "
               f"operation of the service's OpenAPI), statuses {fuzz['statuses']}.", "",
               f"Malformed HTTP requests: {len(fuzz['malformed_http'])}, 5xx among them: {len(fuzz['malformed_5xx'])}.", "",
               "| malformed request | status |", "|---|---:|",
               *[f"| {r['case']} | {r['status'] if r['status'] is not None else 'closed'} |" for r in fuzz["malformed_http"]],
               "", f"**5xx in total: {fuzz['server_errors_5xx']}**; service healthy afterwards: {fuzz['healthy_after']}; "
               f"tracebacks in the server log: {result['server_tracebacks']}.", ""]
        errs = [e for e in fuzz.get("server_errors", [])]
        if errs:
            md += ["### Problems", "", *[f"- `{json.dumps(e)[:400]}`" for e in errs[:20]], ""]
    (out / "serve_load.md").write_text("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
