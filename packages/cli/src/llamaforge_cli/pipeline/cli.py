"""`llamaforge pipeline run RECIPE.toml`: the whole method, stage by stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llamaforge_cli.console import console_of

app = typer.Typer(
    help="Run a recipe end to end: vocabulary, model, data, training, eval, report.",
    no_args_is_help=True,
)


@app.command()
def run(
    ctx: typer.Context,
    recipe: Annotated[Path, typer.Argument(help="Pipeline recipe (.toml).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    start: Annotated[str | None, typer.Option("--from", help="Rerun from this stage on.")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a recipe setting, as if written in the file (repeatable): "
            "train.stages.full.steps=80, vocab.num_pieces=16000, 'eval.max_docs={ zh = 200 }'.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the run here instead of the recipe's out (relative to cwd)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option(help="Show third-party hints that are filtered by default.")
    ] = False,
) -> None:
    """Run RECIPE's stages, skipping those whose inputs and settings are unchanged."""
    from llamaforge_cli.pipeline.recipe import load_recipe
    from llamaforge_cli.pipeline.runner import plan
    from llamaforge_cli.pipeline.runner import run as run_pipeline
    from llamaforge_trainer import no_compile_pool, quiet_known_messages

    quiet_known_messages(verbose)
    no_compile_pool()
    console = console_of(ctx)
    loaded = load_recipe(recipe, overrides or (), out)
    rows = (
        plan(loaded, start)
        if dry_run
        else run_pipeline(
            loaded,
            start=start,
            on_stage=lambda name, action: console.rule(f"{name}: {action}"),
            console=console,
        )
    )
    title = ("plan" if dry_run else "pipeline") + f" — {recipe}"
    table = Table(title=title + "".join(f" {item}" for item in loaded.overrides))
    for col in ("stage", "action", "why / time"):
        table.add_column(col)
    for row in rows:
        table.add_row(row.stage, row.action, row.reason)
    console.print(table)
    if not dry_run:
        console.print(f"report → {loaded.out / 'report' / 'report.md'}")
