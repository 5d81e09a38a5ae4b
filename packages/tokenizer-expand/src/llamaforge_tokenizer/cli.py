"""`llamaforge vocab ...`: learn, expand, init-model, report — thin wrappers over the library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from llamaforge_tokenizer import __version__
from llamaforge_tokenizer.errors import TokenizerExpandError

app = typer.Typer(
    help="Expand a tokenizer's vocabulary and a model's embeddings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def main(argv: list[str] | None = None) -> int:
    """``python -m llamaforge_tokenizer``: this package\'s commands alone; a user error is one red
    line on stderr and exit code 2, never a traceback."""
    try:
        app(args=argv, prog_name="python -m llamaforge_tokenizer")
    except SystemExit as exc:  # typer ends every run this way, with the exit code
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except TokenizerExpandError as exc:
        from rich.text import Text

        Console(stderr=True).print(Text("error: ", style="red") + Text(str(exc)), soft_wrap=True)
        return 2
    return 0


def _console(ctx: typer.Context) -> Console:
    return ctx.obj if isinstance(ctx.obj, Console) else Console()


@app.command()
def version() -> None:
    """Print the llamaforge-tokenizer version."""
    typer.echo(f"llamaforge-tokenizer {__version__}")


@app.command()
def learn(
    ctx: typer.Context,
    tokenizer_dir: Annotated[Path, typer.Argument(help="The current tokenizer dir.")],
    corpus: Annotated[
        list[Path], typer.Argument(help="Domain text files (UTF-8, a doc per line).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Candidate list to write (jsonl).")],
    num_pieces: Annotated[int, typer.Option(help="How many pieces to propose.")] = 8000,
    word_list: Annotated[
        Path | None,
        typer.Option(
            help="Word list ('word freq pos' lines, e.g. jieba's dict.txt); multi-character "
            "pieces must be substrings of its words."
        ),
    ] = None,
    max_piece_chars: Annotated[int, typer.Option(help="Longest piece in characters.")] = 8,
    max_corpus_chars: Annotated[
        int | None, typer.Option(help="Read at most this much text.")
    ] = None,
) -> None:
    """Propose new pieces ranked by the tokens they save on CORPUS; write them for review."""
    from llamaforge_tokenizer.learn import LearnConfig, learn_pieces
    from llamaforge_tokenizer.outdir import check_output_file
    from llamaforge_tokenizer.pieces import write_pieces

    check_output_file(out, inputs=[*corpus, *([word_list] if word_list else [])])
    console = _console(ctx)
    config = LearnConfig(
        num_pieces=num_pieces,
        word_list=word_list,
        max_piece_chars=max_piece_chars,
        max_corpus_chars=max_corpus_chars,
    )
    with _progress(console) as progress:
        task = progress.add_task("learning pieces", total=num_pieces)
        result = learn_pieces(
            tokenizer_dir, corpus, config, progress=lambda n: progress.update(task, completed=n)
        )
    write_pieces(out, [c.to_dict() for c in result.candidates])
    table = Table(title=f"{result.summary()} → {out}")
    for col in ("characters", "tokens before", "tokens after", "saved"):
        table.add_column(col, justify="right")
    saved = 1 - result.tokens_after / max(result.tokens_before, 1)
    table.add_row(
        f"{result.characters:,}",
        f"{result.tokens_before:,}",
        f"{result.tokens_after:,}",
        f"{saved:.1%}",
    )
    console.print(table)
    preview = ", ".join(c.piece for c in result.candidates[:20])
    console.print(f"first pieces: {preview}")


@app.command()
def expand(
    ctx: typer.Context,
    tokenizer_dir: Annotated[Path, typer.Argument(help="The tokenizer dir to expand.")],
    pieces: Annotated[
        Path, typer.Argument(help='New pieces: jsonl {"piece": ...} or a piece per line.')
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output tokenizer dir.")],
    pad_to: Annotated[int, typer.Option(help="Pad the vocabulary to a multiple of this.")] = 64,
    max_piece_chars: Annotated[int, typer.Option(help="Reject longer pieces.")] = 16,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output dir.")] = False,
) -> None:
    """Add PIECES to a sentencepiece or byte-level BPE tokenizer (old ids unchanged)."""
    from llamaforge_tokenizer.expand import expand_tokenizer

    report = expand_tokenizer(
        tokenizer_dir,
        pieces,
        out,
        pad_to=pad_to,
        overwrite=overwrite,
        max_piece_chars=max_piece_chars,
    )
    table = Table(title=f"{report.kind} tokenizer → {out}", show_header=False)
    for key, value in report.to_dict().items():
        if key != "examples_unusable":
            table.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else value)
    _console(ctx).print(table)
    if report.examples_unusable:
        _console(ctx).print(f"[yellow]unusable pieces (e.g.):[/] {report.examples_unusable}")


@app.command("init-model")
def init_model_cmd(
    ctx: typer.Context,
    model_dir: Annotated[Path, typer.Argument(help="HF model dir (safetensors).")],
    tokenizer_dir: Annotated[Path, typer.Argument(help="The expanded tokenizer dir.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output model dir.")],
    method: Annotated[str, typer.Option(help="mean, noisy-mean or freq-out.")] = "mean",
    noise_scale: Annotated[
        float, typer.Option(help="noisy-mean: noise std / old rows' std.")
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="noisy-mean: random seed.")] = 0,
    corpus: Annotated[
        list[Path] | None,
        typer.Option(help="freq-out: new-language text, a document per line. Repeatable."),
    ] = None,
    corpus_docs: Annotated[int, typer.Option(help="freq-out: documents counted.")] = 2000,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output dir.")] = False,
) -> None:
    """Resize MODEL_DIR's embeddings to TOKENIZER_DIR and initialise the new rows."""
    try:
        from llamaforge_tokenizer.embeddings import InitConfig, InitMethod, init_model
    except ImportError as exc:
        raise TokenizerExpandError(
            f"init-model needs the [model] extra ({exc}): pip install 'llamaforge-tokenizer[model]'"
        ) from None
    try:
        chosen = InitMethod(method)
    except ValueError:
        raise TokenizerExpandError(
            f"unknown method {method!r}; choose mean, noisy-mean or freq-out"
        ) from None
    config = InitConfig(
        method=chosen,
        noise_scale=noise_scale,
        seed=seed,
        corpus=list(corpus or []),
        corpus_docs=corpus_docs,
    )
    with _console(ctx).status("initialising embeddings"):
        report = init_model(model_dir, tokenizer_dir, out, config, overwrite=overwrite)
    table = Table(title=f"model → {out}", show_header=False)
    for key, value in report.to_dict().items():
        table.add_row(
            key.replace("_", " "), f"{value:.2f}" if isinstance(value, float) else str(value)
        )
    _console(ctx).print(table)


