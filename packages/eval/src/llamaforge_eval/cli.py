"""`llamaforge eval ...`: thin Typer wrappers over the llamaforge-eval library API."""

from __future__ import annotations

import typer

from llamaforge_eval import __version__

app = typer.Typer(
    help="MMLU, CMMLU, C-Eval, AGIEval, GAOKAO-Bench, GSM8K, compression and bits per character.",
    no_args_is_help=True,
)


@app.command()
def version() -> None:
    """Print the llamaforge-eval version."""
    typer.echo(f"llamaforge-eval {__version__}")
