"""`clip4rec train` (train, then evaluate), `clip4rec compare` (a grid of Runs and its report) and `clip4rec demo`
(the whole pipeline, short): the commands that chain stages."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from clip4rec.config import Config, ConfigError, load_config
from clip4rec.evaluate.report import SUMMARY_METRICS, metrics_table
from clip4rec.model.backbone import GRAMMAR, parse_backbone

# Flags default to None so that only what the user typed overrides the config file; --help shows what the
# config would use instead (the defaults of clip4rec.config, unless --config sets them).
_DEFAULTS = Config()


def _default(value: object) -> str:
    return str(value)


def register_train(app: typer.Typer) -> None:
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
            show_default="from the stores: text = text (sentence encoder) if stored, else llm_text; image = image; fused = both"),
        backbone: Optional[str] = typer.Option(
            None, "--backbone", help=f"user tower: smollm2 (the config's llm_* settings) or {GRAMMAR}",
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
        cold_floor: Optional[float] = typer.Option(
            None, "--cold-floor", help="content variants, cold split: boost items without training interactions "
            "until validation cold R@10 >= this x warm R@10 (model.cold_floor)", show_default=_default("off")),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML or TOML config file"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    ) -> None:
        """Train a model and evaluate it (full ranking) into a Run directory.

        Defaults shown are the config's; a --config file replaces them, and flags override both."""
        from clip4rec.experiments.pipeline import train_and_evaluate
        cfg = _config(config, {"model.variant": variant, "model.stores": store or None,
                               "model.modalities": modality or None,
                               "model.backbone": backbone if backbone in (None, "smollm2") else None,
                               "split.kind": split, "seed": seed,
                               "train.max_epochs": epochs, "train.patience": patience,
                               "train.warmup_epochs": warmup,
                               "train.time_limit_s": time_limit, "train.batch_size": batch_size, "train.lr": lr,
                               "train.device": device, "model.cold_floor": cold_floor})
        try:
            if backbone not in (None, "smollm2"):  # a full name sets the tower's llm_* fields too
                cfg = cfg.model_copy(update={"model": parse_backbone(backbone).apply(cfg.model)})
            _record_modalities(cfg)
            metrics = train_and_evaluate(dataset, out, cfg, progress=not quiet)
        except (FileNotFoundError, ValueError) as err:
            typer.secho(f"train failed: {err}", fg="red", err=True)
            raise typer.Exit(2)
        t = metrics.get("training") or {}
        if t.get("epochs_run"):
            typer.echo(f"kept epoch {t['best_epoch']} of {t['epochs_run']} (best validation NDCG@10; stopped by "
                       f"{t['stopped_by']}; patience counts after {cfg.train.warmup_epochs} warm-up epochs)")
        boost = t.get("cold_boost")
        if boost:
            typer.echo(f"cold boost {boost['chosen']:g}: the smallest whose validation cold R@10 reaches "
                       f"{boost['floor']:g} x warm R@10" if boost["reached"] else
                       f"cold boost {boost['chosen']:g}, the largest tried: validation cold R@10 stays below "
                       f"{boost['floor']:g} x warm R@10")
        typer.echo(metrics_table(metrics, metrics=SUMMARY_METRICS))


