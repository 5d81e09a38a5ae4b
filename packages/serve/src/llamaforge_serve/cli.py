"""`llamaforge serve ...`: thin Typer wrappers over the llamaforge-serve library API."""

from __future__ import annotations

import typer

from llamaforge_serve import __version__

app = typer.Typer(
    help="OpenAI-compatible inference server with continuous batching and streaming.",
    no_args_is_help=True,
)


@app.command()
def version() -> None:
    """Print the llamaforge-serve version."""
    typer.echo(f"llamaforge-serve {__version__}")
