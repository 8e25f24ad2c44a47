"""Command line: one command per pipeline stage, each a thin layer over the Python API."""

from __future__ import annotations

import typer

from clip4rec.data import cli as data_cli
from clip4rec.encode import cli as encode_cli
from clip4rec.evaluate import cli as evaluate_cli
from clip4rec.experiments import cli as experiments_cli
from clip4rec.serve import cli as serve_cli

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="clip4rec: multimodal sequential recommendation (offline item encoding, online user tower).")

# Each package owns its commands and attaches them here, in pipeline order (the order `clip4rec --help` lists):
# `train` chains training and evaluation, so it lives on top, in experiments, but is listed where it runs.
data_cli.register(app)
encode_cli.register(app)
experiments_cli.register_train(app)
evaluate_cli.register(app)
experiments_cli.register_compare(app)
serve_cli.register(app)
experiments_cli.register_demo(app)

if __name__ == "__main__":
    app()
