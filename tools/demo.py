#!/usr/bin/env python3
"""The llamaforge demo: run every stage that exists, end to end, on the real assets.

Until the pipeline recipe lands, this is a fixed sequence of `llamaforge` commands: fetch and
verify the assets, check the machine, then the stages that exist — learn Chinese pieces for
SmolLM2 from People's Daily and jieba's words, expand its tokenizer, initialise the new
embeddings, report compression on held-out Chinese and English text, and check that the expanded
model still answers in English, pack Chinese text with English replay into 512-token rows,
train a few steps of each stage (embeddings only, then the full model) and chat with the
result. Each step prints its own output; the script stops at the first
failing step with its exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from llamaforge_cli.assets import ensure_asset
from llamaforge_cli.main import main as llamaforge

ROOT = Path(__file__).resolve().parent.parent


def _chat_smoke(console: Console, folder: Path) -> int:
    """Ask a model the France question; English must survive every stage."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16)
    question = "What is the capital of France?"
    ids = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt"
    )
    out = model.generate(ids, max_new_tokens=32, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    console.print(f"[bold]Q:[/] {question}\n[bold]A:[/] {answer}")
    return 0 if "Paris" in answer else 1


def _recipe(out: Path) -> Path:
    """A short two-stage run that fits a CPU demo: embeddings only, then the full model."""
    import shutil

    shutil.rmtree(out / "run", ignore_errors=True)  # the demo always trains from its new model
    path = out / "train.toml"
    path.write_text(f"""
model = "{out / "model"}"
output_dir = "{out / "run"}"
save_interval = 10
[[stages]]
name = "embeddings"
data = ["{out / "packed"}"]
trainable = "embeddings"
steps = 6
lr = 2e-3
micro_batch_size = 2
[[stages]]
name = "full"
data = ["{out / "packed"}"]
steps = 6
lr = 5e-5
micro_batch_size = 2
""")
    return path


def asset_path(name: str):
    """A callable returning the asset's dir (fetched by the first step, not at plan time)."""
    return lambda: ensure_asset(name)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "out" / "demo",
        help="where stage outputs go (default: out/demo)",
    )
    parser.add_argument("--num-pieces", type=int, default=8000, help="pieces to learn")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "140")  # readable tables in logs, too
    console = Console()
    base = asset_path("smollm2-135m")
    zh, reviews = asset_path("people-daily"), asset_path("chinese-reviews")
    en1, en2 = asset_path("botchan"), asset_path("lee-news")
    steps = [
        ("fetch assets", lambda: llamaforge(["assets", "fetch"])),
        ("doctor", lambda: llamaforge(["doctor"])),
        ("base model chat", lambda: _chat_smoke(console, base())),
        (
            "learn Chinese pieces",
            lambda: llamaforge(
                [
                    "vocab",
                    "learn",
                    str(base()),
                    str(zh() / "train.txt"),
                    "-o",
                    str(out / "pieces.jsonl"),
                    "--num-pieces",
                    str(args.num_pieces),
                    "--word-list",
                    str(ensure_asset("jieba-dict") / "dict.txt"),
                ]
            ),
        ),
        (
            "expand tokenizer",
            lambda: llamaforge(
                [
                    "vocab",
                    "expand",
                    str(base()),
                    str(out / "pieces.jsonl"),
                    "-o",
                    str(out / "tokenizer"),
                    "--overwrite",
                ]
            ),
        ),
        (
            "initialise embeddings",
            lambda: llamaforge(
                [
                    "vocab",
                    "init-model",
                    str(base()),
                    str(out / "tokenizer"),
                    "-o",
                    str(out / "model"),
                    "--overwrite",
                ]
            ),
        ),
        (
            "compression report",
            lambda: llamaforge(
                [
                    "vocab",
                    "report",
                    "--old",
                    str(base()),
                    "--new",
                    str(out / "tokenizer"),
                    "--text",
                    f"zh-news={zh() / 'heldout.txt'}",
                    "--text",
                    f"zh-reviews={reviews() / 'heldout.txt'}",
                    "--text",
                    f"en={en1() / 'heldout.txt'}",
                    "--text",
                    f"en={en2() / 'heldout.txt'}",
                    "--plot",
                    str(out / "compression.png"),
                    "--json",
                    str(out / "compression.json"),
                ]
            ),
        ),
        ("expanded model chat", lambda: _chat_smoke(console, out / "model")),
        (
            "pack Chinese + English replay",
            lambda: llamaforge(
                [
                    "data",
                    "pack",
                    f"zh={zh() / 'train.txt'}",
                    f"en={en1() / 'train.txt'},{en2() / 'train.txt'}:1.0",
                    "-t",
                    str(out / "tokenizer"),
                    "-o",
                    str(out / "packed"),
                    "--max-length",
                    "512",
                    "--num-bins",
                    "4",
                    "--overwrite",
                ]
            ),
        ),
        ("train: embeddings, then full", lambda: llamaforge(["train", str(_recipe(out))])),
        ("trained model chat", lambda: _chat_smoke(console, out / "run" / "export")),
    ]
    timings = Table(title="llamaforge demo")
    timings.add_column("step")
    timings.add_column("result")
    timings.add_column("seconds", justify="right")
    for name, run in steps:
        console.rule(name)
        start = time.perf_counter()
        code = run()
        timings.add_row(
            name,
            "[green]ok[/]" if code == 0 else f"[red]exit {code}[/]",
            f"{time.perf_counter() - start:.1f}",
        )
        if code != 0:
            console.print(timings)
            return code
    console.print(timings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
