"""`clip4rec import` and `clip4rec info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from clip4rec.data.dataset import Dataset, DatasetError


def register(app: typer.Typer) -> None:
    from clip4rec.data.importers import options_help

    # The epilog lists every format's options with their defaults (from the importers themselves).
    @app.command("import", epilog="Options per format (-o KEY=VALUE):\n\n" + options_help())
    def import_cmd(
        fmt: str = typer.Argument(..., help="ml100k-posters | amazon-p5 | generic | recbole"),
        src: Path = typer.Argument(..., help="raw data folder (or file, for generic)"),
        out: Path = typer.Option(..., "--out", help="Dataset directory to write"),
        option: list[str] = typer.Option([], "--option", "-o",
                                         help="importer option KEY=VALUE, repeatable; each format's options and "
                                              "their defaults are listed below"),
    ) -> None:
        """Import raw files into a Dataset (items.parquet, interactions.parquet, dataset.json)."""
        from clip4rec.data.importers import import_dataset
        options = {}
        for pair in option:
            if "=" not in pair:
                raise typer.BadParameter(f"--option expects KEY=VALUE, got {pair!r}")
            key, value = pair.split("=", 1)
            options[key] = value
        try:
            dataset = import_dataset(fmt, str(src), **options)
        except (DatasetError, ValueError, FileNotFoundError) as err:
            typer.secho(f"import failed: {err}", fg="red", err=True)
            raise typer.Exit(2)
        dataset.save(out)
        _print_summary(dataset, out)

    @app.command("info")
    def info_cmd(directory: Path = typer.Argument(..., help="Dataset directory"),
                 as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
        """Print a Dataset's statistics and its validation findings."""
        try:
            dataset = Dataset.load(directory)
        except DatasetError as err:
            typer.secho(str(err), fg="red", err=True)
            raise typer.Exit(2)
        if as_json:
            typer.echo(json.dumps({"stats": dataset.stats(), "meta": dataset.meta}, indent=2, default=str))
        else:
            _print_summary(dataset, directory)


def _print_summary(dataset: Dataset, where: Path) -> None:
    stats = dataset.stats()
    typer.echo(f"Dataset {where}  (source: {dataset.meta.get('source', '?')})")
    for key, value in stats.items():
        typer.echo(f"  {key:<24} {value:,.4g}" if isinstance(value, float) else f"  {key:<24} {value:,}")
    findings = dataset.meta.get("validation", {}).get("findings", [])
    shown = [f for f in findings if f.get("count")]
    typer.echo("  validation: " + ("no problems found" if not shown else ""))
    for f in shown:
        examples = f", e.g. {', '.join(f['examples'][:3])}" if f.get("examples") else ""
        typer.echo(f"    {f['kind']}: {f['count']:,} -> {f['action']}{examples}")