@app.command()
def report(
    ctx: typer.Context,
    text: Annotated[
        list[str],
        typer.Option(
            help="Text file, optionally labelled: LABEL=PATH (e.g. zh=heldout.txt). Repeatable."
        ),
    ],
    old: Annotated[Path, typer.Option(help="The old tokenizer dir.")],
    new: Annotated[Path | None, typer.Option(help="The new tokenizer dir.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG bar chart here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the rows as JSON.")] = None,
    max_chars: Annotated[int | None, typer.Option(help="Read at most this much per label.")] = None,
) -> None:
    """Tokens per character / per byte and mean length, old vs new tokenizer, per label."""
    from llamaforge_tokenizer.compression import PLOT_FORMATS, measure, plot_compression
    from llamaforge_tokenizer.outdir import check_output_file

    groups: dict[str, list[Path]] = {}
    for item in text:
        label, sep, path = item.partition("=")
        if not sep:
            label, path = Path(item).stem, item
        groups.setdefault(label, []).append(Path(path))
    inputs = [p for paths in groups.values() for p in paths]
    if plot is not None:
        if not plot.suffix:
            plot = plot.with_suffix(".png")
        if plot.suffix.lower().lstrip(".") not in PLOT_FORMATS:
            raise TokenizerExpandError(
                f"--plot {plot}: unknown image format {plot.suffix!r}; use one of "
                f"{', '.join('.' + f for f in PLOT_FORMATS)}"
            )
        check_output_file(plot, inputs=inputs)
    if json_out is not None:
        check_output_file(json_out, inputs=inputs)
    tokenizers = {"old": old, **({"new": new} if new else {})}
    rows = measure(tokenizers, groups, max_chars)
    table = Table(title="tokenizer compression")
    for col in (
        "label",
        "tokenizer",
        "docs",
        "chars",
        "tokens",
        "tokens/char",
        "tokens/byte",
        "mean tokens",
        "vs old",
    ):
        table.add_column(col, justify="right" if col not in {"label", "tokenizer"} else "left")
    base = {r.label: r.tokens for r in rows if r.tokenizer == "old"}
    for r in rows:
        delta = "" if r.tokenizer == "old" else f"{r.tokens / base[r.label] - 1:+.1%}"
        table.add_row(
            r.label,
            r.tokenizer,
            f"{r.documents:,}",
            f"{r.characters:,}",
            f"{r.tokens:,}",
            f"{r.tokens_per_char:.3f}",
            f"{r.tokens_per_byte:.3f}",
            f"{r.mean_tokens:.1f}",
            delta,
        )
    console = _console(ctx)
    console.print(table)
    if plot:
        console.print(f"plot → {plot_compression(rows, plot)}")
    if json_out:
        json_out.write_text(json.dumps([r.to_dict() for r in rows], indent=2))


def _progress(console: Console) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
