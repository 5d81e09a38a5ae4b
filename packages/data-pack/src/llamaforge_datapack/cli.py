"""`llamaforge data ...`: pack and inspect — thin wrappers over the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llamaforge_datapack import __version__
from llamaforge_datapack.errors import DataPackError

app = typer.Typer(
    help="Tokenise and pack pretraining / SFT data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def main(argv: list[str] | None = None) -> int:
    """``python -m llamaforge_datapack``: this package\'s commands alone; a user error is one red
    line on stderr and exit code 2, never a traceback."""
    try:
        app(args=argv, prog_name="python -m llamaforge_datapack")
    except SystemExit as exc:  # typer ends every run this way, with the exit code
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except DataPackError as exc:
        from rich.text import Text

        Console(stderr=True).print(Text("error: ", style="red") + Text(str(exc)), soft_wrap=True)
        return 2
    return 0


def _console(ctx: typer.Context) -> Console:
    return ctx.obj if isinstance(ctx.obj, Console) else Console()


@app.command()
def version() -> None:
    """Print the llamaforge-datapack version."""
    typer.echo(f"llamaforge-datapack {__version__}")


@app.command()
def pack(
    ctx: typer.Context,
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Inputs: NAME=FILES[:WEIGHT] (files, dirs or globs, comma-separated), or a path."
        ),
    ],
    tokenizer: Annotated[Path, typer.Option("--tokenizer", "-t", help="HF tokenizer dir.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output dir.")],
    max_length: Annotated[int, typer.Option(help="Tokens per row.")] = 4096,
    template: Annotated[
        str, typer.Option(help="SFT chat template: llama2, llama3, chatml or tokenizer.")
    ] = "chatml",
    num_bins: Annotated[int, typer.Option(help="Category bins for bucket ordering.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed for row order and fractional weights.")] = 42,
    shard_rows: Annotated[int, typer.Option(help="Rows per output shard.")] = 8192,
    num_proc: Annotated[
        int, typer.Option(help="Tokenizer processes (with --engine ray: Ray workers).")
    ] = 1,
    engine: Annotated[
        str, typer.Option(help="local (this machine) or ray (Ray Data, needs the [ray] extra).")
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(help="ray: the cluster's address (default: start a local Ray instance)."),
    ] = None,
    block_records: Annotated[
        int, typer.Option(help="ray: input lines per block (one worker task each).")
    ] = 20000,
    on_error: Annotated[str, typer.Option(help="fail or skip (and count) bad records.")] = "fail",
    bos: Annotated[
        bool | None, typer.Option(help="Start documents with BOS (default: as the tokenizer does).")
    ] = None,
    eos: Annotated[bool, typer.Option(help="End documents with EOS.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output dir.")] = False,
) -> None:
    """Tokenise SOURCES and pack them into fixed-length rows (no token lost)."""
    from rich.progress import Progress, SpinnerColumn, TimeElapsedColumn

    from llamaforge_datapack.pack import PackConfig, Source
    from llamaforge_datapack.pack import pack as run_pack
    from llamaforge_datapack.records import OnError
    from llamaforge_datapack.tokenize import TokenizeConfig

    if on_error not in ("fail", "skip"):
        raise DataPackError(f"--on-error must be fail or skip, got {on_error!r}")
    parsed = [Source.parse(s, i) for i, s in enumerate(sources)]
    tok_cfg = TokenizeConfig(
        tokenizer_dir=tokenizer, max_length=max_length, template=template, add_bos=bos, add_eos=eos
    )
    cfg = PackConfig(
        out_dir=out,
        num_bins=num_bins,
        seed=seed,
        shard_rows=shard_rows,
        num_proc=num_proc,
        on_error=OnError(on_error),
        overwrite=overwrite,
        engine=engine,
        ray_address=ray_address,
        block_records=block_records,
    )
    console = _console(ctx)
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # the CLI shows its own progress
    with Progress(
        SpinnerColumn(),
        "[progress.description]{task.description}",
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("reading", total=None)
        manifest = run_pack(
            parsed,
            tok_cfg,
            cfg,
            progress=lambda stage, n: progress.update(task, description=f"{stage}: {n:,}"),
        )
    print_manifest(console, manifest, out)


@app.command()
def inspect(ctx: typer.Context, folder: Path) -> None:
    """Print the manifest of a packed dir."""
    from llamaforge_datapack.manifest import Manifest

    print_manifest(_console(ctx), Manifest.read(folder), folder)


def print_manifest(console: Console, manifest, out: Path) -> None:
    table = Table(title=f"packed → {out}", show_header=False)
    rows = [
        ("files / records", f"{manifest.files:,} / {manifest.records:,}"),
        ("skipped records", f"{manifest.skipped_records:,}"),
        ("documents", f"{manifest.documents:,}"),
        ("split (longer than max_length)", f"{manifest.split_documents:,}"),
        (
            "SFT truncated / dropped",
            f"{manifest.truncated_conversations:,} / {manifest.dropped_conversations:,}",
        ),
        ("tokens (learned)", f"{manifest.tokens:,} ({manifest.label_tokens:,})"),
        ("rows × max_length", f"{manifest.rows:,} × {manifest.max_length:,}"),
        ("fill ratio", f"{manifest.fill_ratio:.2%}"),
        ("shards / buckets", f"{len(manifest.shards)} / {manifest.num_bins}"),
    ]
    rows += [
        (f"tokens: {cat}", f"{n:,}") for cat, n in sorted(manifest.tokens_per_category.items())
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    for example in manifest.skipped_examples[:5]:
        console.print(f"[yellow]skipped:[/] {example}")
