"""`clip4rec serve` (the HTTP service) and `clip4rec publish` (push newly encoded items to a running service)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        run: Path = typer.Argument(..., help="Run directory (from `clip4rec train`)"),
        host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback unless told otherwise)"),
        port: int = typer.Option(8000, "--port"),
        index: str = typer.Option("exact", "--index", help="top-k: exact (torch matmul + partial sort) | faiss"),
        faiss_kind: str = typer.Option("ivf", "--faiss-kind", help="faiss: ivf (approximate, see its recall in "
                                                                   "bench/results/serve_latency.md) | flat (exact)"),
        nprobe: int = typer.Option(16, "--nprobe", help="faiss ivf: inverted lists probed per query"),
        max_batch: int = typer.Option(16, "--max-batch", help="concurrent /recommend calls answered together"),
        store: list[Path] = typer.Option([], "--store", help="embedding store(s) for /similar?by=image|text "
                                                            "(default: the stores the Run was trained on)"),
        threads: int = typer.Option(1, "--threads", help="torch intra-op threads per request; with 1, concurrent "
                                                         "requests share the cores (more only helps one huge catalog "
                                                         "on an idle machine)"),
        max_body: int = typer.Option(1 << 20, "--max-body-bytes", help="larger request bodies get 413"),
        log_level: str = typer.Option("info", "--log-level"),
    ) -> None:
        """Serve a Run over HTTP: /recommend, /items (live cold start), /items/{id}/similar, /metrics, and a page at /."""
        import torch

        from clip4rec.serve.app import serve
        from clip4rec.serve.index import faiss_available
        from clip4rec.serve.state import Limits, ServiceState
        if index not in ("exact", "faiss"):
            raise typer.BadParameter("--index must be exact or faiss")
        if faiss_kind not in ("ivf", "flat"):
            raise typer.BadParameter("--faiss-kind must be ivf or flat")
        if index == "faiss" and not faiss_available():
            typer.secho("--index faiss needs the faiss-cpu package (pip install faiss-cpu)", fg="red", err=True)
            raise typer.Exit(2)
        if threads:
            torch.set_num_threads(threads)
        try:
            state = ServiceState.from_run(run, stores=store, index=index,  # type: ignore[arg-type]
                                          index_options={"nprobe": nprobe, "kind": faiss_kind} if index == "faiss" else None,
                                          limits=Limits(max_body_bytes=max_body))
        except (FileNotFoundError, ValueError) as err:
            typer.secho(str(err), fg="red", err=True)
            raise typer.Exit(2)
        h = state.health()
        typer.echo(f"serving {run} ({h['variant']}, {h['items']} items, {index} top-k) on http://{host}:{port} "
                   f"- page at /, API docs at /docs")
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.secho(f"warning: bound to {host}: reachable from other machines; the API has no authentication",
                        fg="yellow", err=True)
        serve(state, host=host, port=port, log_level=log_level, max_batch=max_batch)

    @app.command("publish")
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
            st = EmbeddingStore.load(store)
        except StoreError as err:
            typer.secho(str(err), fg="red", err=True)
            raise typer.Exit(2)
        vectors = store_vectors(st)
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
        typer.echo(f"published {created} new and {updated} updated item(s) to {url}; {failed} failed")
        if failed:
            raise typer.Exit(1)


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
