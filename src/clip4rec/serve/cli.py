"""`clip4rec serve` (the HTTP service) and `clip4rec publish` (push newly encoded items to a running service)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional, get_args

import typer

from clip4rec.config import ConfigError, FaissKind, IndexChoice, ServeConfig, load_config


# Flags default to None so that only what the user typed overrides a --config file; --help shows the config's
# defaults (clip4rec.config.ServeConfig).
_S = ServeConfig()


def serve_cmd(
    run: Path = typer.Argument(..., help="Run directory (from `clip4rec train`)"),
    host: Optional[str] = typer.Option(None, "--host", show_default=_S.host,
                                       help="address to bind (127.0.0.1: loopback unless told otherwise)"),
    port: Optional[int] = typer.Option(None, "--port", show_default=str(_S.port)),
    index: Optional[str] = typer.Option(None, "--index", show_default=_S.index,
                                        help="top-k: auto (the index persisted by `clip4rec index` beside the Run "
                                             "if any, else exact) | exact (torch matmul + partial sort) | faiss "
                                             "(built at start) | persisted"),
    faiss_kind: Optional[str] = typer.Option(None, "--faiss-kind", help="faiss: ivf (default; approximate, see "
                                             "its recall in bench/results/scale.json) | hnsw | flat (exact); "
                                             "persisted: which one (default: the newest)"),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="faiss ivf: inverted lists probed per query "
                                                                "(default 16, or as persisted)"),
    ef_search: Optional[int] = typer.Option(None, "--ef-search", help="faiss hnsw: candidate list per query "
                                                                      "(default 64, or as persisted)"),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", show_default=str(_S.max_batch),
                                            help="concurrent /recommend calls answered together"),
    store: list[Path] = typer.Option([], "--store", help="embedding store(s) for /similar?by=image|text "
                                                        "(default: the stores the Run was trained on)"),
    threads: Optional[int] = typer.Option(None, "--threads", show_default=str(_S.threads),
                                          help="torch intra-op threads per request; with 1, concurrent requests "
                                               "share the cores (more only helps one huge catalog on an idle machine)"),
    max_body: Optional[int] = typer.Option(None, "--max-body-bytes", show_default=str(_S.limits.max_body_bytes),
                                           help="larger request bodies get 413"),
    llm_dtype: Optional[str] = typer.Option(None, "--llm-dtype", show_default="as trained",
                                            help="smollm2 towers: float32 | bfloat16 matmuls when serving (a "
                                                 "bf16-trained Run answers faster in float32 on a CPU)"),
    log_level: Optional[str] = typer.Option(None, "--log-level", show_default=_S.log_level),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML or TOML config file (its serve section)"),
) -> None:
    """Serve a Run over HTTP: /recommend, /items (live cold start), /items/{id}/similar, /metrics, and a page at /."""
    from clip4rec.serve.app import serve

    flags = {"host": host, "port": port, "index": index, "faiss_kind": faiss_kind, "nprobe": nprobe,
             "ef_search": ef_search, "max_batch": max_batch, "stores": [str(s) for s in store] or None,
             "threads": threads, "log_level": log_level, "limits.max_body_bytes": max_body, "llm_dtype": llm_dtype}
    settings = _settings(config, flags)
    state = _load_state(run, settings)
    h = state.health()
    how = (f"faiss {h['faiss']['kind']}{' (persisted)' if h['faiss']['persisted'] else ''}" if "faiss" in h
           else "exact")
    typer.echo(f"serving {run} ({h['variant']}, {h['items']} items, {how} top-k) on "
               f"http://{settings.host}:{settings.port} - page at /, API docs at /docs")
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(f"warning: bound to {settings.host}: reachable from other machines; the API has no "
                    "authentication", fg="yellow", err=True)
    serve(state, host=settings.host, port=settings.port, log_level=settings.log_level, max_batch=settings.max_batch)


def _settings(config: Optional[Path], flags: dict[str, Any]) -> ServeConfig:
    try:
        return load_config(config, {f"serve.{k}": v for k, v in flags.items()}).serve
    except ConfigError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2)


def index_choice(settings: ServeConfig, faiss_installed: bool) -> tuple[IndexChoice, dict[str, Any]]:
    """(index to ask ServiceState for, its options): faiss gets every knob with its default; persisted and auto
    only the ones given (the rest are as persisted); auto without faiss installed is exact."""
    if settings.index == "faiss":
        return "faiss", {"nprobe": settings.nprobe or 16, "ef_search": settings.ef_search or 64,
                         "kind": settings.faiss_kind or "ivf"}
    options = {k: v for k, v in (("kind", settings.faiss_kind), ("nprobe", settings.nprobe),
                                 ("ef_search", settings.ef_search)) if v}
    return ("exact" if settings.index == "auto" and not faiss_installed else settings.index), options


def _load_state(run: Path, settings: ServeConfig) -> Any:
    import torch

    from clip4rec.serve.index import faiss_available
    from clip4rec.serve.state import ServiceState
    if settings.index in ("faiss", "persisted") and not faiss_available():
        typer.secho(f"--index {settings.index} needs the faiss-cpu package (pip install faiss-cpu)", fg="red",
                    err=True)
        raise typer.Exit(2)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    index, options = index_choice(settings, faiss_available())
    try:
        return ServiceState.from_run(run, stores=settings.stores, index=index, index_options=options,
                                     limits=settings.limits, llm_dtype=settings.llm_dtype)
    except (FileNotFoundError, ValueError) as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2)


def index_cmd(
    run: Path = typer.Argument(..., help="Run directory (from `clip4rec train`)"),
    kind: str = typer.Option("ivf", "--kind", help="ivf (inverted lists; fast build; best recall per ms in "
                             "bench/results/scale.json) | hnsw (graph; lowest latency, slow build, 2x memory) "
                             "| flat (exact)"),
    nlist: Optional[int] = typer.Option(None, "--nlist", help="ivf: lists (default ~sqrt(items))"),
    nprobe: int = typer.Option(32, "--nprobe", help="ivf: lists probed per query (serve --nprobe overrides; "
                                                    "32 of 1000 lists: recall@10 0.997 at 10^6 items)"),
    m: int = typer.Option(32, "--m", help="hnsw: links per node"),
    ef_construction: int = typer.Option(80, "--ef-construction", help="hnsw: candidate list while building"),
    ef_search: int = typer.Option(64, "--ef-search", help="hnsw: candidate list per query (serve --ef-search "
                                                          "overrides)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="build threads (default: all cores)"),
) -> None:
    """Build a FAISS index over a Run's item table and save it beside the Run (RUN/index/); `serve` loads it."""
    import torch

    from clip4rec.model.artifact import Run
    from clip4rec.serve.index import faiss_available
    from clip4rec.serve.index_store import build_and_save
    if kind not in get_args(FaissKind):
        raise typer.BadParameter(f"--kind must be {', '.join(get_args(FaissKind))}")
    if not faiss_available():
        typer.secho("clip4rec index needs the faiss-cpu package (pip install faiss-cpu)", fg="red", err=True)
        raise typer.Exit(2)
    if threads:
        torch.set_num_threads(threads)
    try:
        loaded = Run.load(run)
    except (FileNotFoundError, ValueError) as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2)
    m_ = build_and_save(run, loaded.item_table, loaded.item_ids, kind=kind, nlist=nlist, nprobe=nprobe, m=m,
                        ef_construction=ef_construction, ef_search=ef_search)
    typer.echo(f"built {m_['kind']} index over {m_['n_items']} items x {m_['dim']} in {m_['build_seconds']}s "
               f"({m_['index_bytes'] / 2**20:.1f} MiB, {m_['params']}) -> {run / 'index' / m_['file']}")
    if m_["kind"] != kind:
        typer.echo(f"note: {kind} needs at least 1000 items to train its lists; built exact flat instead")


