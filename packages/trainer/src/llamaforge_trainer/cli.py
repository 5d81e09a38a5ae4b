"""`llamaforge train ...`: thin Typer wrappers over the llamaforge-trainer library API."""

from __future__ import annotations

import typer

from llamaforge_trainer import __version__

app = typer.Typer(
    help="Continual pre-training and SFT on ColossalAI's Booster.", no_args_is_help=True
)


@app.command()
def version() -> None:
    """Print the llamaforge-trainer version."""
    typer.echo(f"llamaforge-trainer {__version__}")
