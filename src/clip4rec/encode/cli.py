"""CLI for stage 1: ``clip4rec encode``, ``clip4rec mismatch``, ``clip4rec similar``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from clip4rec.config import EncodeConfig, load_config


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(2)


# Flags default to None so that only what the user typed overrides a --config file; --help shows the config's
# defaults (clip4rec.config.EncodeConfig).
_E = EncodeConfig()


def encode_cmd(
    dataset: Path = typer.Argument(..., help="Dataset directory (from `clip4rec import`)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e", show_default=_E.encoder,
                                          help="clip | lite | item-llm | auto | a local CLIP folder. auto = clip when "
                                               "its weights are available offline, else lite (a stand-in for CLIP, "
                                               "not CLIP)."),
    out: Path = typer.Option(..., "--out", "-o", help="Store directory (created; re-running refreshes/resumes it)."),
    model: Optional[str] = typer.Option(None, "--model", help="clip: hub id or local folder "
                                        "(default openai/clip-vit-base-patch32)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", min=1, show_default=str(_E.batch_size)),
    workers: Optional[int] = typer.Option(None, "--workers", help="Image decode workers (default min(4, cpus))."),
    decode: Optional[str] = typer.Option(None, "--decode", help="thread | process (decode worker pool kind).",
                                         show_default=_E.engine.decode),
    text_fields: Optional[str] = typer.Option(None, "--text-fields",
                                              help="Comma-separated item columns composed into the text "
                                                   "(default: encoder's; lite: title,genres,year,text)."),
    realign: bool = typer.Option(False, "--realign", help="lite: retrain the alignment heads on the current catalog."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch intra-op threads."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    engine: Optional[str] = typer.Option(None, "--engine", show_default=_E.engine.name,
                                         help="local (this process) | ray (Ray Data pipeline: decode tasks + an actor "
                                              "pool holding the model; needs pip install 'clip4rec\\[ray]')."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: an existing cluster ('auto', "
                                          "'ray://head:10001'); default: start a local Ray instance."),
    actors: Optional[int] = typer.Option(None, "--actors", min=1, help="ray: model actors (default: one per GPU "
                                         "with --actor-gpus, else the CPUs left after one decode task)."),
    actor_cpus: Optional[float] = typer.Option(None, "--actor-cpus", show_default=str(_E.engine.actor_cpus),
                                               help="ray: CPUs (= torch threads) per model actor."),
    actor_gpus: Optional[float] = typer.Option(None, "--actor-gpus", show_default=str(_E.engine.actor_gpus),
                                               help="ray: GPUs per model actor (1: one actor per GPU; use with "
                                                    "--device cuda)."),
    device: Optional[str] = typer.Option(None, "--device", help="clip: torch device (cpu, cuda)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="clip: float32 | float16 | bfloat16 (fp16 on GPU: "
                                        "about 2x throughput; its vectors get their own fingerprint)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML or TOML config file (its encode section)."),
) -> None:
    """Encode every item's image and text with a frozen encoder into an embedding store (resumable, incremental)."""
    from clip4rec.data.dataset import DatasetError
    from clip4rec.encode.encoders import EncoderUnavailable
    from clip4rec.encode.pipeline import encode_dataset

    fields = [f.strip() for f in text_fields.split(",") if f.strip()] if text_fields else None
    overrides = {"encoder": encoder, "batch_size": batch_size, "text_fields": fields, "realign": realign or None,
                 "options.model": model, "options.threads": threads or None, "options.device": device,
                 "options.dtype": dtype, "engine.name": engine, "engine.workers": workers, "engine.decode": decode,
                 "engine.address": address, "engine.actors": actors, "engine.actor_cpus": actor_cpus,
                 "engine.actor_gpus": actor_gpus, "engine.progress": not quiet}
    try:
        settings = load_config(config, {f"encode.{k}": v for k, v in overrides.items()}).encode
        report = encode_dataset(dataset, out=out, settings=settings, progress=not quiet)
    except TypeError as err:
        if not (device or dtype):
            raise
        _fail(f"encoder {settings.encoder!r} takes no --device/--dtype (clip does): {err}")
        return
    except (DatasetError, EncoderUnavailable, ValueError, RuntimeError) as err:
        _fail(str(err))
        return
    for line in report.lines():
        typer.echo(line)


