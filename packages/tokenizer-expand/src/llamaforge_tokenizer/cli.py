"""`llamaforge vocab ...`: thin Typer wrappers over the llamaforge-tokenizer library API."""

from __future__ import annotations

import typer

from llamaforge_tokenizer import __version__

app = typer.Typer(help="Expand a tokenizer's vocabulary (sentencepiece and byte-level BPE) and a model's embeddings.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the llamaforge-tokenizer version."""
    typer.echo(f"llamaforge-tokenizer {__version__}")
