"""`clip4rec train` and `clip4rec evaluate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from clip4rec.config import ConfigError, load_config
from clip4rec.evaluate.report import metrics_table


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        dataset: Path = typer.Argument(..., help="Dataset directory (from `clip4rec import`)"),
        out: Path = typer.Option(..., "--out", help="Run directory to write (resumes if it holds this run)"),
        variant: Optional[str] = typer.Option(None, "--variant", help="id"),
        split: Optional[str] = typer.Option(None, "--split", help="loo | cold"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="max epochs"),
        patience: Optional[int] = typer.Option(None, "--patience"),
        time_limit: Optional[float] = typer.Option(None, "--time-limit", help="training wall-clock cap, seconds"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        lr: Optional[float] = typer.Option(None, "--lr"),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML or TOML config file"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    ) -> None:
        """Train a model and evaluate it (full ranking) into a Run directory."""
        from clip4rec.train.run import train
        cfg = _config(config, {"model.variant": variant, "split.kind": split, "seed": seed,
                               "train.max_epochs": epochs, "train.patience": patience,
                               "train.time_limit_s": time_limit, "train.batch_size": batch_size, "train.lr": lr})
        metrics = train(dataset, out, cfg, progress=not quiet)
        typer.echo(metrics_table(metrics))

    @app.command("evaluate")
    def evaluate_cmd(run: Path = typer.Argument(..., help="Run directory"),
                     as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
                     quiet: bool = typer.Option(False, "--quiet")) -> None:
        """Re-evaluate a Run: metrics with CIs per segment, TREC run/qrels files."""
        from clip4rec.train.run import evaluate
        try:
            metrics = evaluate(run, progress=not (quiet or as_json))
        except (FileNotFoundError, ValueError) as err:
            typer.secho(str(err), fg="red", err=True)
            raise typer.Exit(2)
        typer.echo(json.dumps(metrics, indent=2) if as_json else metrics_table(metrics))


def _config(path: Optional[Path], overrides: dict) -> "Config":  # noqa: F821
    try:
        return load_config(path, overrides)
    except ConfigError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2)
