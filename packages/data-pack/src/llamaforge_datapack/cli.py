"""`llamaforge data ...`: thin Typer wrappers over the llamaforge-datapack library API."""

from __future__ import annotations

import typer

from llamaforge_datapack import __version__

app = typer.Typer(
    help="Tokenise and pack pretraining and SFT data into fixed-length rows without losing tokens.",
    no_args_is_help=True,
)


@app.command()
def version() -> None:
    """Print the llamaforge-datapack version."""
    typer.echo(f"llamaforge-datapack {__version__}")
