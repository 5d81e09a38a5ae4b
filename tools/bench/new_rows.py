#!/usr/bin/env python3
"""Probe: how often does training show each new row of an expanded vocabulary?

A new embedding row learns only from the steps whose rows contain its piece. This reads a packed
dataset in the order the trainer reads it (one process: rows in bucket order, no shuffle) and,
for the first N rows of each budget, counts the different new pieces those rows contain and how
many of them occur only once; then it tokenises held-out documents with the expanded tokenizer
and says which share of their new-piece tokens training never showed, or showed at most twice.

    python tools/bench/new_rows.py PACKED_DIR EXPANDED_MODEL_DIR [--rows 160 640]
        [--text FILE] [--first-doc 1] [--docs 200]
    python tools/bench/new_rows.py out/demo/pack-data/mix out/demo/init-model/model \\
        --rows 160 320 640 --first-doc 361 --docs 200

EXPANDED_MODEL_DIR is a model written by `llamaforge vocab init-model` (its `expansion.json`
says where the new rows start; its tokenizer is the expanded one). With micro-batch 4 and one
process, N rows are N / 4 steps.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from common import asset_path


def read_lines(path: Path, first: int, count: int) -> list[str]:
    """Non-empty lines ``first``… (1-based line numbers of the file), at most ``count``."""
    docs = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if number >= first and line.strip():
                docs.append(line.rstrip("\n"))
                if len(docs) == count:
                    break
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packed", help="packed dataset dir (llamaforge data pack)")
    parser.add_argument("model", help="expanded model dir with expansion.json and its tokenizer")
    parser.add_argument("--rows", type=int, nargs="+", default=[160, 640])
    parser.add_argument("--text", default="asset:people-daily/heldout.txt")
    parser.add_argument("--first-doc", type=int, default=1, help="first line of --text read")
    parser.add_argument("--docs", type=int, default=200)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from llamaforge_datapack import load_packed

    model = Path(args.model)
    try:
        first_new = json.loads((model / "expansion.json").read_text())["first_new"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        msg = f"{model}/expansion.json: cannot read where the new rows start ({exc})"
        raise SystemExit(msg) from None
    data, _ = load_packed([args.packed])
    text = asset_path(args.text)
    docs = read_lines(text, args.first_doc, args.docs)
    if not docs:
        raise SystemExit(f"{text}: no document from line {args.first_doc} on")
    tok = AutoTokenizer.from_pretrained(model)
    held = Counter()
    held_tokens = 0
    for doc in docs:
        ids = tok(doc, add_special_tokens=False).input_ids
        held_tokens += len(ids)
        held.update(i for i in ids if i >= first_new)
    held_new = sum(held.values())
    print(
        f"{len(data):,} packed rows; {len(docs)} held-out documents from line {args.first_doc} "
        f"of {text.name}: {held_tokens:,} tokens, {held_new:,} of them new pieces "
        f"({held_new / max(held_tokens, 1):.1%})"
    )
    print(
        f"{'rows':>6}{'tokens':>10}{'new pieces seen':>17}{'seen once':>11}"
        f"{'held-out new: unseen':>22}{'seen ≤ 2×':>11}"
    )
    budgets = sorted(set(args.rows))
    seen = Counter()
    tokens = 0
    read = 0  # rows counted so far: each budget extends the previous one's counts
    for rows in budgets:
        if rows > len(data):
            print(f"{rows:>6}  more than the dataset's {len(data):,} rows (an epoch repeats)")
            continue
        for ids in data.select(range(read, rows))["input_ids"]:
            tokens += len(ids)
            seen.update(i for i in ids if i >= first_new)
        read = rows
        once = sum(1 for n in seen.values() if n == 1)
        unseen = sum(n for i, n in held.items() if seen[i] == 0)
        rare = sum(n for i, n in held.items() if seen[i] <= 2)
        print(
            f"{rows:>6}{tokens:>10,}{len(seen):>17,}{once:>11,}"
            f"{unseen / max(held_new, 1):>22.1%}{rare / max(held_new, 1):>11.1%}"
        )


if __name__ == "__main__":
    main()