def register_compare(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        ctx: typer.Context,
        dataset: Path = typer.Argument(..., help="Dataset directory (from `clip4rec import`)"),
        out: Path = typer.Option(..., "--out", help="Report directory (resumes: finished cells are reused)"),
        variants: str = typer.Option("id,text,fused,fused-id", "--variants", help="comma-separated variants"),
        backbones: Optional[str] = typer.Option(
            None, "--backbones", help=f"comma-separated user towers, each trained for every variant: {GRAMMAR}",
            show_default="the config's model.backbone: scratch"),
        seeds: int = typer.Option(5, "--seeds", help="number of seeds per (split, variant, backbone)"),
        seed_base: int = typer.Option(0, "--seed-base", help="first seed; seeds are BASE..BASE+N-1"),
        splits: str = typer.Option("loo,cold", "--splits", help="comma-separated: loo, cold"),
        store: Optional[list[Path]] = typer.Option(None, "--store", help="embedding store (repeatable)"),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML or TOML base config"),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="max epochs per run"),
        patience: Optional[int] = typer.Option(None, "--patience"),
        time_limit: Optional[float] = typer.Option(None, "--time-limit", help="training wall-clock cap per run, s"),
        device: Optional[str] = typer.Option(None, "--device", help="training device: cpu | cuda | cuda:N"),
        quiet: bool = typer.Option(False, "--quiet", help="no per-epoch progress bars"),
        note: Optional[str] = typer.Option(None, "--note", help="a line printed under the report's title "
                                           "(e.g. what differs between its cells)"),
        render_only: bool = typer.Option(False, "--render-only",
                                         help="only rewrite report.md and the plots from OUT/report.json"),
    ) -> None:
        """Train and evaluate every (split, variant, backbone, seed), then write report.md, report.json and plots."""
        from clip4rec.experiments.compare import compare, rerender
        if render_only:
            try:
                report = rerender(out, note=note)
            except FileNotFoundError as err:
                typer.secho(str(err), fg="red", err=True)
                raise typer.Exit(2)
            typer.echo(f"rewrote {out / 'report.md'} and {len(report['plots'])} plots")
            return
        if seeds < 1:
            typer.secho("--seeds must be >= 1", fg="red", err=True)
            raise typer.Exit(2)
        try:
            cfg = load_config(config, {"train.max_epochs": epochs, "train.patience": patience,
                                       "train.time_limit_s": time_limit, "train.device": device})
            report = compare(dataset, _names(variants), range(seed_base, seed_base + seeds), _names(splits),
                             list(store or []), cfg, out, backbones=backbones, command=_command_line(ctx),
                             argv=sys.argv, progress=not quiet, log=typer.echo, note=note)
        except (ConfigError, ValueError, FileNotFoundError) as err:
            typer.secho(str(err), fg="red", err=True)
            raise typer.Exit(2)
        for row in report["goals"]:
            state = "not evaluated" if row["met"] is None else ("met" if row["met"] else "missed")
            typer.echo(f"goal {state}: {row['text']}" + (f" (split {row['split']})" if row["split"] else ""))


def register_demo(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(data: Path = typer.Option(Path("../shared/data"), "--data", help="folder holding ml100k-posters/"),
                 out: Path = typer.Option(Path("artifacts/demo"), "--out"),
                 seed: int = typer.Option(42, "--seed"),
                 epochs: int = typer.Option(12, "--epochs", help="max epochs per variant (the demo's short budget)"),
                 encoder: list[str] = typer.Option(["lite"], "--encoder", help="offline encoder(s) to run (repeatable): "
                                                   "--encoder lite --encoder item-llm adds the item-LLM's text "
                                                   "vectors (about 3 min more)")) -> None:
        """Whole pipeline on ML-100K with posters, short: import, encode offline, train and compare four variants,
        print the table and the command that serves the fused-id Run (about 5.5 min on 2 quiet cores)."""
        from clip4rec.experiments.demo import run_demo
        try:
            run_demo(data, out, seed=seed, max_epochs=epochs, encoders=tuple(encoder))
        except FileNotFoundError as err:
            typer.secho(str(err), fg="red", err=True)
            raise typer.Exit(2)


def _record_modalities(cfg: Config) -> None:
    """Name the modalities a content variant will read from the stores in the config, so the Run's
    config.json records them (and the Run still loads if the stores later gain, say, llm_text)."""
    from clip4rec.model.modalities import default_modalities
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


def _command_line(ctx: typer.Context) -> str:
    """The command with every option spelled out (defaults included), so that it reruns the same grid even
    if a default changes later; the raw ``sys.argv`` is kept next to it in report.json."""
    words = ["clip4rec", ctx.info_name or "compare", str(ctx.params["dataset"])]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "dataset" or value is None or value is False:
            continue
        flag = param.opts[0]
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                words += [flag, str(v)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]
