"""`clip4rec train` and `clip4rec evaluate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from clip4rec.config import ConfigError, load_config
from clip4rec.evaluate.report import metrics_table, run_report_markdown

SUMMARY_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr")


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        dataset: Path = typer.Argument(..., help="Dataset directory (from `clip4rec import`)"),
        out: Path = typer.Option(..., "--out", help="Run directory to write (resumes if it holds this run)"),
        variant: Optional[str] = typer.Option(None, "--variant", help="id | text | image | fused | fused-id"),
        store: list[str] = typer.Option([], "--store", help="embedding store from `clip4rec encode` (repeatable)"),
        modality: list[str] = typer.Option([], "--modality", help="content modality, e.g. lite:image (repeatable)"),
        fusion: Optional[str] = typer.Option(None, "--fusion", help="concat | mean | gated"),
        backbone: Optional[str] = typer.Option(None, "--backbone", help="scratch | smollm2"),
        split: Optional[str] = typer.Option(None, "--split", help="loo | cold"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="max epochs"),
        patience: Optional[int] = typer.Option(None, "--patience"),
        time_limit: Optional[float] = typer.Option(None, "--time-limit", help="training wall-clock cap, seconds"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        lr: Optional[float] = typer.Option(None, "--lr"),
        device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default cpu)"),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML or TOML config file"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    ) -> None:
        """Train a model and evaluate it (full ranking) into a Run directory."""
        from clip4rec.train.run import train
        cfg = _config(config, {"model.variant": variant, "model.stores": store or None,
                               "model.modalities": modality or None, "model.fusion": fusion,
                               "model.backbone": backbone, "split.kind": split, "seed": seed,
                               "train.max_epochs": epochs, "train.patience": patience,
                               "train.time_limit_s": time_limit, "train.batch_size": batch_size, "train.lr": lr,
                               "train.device": device})
        try:
            metrics = train(dataset, out, cfg, progress=not quiet)
        except (FileNotFoundError, ValueError) as err:
            typer.secho(f"train failed: {err}", fg="red", err=True)
            raise typer.Exit(2)
        typer.echo(metrics_table(metrics, metrics=SUMMARY_METRICS))

    @app.command("evaluate")
    def evaluate_cmd(run: Path = typer.Argument(..., help="Run directory"),
                     as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
                     markdown: Optional[Path] = typer.Option(None, "--markdown", help="also write a results page"),
                     title: str = typer.Option("clip4rec results", "--title", help="title of the results page"),
                     quiet: bool = typer.Option(False, "--quiet")) -> None:
        """Re-evaluate a Run: metrics with CIs per segment, TREC run/qrels files."""
        from clip4rec.train.run import evaluate
        try:
            metrics = evaluate(run, progress=not (quiet or as_json))
        except (FileNotFoundError, ValueError) as err:
            typer.secho(str(err), fg="red", err=True)
            raise typer.Exit(2)
        if markdown is not None:
            import sys
            markdown.parent.mkdir(parents=True, exist_ok=True)
            import shlex
            command = "clip4rec " + shlex.join(sys.argv[1:])
            run_config = json.loads((run / "config.json").read_text())
            config_file = markdown.with_suffix(".config.json")
            config_file.write_text(json.dumps(run_config["config"], indent=2))
            markdown.write_text(run_report_markdown(metrics, title, command, run_config, str(config_file)))
            (markdown.with_suffix(".json")).write_text(json.dumps(metrics, indent=2))
        typer.echo(json.dumps(metrics, indent=2) if as_json else metrics_table(metrics, metrics=SUMMARY_METRICS))


def _config(path: Optional[Path], overrides: dict) -> "Config":  # noqa: F821
    try:
        return load_config(path, overrides)
    except ConfigError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2)
