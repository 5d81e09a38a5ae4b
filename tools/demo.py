#!/usr/bin/env python3
"""The llamaforge demo: run every stage that exists, end to end, on the real assets.

Until the pipeline recipe lands (issue 8), this is a fixed sequence of `llamaforge` commands:
fetch and verify the assets, check the machine, then the stages in order. Each step prints its
own output; the script stops at the first failing step with its exit code.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from llamaforge_cli.main import main as llamaforge

ROOT = Path(__file__).resolve().parent.parent


def _chat_smoke(console: Console) -> int:
    """Ask the converted SmolLM2 the France question (the model every later stage starts from)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llamaforge_cli.assets import ensure_asset

    folder = ensure_asset("smollm2-135m")
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "out" / "demo",
        help="where stage outputs go (default: out/demo)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console()
    steps = [
        ("fetch assets", lambda: llamaforge(["assets", "fetch"])),
        ("doctor", lambda: llamaforge(["doctor"])),
        ("base model chat", lambda: _chat_smoke(console)),
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
