"""`clip4rec train` and `clip4rec evaluate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from clip4rec.config import Config, ConfigError, load_config
from clip4rec.evaluate.report import metrics_table, run_report_markdown

SUMMARY_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr")


# Flags default to None so that only what the user typed overrides the config file; --help shows what the
# config would use instead (the defaults of clip4rec.config, unless --config sets them).
_DEFAULTS = Config()


def _default(value: object) -> str:
    return str(value)


def register(app: typer.Typer) -> None:
    d, m, t = _DEFAULTS, _DEFAULTS.model, _DEFAULTS.train

    @app.command("train")
    def train_cmd(
        dataset: Path = typer.Argument(..., help="Dataset directory (from `clip4rec import`)"),
        out: Path = typer.Option(..., "--out", help="Run directory to write (resumes if it holds this run)"),
        variant: Optional[str] = typer.Option(None, "--variant", help="id | text | image | fused | fused-id | pop | content-knn",
                                              show_default=_default(m.variant)),
        store: list[str] = typer.Option([], "--store", help="embedding store from `clip4rec encode` (repeatable)"),
        modality: list[str] = typer.Option(
            [], "--modality", help="content modality, e.g. lite:image (repeatable)",
            show_default="from the stores: text = llm_text if stored, else text; image = image; fused = both"),
        backbone: Optional[str] = typer.Option(None, "--backbone", help="scratch | smollm2",
                                               show_default=_default(m.backbone)),
        split: Optional[str] = typer.Option(None, "--split", help="loo | cold", show_default=_default(d.split.kind)),
        seed: Optional[int] = typer.Option(None, "--seed", show_default=_default(d.seed)),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="max epochs", show_default=_default(t.max_epochs)),
        patience: Optional[int] = typer.Option(None, "--patience", help="epochs without a better validation "
                                               "NDCG@10 before stopping", show_default=_default(t.patience)),
        warmup: Optional[int] = typer.Option(None, "--warmup-epochs", help="first epochs whose dips do not count "
                                             "toward --patience", show_default=_default(t.warmup_epochs)),
        time_limit: Optional[float] = typer.Option(None, "--time-limit", help="training wall-clock cap, seconds",
                                                   show_default=_default("none")),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="next-item targets per step",
                                                 show_default=_default(t.batch_size)),
        lr: Optional[float] = typer.Option(None, "--lr", show_default=_default(t.lr)),
        device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda | cuda:N",
                                             show_default=_default(t.device)),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML or TOML config file"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    ) -> None:
        """Train a model and evaluate it (full ranking) into a Run directory.

        Defaults shown are the config's; a --config file replaces them, and flags override both."""
        from clip4rec.train.run import train
        cfg = _config(config, {"model.variant": variant, "model.stores": store or None,
                               "model.modalities": modality or None,
                               "model.backbone": backbone, "split.kind": split, "seed": seed,
                               "train.max_epochs": epochs, "train.patience": patience,
                               "train.warmup_epochs": warmup,
                               "train.time_limit_s": time_limit, "train.batch_size": batch_size, "train.lr": lr,
                               "train.device": device})
        try:
            _record_modalities(cfg)
            metrics = train(dataset, out, cfg, progress=not quiet)
        except (FileNotFoundError, ValueError) as err:
            typer.secho(f"train failed: {err}", fg="red", err=True)
            raise typer.Exit(2)
        t = metrics.get("training") or {}
        if t.get("epochs_run"):
            typer.echo(f"kept epoch {t['best_epoch']} of {t['epochs_run']} (best validation NDCG@10; stopped by "
                       f"{t['stopped_by']}; patience counts after {cfg.train.warmup_epochs} warm-up epochs)")
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


def _record_modalities(cfg: Config) -> None:
    """Name the modalities a content variant will read from the stores in the config, so the Run's
    config.json records them (and the Run still loads if the stores later gain, say, llm_text)."""
    from clip4rec.train.modalities import default_modalities
    if not cfg.model.modalities:
        chosen = default_modalities(cfg.model.variant, cfg.model.stores)
        if chosen:
            cfg.model.modalities = chosen
            typer.echo(f"modalities (from the stores): {', '.join(chosen)}")


def _config(path: Optional[Path], overrides: dict) -> Config:
    try:
        return load_config(path, overrides)
    except ConfigError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2)