def publish_cmd(
    store: Path = typer.Argument(..., help="embedding store holding the new items (from `clip4rec encode`)"),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="the running service"),
    item: list[str] = typer.Option([], "--item", help="item id to publish (repeatable); default: every store "
                                                      "item the service does not know yet"),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset directory to take titles from"),
    timeout: float = typer.Option(30.0, "--timeout"),
) -> None:
    """Add items to a running service from their stored encoder vectors (live cold start, no retraining)."""
    from clip4rec.encode.store import EmbeddingStore, StoreError
    try:
        vectors = store_vectors(EmbeddingStore.load(store))
    except StoreError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2)
    titles: dict[str, Any] = {}
    if dataset is not None:
        from clip4rec.data.dataset import Dataset
        items = Dataset.load(dataset).items
        titles = dict(zip(items["item_id"], items["title"]))
    try:
        wanted = list(item) or [i for i in vectors if i not in known_ids(url, timeout)]
    except OSError as err:
        typer.secho(f"cannot reach {url}: {err}", fg="red", err=True)
        raise typer.Exit(2)
    created, updated, failed = publish_items(url, wanted, vectors, titles, timeout)
    typer.echo(f"published {created} new and {updated} updated item(s) to {url}; {failed} failed")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    app.command("index")(index_cmd)
    app.command("publish")(publish_cmd)


def publish_items(url: str, wanted: list[str], vectors: dict[str, dict[str, list[float]]], titles: dict[str, Any],
                  timeout: float) -> tuple[int, int, int]:
    """POST each wanted item to the service; (created, updated, failed), failures said on stderr."""
    created = updated = failed = 0
    for item_id in wanted:
        if item_id not in vectors:
            typer.secho(f"  {item_id}: not in the store (or no usable input)", fg="red", err=True)
            failed += 1
            continue
        body = {"item_id": item_id, "vectors": vectors[item_id], "title": titles.get(item_id)}
        status, answer = _request(f"{url.rstrip('/')}/items", body, timeout)
        if status in (200, 201):
            created += status == 201
            updated += status == 200
        else:
            failed += 1
            typer.secho(f"  {item_id}: HTTP {status}: {answer.get('detail', answer)}", fg="red", err=True)
    return created, updated, failed


def store_vectors(store) -> dict[str, dict[str, list[float]]]:
    """item id -> {"encoder:modality": vector} for every usable stored row (computed shared spaces left out)."""
    out: dict[str, dict[str, list[float]]] = {}
    for enc in store.encoders:
        for modality in store.entry(enc).get("dims", {}):
            ids, vecs, mask = store.vectors(modality, encoder=enc)
            for item_id, vec, ok in zip(ids, vecs, mask):
                if ok:
                    out.setdefault(item_id, {})[f"{enc}:{modality}"] = [float(x) for x in vec]
    return out


def known_ids(url: str, timeout: float) -> set[str]:
    known: set[str] = set()
    offset = 0
    while True:
        with urllib.request.urlopen(f"{url.rstrip('/')}/items?offset={offset}&limit=1000", timeout=timeout) as resp:
            page = json.loads(resp.read())
        known.update(page["ids"])
        offset += len(page["ids"])
        if not page["ids"] or offset >= page["total"]:
            return known


def _request(url: str, body: dict[str, Any], timeout: float) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"{}")
        except ValueError:
            return err.code, {}
    except OSError as err:
        return 0, {"detail": str(err)}
