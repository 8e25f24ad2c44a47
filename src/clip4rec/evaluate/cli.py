"""`clip4rec compare`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from clip4rec.config import ConfigError, load_config


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        ctx: typer.Context,
        dataset: Path = typer.Argument(..., help="Dataset directory (from `clip4rec import`)"),
        out: Path = typer.Option(..., "--out", help="Report directory (resumes: finished cells are reused)"),
        variants: str = typer.Option("id,text,fused,fused-id", "--variants", help="comma-separated variants"),
        seeds: int = typer.Option(5, "--seeds", help="number of seeds per (split, variant)"),
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
        """Train and evaluate every (split, variant, seed), then write report.md, report.json and plots."""
        from clip4rec.evaluate.compare import compare, rerender
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
                             list(store or []), cfg, out, command=_command_line(ctx), argv=sys.argv,
                             progress=not quiet, log=typer.echo, note=note)
        except (ConfigError, ValueError, FileNotFoundError) as err:
            typer.secho(str(err), fg="red", err=True)
            raise typer.Exit(2)
        for row in report["goals"]:
            state = "not evaluated" if row["met"] is None else ("met" if row["met"] else "missed")
            typer.echo(f"goal {state}: {row['text']}" + (f" (split {row['split']})" if row["split"] else ""))


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
