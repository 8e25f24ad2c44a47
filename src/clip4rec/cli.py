"""Command line: one command per pipeline stage, each a thin layer over the Python API."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="clip4rec: multimodal sequential recommendation (offline item encoding, online user tower).")


def _register_stage_commands() -> None:
    # Each stage owns its commands in its own module and attaches them here.
    from clip4rec.data import cli as data_cli
    data_cli.register(app)
    for module in ("clip4rec.encode.cli", "clip4rec.train.cli", "clip4rec.evaluate.cli", "clip4rec.serve.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        mod.register(app)


_register_stage_commands()


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
    from clip4rec.demo import run_demo
    try:
        run_demo(data, out, seed=seed, max_epochs=epochs, encoders=tuple(encoder))
    except FileNotFoundError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2)

if __name__ == "__main__":
    app()