def mismatch_cmd(
    store: Path = typer.Argument(..., help="Embedding store directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for mismatch.csv and mismatch_top.png."),
    top: int = typer.Option(24, "--top", help="How many of the most suspicious items go on the contact sheet."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Which encoder of the store (default: the one "
                                          "with a shared image-text space)."),
    crossfit: int = typer.Option(5, "--crossfit", help="lite: score each fold with heads fitted on the other folds "
                                 "(0 = use the stored heads, fitted on every pair)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset for the contact sheet (default: the one "
                                           "recorded in the store)."),
    inject_swaps: float = typer.Option(0.0, "--inject-swaps", help="Also measure: swap the images of this fraction "
                                       "of items (seeded) and report the ROC AUC of the score at finding them."),
    seed: int = typer.Option(0, "--seed"),
    extra_text: list[str] = typer.Option([], "--extra-text", help="lite: also use another encoder's text vectors "
                                         "from the same store, e.g. item-llm:llm_text (repeatable)."),
) -> None:
    """Score every item with both an image and a text for image-text mismatch; write CSV + contact sheet."""
    from clip4rec.encode.mismatch import swap_auc, write_report
    from clip4rec.encode.store import StoreError

    try:
        res = write_report(store, out, top=top, encoder=encoder, crossfit=crossfit, seed=seed,
                           dataset=str(dataset) if dataset else None, extra_text=list(extra_text) or None)
    except (StoreError, FileNotFoundError) as err:
        _fail(str(err))
        return
    typer.echo(f"encoder {res['encoder']}: scored {res['items_scored']} items -> {res['csv']}")
    if res["contact_sheet"]:
        typer.echo(f"contact sheet of the {len(res['worst'])} most suspicious: {res['contact_sheet']}")
    for item_id, score in res["worst"][:10]:
        typer.echo(f"  {item_id}\t{score:+.4f}")
    if inject_swaps > 0:
        ev = swap_auc(store, frac=inject_swaps, seed=seed, encoder=encoder, crossfit=crossfit,
                      extra_text=list(extra_text) or None)
        (Path(out) / "swap_auc.json").write_text(json.dumps(ev, indent=2))
        kind = "CLIP" if ev["is_clip"] else "NOT CLIP (stand-in)"
        typer.echo(f"injected swaps: {ev['swapped']} of {ev['items']} items ({inject_swaps:.0%}, seed {seed}); "
                   f"ROC AUC {ev['auc']:.3f} with encoder {ev['encoder']} [{kind}], method {ev['method']}, "
                   f"crossfit {ev['crossfit']}, text inputs {ev['text_inputs']}")


def similar_cmd(
    store: Path = typer.Argument(..., help="Embedding store directory."),
    item_id: str = typer.Argument(..., help="Item to find neighbours of."),
    by: str = typer.Option("image", "--by", help="image | text | fused (image+text in the shared space) | any "
                           "modality of the store (e.g. llm_text)."),
    k: int = typer.Option(10, "--k", "-k", min=1),
    encoder: Optional[str] = typer.Option(None, "--encoder"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The items most similar to ITEM_ID (cosine), by image, text or both."""
    from clip4rec.encode.similar import similar_items
    from clip4rec.encode.store import EmbeddingStore, StoreError

    try:
        st = EmbeddingStore.load(store)
        hits = similar_items(st, item_id, by=by, k=k, encoder=encoder)
    except (StoreError, FileNotFoundError) as err:
        _fail(str(err))
        return
    if as_json:
        typer.echo(json.dumps(hits))
        return
    titles = {}
    try:
        from clip4rec.data.dataset import Dataset
        ds_dir = st.manifest["encoders"][st.encoders[0]].get("dataset")
        if ds_dir:
            items = Dataset.load(ds_dir).items.set_index("item_id")["title"]
            titles = items.to_dict()
    except Exception:  # noqa: BLE001 - titles are a nicety
        pass
    typer.echo(f"items most similar to {item_id} {('(' + str(titles[item_id]) + ')') if item_id in titles else ''} "
               f"by {by}:")
    for h in hits:
        typer.echo(f"  {h['item_id']}\t{h['score']:.4f}\t{titles.get(h['item_id']) or ''}")


def register(app: typer.Typer) -> None:
    app.command("encode")(encode_cmd)
    app.command("mismatch")(mismatch_cmd)
    app.command("similar")(similar_cmd)


def make_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, no_args_is_help=True, help="clip4rec stage 1 (encode, mismatch, similar).")
    register(app)
    return app
