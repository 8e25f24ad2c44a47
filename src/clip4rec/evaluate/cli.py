"""`clip4rec evaluate`: re-evaluate a Run from its own files."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from clip4rec.evaluate.report import SUMMARY_METRICS, metrics_table, run_report_markdown
from clip4rec.files import write_json, write_text


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(run: Path = typer.Argument(..., help="Run directory"),
                     as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
                     markdown: Optional[Path] = typer.Option(None, "--markdown", help="also write a results page"),
                     title: str = typer.Option("clip4rec results", "--title", help="title of the results page"),
                     quiet: bool = typer.Option(False, "--quiet")) -> None:
        """Re-evaluate a Run: metrics with CIs per segment, TREC run/qrels files."""
        from clip4rec.evaluate.evaluator import evaluate
        try:
            metrics = evaluate(run, progress=not (quiet or as_json))
        except (FileNotFoundError, ValueError) as err:
            typer.secho(str(err), fg="red", err=True)
            raise typer.Exit(2)
        if markdown is not None:
            markdown.parent.mkdir(parents=True, exist_ok=True)
            command = "clip4rec " + shlex.join(sys.argv[1:])
            run_config = json.loads((run / "config.json").read_text())
            config_file = markdown.with_suffix(".config.json")
            write_json(config_file, run_config["config"])
            write_text(markdown, run_report_markdown(metrics, title, command, run_config, str(config_file)))
            write_json(markdown.with_suffix(".json"), metrics)
        typer.echo(json.dumps(metrics, indent=2) if as_json else metrics_table(metrics, metrics=SUMMARY_METRICS))
