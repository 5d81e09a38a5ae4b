"""`llamaforge eval ...`: run benchmarks and text metrics, compare two result files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llamaforge_eval.errors import EvalError

app = typer.Typer(
    help="Benchmarks, compression and bits per character.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def main(argv: list[str] | None = None) -> int:
    """``python -m llamaforge_eval``: this package\'s commands alone; a user error is one red
    line on stderr and exit code 2, never a traceback."""
    try:
        app(args=argv, prog_name="python -m llamaforge_eval")
    except SystemExit as exc:  # typer ends every run this way, with the exit code
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except EvalError as exc:
        from rich.text import Text

        Console(stderr=True).print(Text("error: ", style="red") + Text(str(exc)), soft_wrap=True)
        return 2
    return 0


def _console(ctx: typer.Context) -> Console:
    return ctx.obj if isinstance(ctx.obj, Console) else Console()


def _pairs(items: list[str] | None, what: str) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise EvalError(f"--{what} {item!r}: expected NAME=PATH")
        out.setdefault(key, []).append(Path(value))
    return out


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise EvalError(f"--batch-size must be a number or auto, got {text!r}") from None


@app.command()
def run(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="HF model dir (with its tokenizer).")],
    bench: Annotated[
        list[str] | None,
        typer.Option(
            help="KIND=DIR: mmlu, cmmlu, ceval, agieval, gaokao or gsm8k in its official layout."
        ),
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option(help="LABEL=FILE: held-out text for tokens/char and bits/char."),
    ] = None,
    shots: Annotated[int, typer.Option(help="Few-shot examples (trimmed to fit).")] = 5,
    metric: Annotated[
        str, typer.Option(help="first-token, loglik or agieval-combined.")
    ] = "first-token",
    subjects: Annotated[list[str] | None, typer.Option(help="Only these subjects.")] = None,
    batch_size: Annotated[
        str, typer.Option(help="Questions per forward pass, or auto (what fits the memory).")
    ] = "8",
    nproc: Annotated[int, typer.Option(help="Worker processes (one model each).")] = 1,
    device: Annotated[
        str, typer.Option(help="auto (the GPU when there is one), cpu, cuda or cuda:N.")
    ] = "auto",
    dtype: Annotated[
        str,
        typer.Option(
            help="auto (the checkpoint's bf16 / fp16 where the device computes it natively, "
            "else float32), float32, bfloat16 or float16."
        ),
    ] = "auto",
    max_docs: Annotated[
        int | None, typer.Option(help="Score only the first N documents of each --text label.")
    ] = None,
    backend: Annotated[
        str, typer.Option(help="transformers (default) or vllm (needs vLLM; see README).")
    ] = "transformers",
    vllm_arg: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE for vLLM's engine (repeatable), e.g. max_model_len=4096."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results JSON.")] = None,
) -> None:
    """Evaluate MODEL on benchmarks and held-out text."""
    from llamaforge_eval.evaluate import evaluate_model
    from llamaforge_eval.results import check_results_path, write_results

    if out is not None:
        check_results_path(out)  # before the evaluation, not after it
    vllm_args = None
    if backend == "vllm":
        from llamaforge_eval.vllm_runner import parse_vllm_args

        vllm_args = parse_vllm_args(vllm_arg)
    console = _console(ctx)
    with console.status("evaluating") as status:
        results = evaluate_model(
            model,
            benchmarks={kind: dirs[0] for kind, dirs in _pairs(bench, "bench").items()},
            texts=_pairs(text, "text"),
            shots=shots,
            metric=metric,
            subjects=subjects,
            batch_size=_batch_size(batch_size),
            nproc=nproc,
            device=device,
            dtype=dtype,
            max_docs=max_docs,
            backend=backend,
            vllm_args=vllm_args,
            on_status=status.update,
        )
    print_results(console, results)
    if out:
        write_results(out, results)
        console.print(f"results → {out}")


def print_results(console: Console, results: dict) -> None:
    console.print(f"{results['model']} on {results['device']} in {results['dtype']}")
    if results["benchmarks"]:
        table = Table(title=f"benchmarks — {results['model']}")
        for col in ("benchmark", "subject", "metric", "shots", "n", "skipped", "accuracy"):
            table.add_column(
                col, justify="left" if col in ("benchmark", "subject", "metric") else "right"
            )
        for name, b in results["benchmarks"].items():
            for subj, s in b["subjects"].items():
                table.add_row(
                    name,
                    subj,
                    b["metric"],
                    str(s["shots"]),
                    str(s["n"]),
                    str(s["skipped"]),
                    f"{s['accuracy']:.1%}",
                )
            table.add_row(
                f"[bold]{name}[/]",
                "(all)",
                b["metric"],
                "",
                str(b["questions"]),
                str(b["skipped"]),
                f"[bold]{b['accuracy']:.1%}[/]",
            )
        console.print(table)
    if results["text"]:
        table = Table(title="held-out text")
        for col in ("text", "documents", "characters", "tokens/char", "bits/char"):
            table.add_column(col, justify="left" if col == "text" else "right")
        for label, t in results["text"].items():
            table.add_row(
                label,
                f"{t['documents']:,}",
                f"{t['characters']:,}",
                f"{t['tokens_per_char']:.3f}",
                f"{t['bits_per_char']:.3f}",
            )
        console.print(table)


@app.command("where")
def where_cmd(
    ctx: typer.Context,
    reference: Annotated[Path, typer.Argument(help="The model compared against (HF dir).")],
    model: Annotated[Path, typer.Argument(help="The expanded model (HF dir).")],
    text: Annotated[Path, typer.Option(help="Held-out text, one document per line.")],
    max_docs: Annotated[int | None, typer.Option(help="Score only the first N documents.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results JSON.")] = None,
) -> None:
    """Where MODEL (expanded) wins and loses bits against REFERENCE on the same text: bits per
    character by the kind of MODEL's token — old token, new piece of 1, 2, 3+ characters."""
    from llamaforge_eval.attribution import first_new_id, total_row, where_bits
    from llamaforge_eval.evaluate import read_documents
    from llamaforge_eval.results import check_results_path, write_json

    if max_docs is not None and max_docs < 1:
        raise EvalError(f"--max-docs must be ≥ 1, got {max_docs}")
    if out is not None:
        check_results_path(out)
    for path in (reference, model):
        if not (path / "config.json").is_file():
            raise EvalError(f"{path}: not an HF model dir (no config.json)")
    first_new_id(model)  # an unexpanded MODEL fails before anything loads
    docs = read_documents("text", [text], max_docs)
    console = _console(ctx)
    with console.status("scoring both models"):
        rows = where_bits(reference, model, docs, device=device, dtype=dtype)
    total = total_row(rows)
    table = Table(title=f"bits per character — {model} against {reference}")
    columns = ("token kind", "tokens", "characters", "model", "reference", "difference", "bits")
    for col in columns:
        table.add_column(col, justify="left" if col == "token kind" else "right")
    for row in [*rows, total]:
        table.add_row(
            row.kind,
            f"{row.tokens:,}",
            f"{row.characters:,}",
            f"{row.model_bits_per_char:.3f}",
            f"{row.reference_bits_per_char:.3f}",
            f"{row.model_bits_per_char - row.reference_bits_per_char:+.3f}",
            f"{row.model_bits - row.reference_bits:+,.0f}",
            end_section=row is rows[-1],
        )
    console.print(table)
    console.print(
        "model, reference: bits per character on the characters of that kind; bits: the "
        "model's total minus the reference's (where the difference comes from)"
    )
    if out:
        write_json(
            out,
            {
                "reference": str(reference),
                "model": str(model),
                "text": str(text),
                "documents": len(docs),
                "kinds": [r.to_dict() for r in rows],
                "all": total.to_dict(),
            },
        )
        console.print(f"results → {out}")


@app.command("compare")
def compare_cmd(ctx: typer.Context, before: Path, after: Path) -> None:
    """Before / after table: the change per benchmark, subject and text metric."""
    from llamaforge_eval.results import compare, read_results

    a, b = read_results(before), read_results(after)
    table = Table(title=f"{before.name} → {after.name}")
    for col in ("benchmark", "subject / metric", "before", "after", "delta"):
        table.add_column(
            col, justify="left" if col in ("benchmark", "subject / metric") else "right"
        )
    for bench_name, subject, va, vb in compare(a, b):
        is_acc = not bench_name.startswith("text:")
        fmt = (lambda v: f"{v:.1%}") if is_acc else (lambda v: f"{v:.3f}")
        delta = (
            ""
            if va is None or vb is None
            else (f"{(vb - va) * 100:+.1f} pt" if is_acc else f"{vb - va:+.3f}")
        )
        table.add_row(
            bench_name,
            subject,
            "—" if va is None else fmt(va),
            "—" if vb is None else fmt(vb),
            delta,
        )
    _console(ctx).print(table)
