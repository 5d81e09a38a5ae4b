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
    python tools/bench/new_rows.py out/demo/pack-data/mix out/demo/init-model/model \\
        --rows 160 --first-doc 361 --score out/demo/train/run/export \\
        --control out/demo/train-control/run/export

With ``--score TRAINED`` it also scores the held-out documents (as ``llamaforge eval run``
does: after the start token, fp32 on CPU) with the untrained expanded model and with TRAINED,
and splits the bits by how often the first budget's rows showed each target token: what
training bought on the pieces it saw often, once, or never. ``--control CONTROL`` adds the
control arm's bits on the same characters (its tokens that end inside each token's span), so
the table says where the gap between the arms lies.

EXPANDED_MODEL_DIR is a model written by `llamaforge vocab init-model` (its `expansion.json`
says where the new rows start; its tokenizer is the expanded one). With micro-batch 4 and one
process, N rows are N / 4 steps.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from common import asset_path, read_docs

SHOWN = ((0, "never"), (1, "once"), (4, "2–4×"), (19, "5–19×"), (None, "20× or more"))


def shown_label(count: int) -> str:
    """The row of the ``--score`` table for a token the training rows showed ``count`` times."""
    return next(label for most, label in SHOWN if most is None or count <= most)


def score(model_dir: Path, docs: list[str]) -> list:
    """Each document's tokens and the bits ``model_dir`` spends on each, as eval scores them."""
    from llamaforge_eval import load_model
    from llamaforge_eval.attribution import score_tokens

    model, tok = load_model(model_dir, device="cpu", dtype="float32")
    return score_tokens(model, tok, docs)


def by_shown(docs: list, seen: Counter, first_new: int, columns: list[list[list[float]]]) -> dict:
    """(new or old, how often shown) → [tokens, then one sum per column]; ``columns[c][d][t]``
    is column c's bits for token t of document d."""
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0] * (1 + len(columns)))
    for d, doc in enumerate(docs):
        for t, token in enumerate(doc.ids):
            row = totals["new" if token >= first_new else "old", shown_label(seen[token])]
            row[0] += 1
            for c, column in enumerate(columns, start=1):
                row[c] += column[d][t]
    return totals


def print_scores(totals: dict, chars: int, rows: int, control: bool) -> None:
    print(
        f"\nheld-out bits by how often the first {rows} rows showed the target token: "
        "per token and per character of all the text, untrained → trained"
        + (", and the control on the same characters" if control else "")
    )
    head = f"{'token':<6}{'shown':<13}{'tokens':>8}{'bits/token':>20}{'bits/char':>20}"
    print(head + (f"{'control':>9}{'trained − control':>19}" if control else ""))
    for kind in ("new", "old"):
        for _, label in SHOWN:
            if (kind, label) in totals:
                print_row(f"{kind:<6}{label:<13}", totals[kind, label], chars, control)
    total = [sum(row[c] for row in totals.values()) for c in range(4 if control else 3)]
    print_row(f"{'all':<19}", total, chars, control)


def print_row(name: str, row: list[float], chars: int, control: bool) -> None:
    n, untrained, trained = row[:3]
    line = f"{name}{n:>8,}{untrained / n:>9.2f} → {trained / n:>7.2f}"
    line += f"{untrained / chars:>11.3f} → {trained / chars:>6.3f}"
    if control:
        line += f"{row[3] / chars:>9.3f}{(trained - row[3]) / chars:>+19.3f}"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packed", help="packed dataset dir (llamaforge data pack)")
    parser.add_argument("model", help="expanded model dir with expansion.json and its tokenizer")
    parser.add_argument("--rows", type=int, nargs="+", default=[160, 640])
    parser.add_argument("--text", default="asset:people-daily/heldout.txt")
    parser.add_argument("--first-doc", type=int, default=1, help="first line of --text read")
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--score", metavar="TRAINED", help="a model trained from MODEL (above)")
    parser.add_argument(
        "--control", help="with --score: the control arm's model, scored on the same characters"
    )
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
    docs = read_docs(text, args.docs, first_line=args.first_doc)
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
    first_seen, first_rows = None, 0
    for rows in budgets:
        if rows > len(data):
            print(f"{rows:>6}  more than the dataset's {len(data):,} rows (an epoch repeats)")
            continue
        for ids in data.select(range(read, rows))["input_ids"]:
            tokens += len(ids)
            seen.update(ids)
        read = rows
        if first_seen is None:
            first_seen, first_rows = Counter(seen), rows
        new_seen = [n for i, n in seen.items() if i >= first_new]
        once = sum(1 for n in new_seen if n == 1)
        unseen = sum(n for i, n in held.items() if seen[i] == 0)
        rare = sum(n for i, n in held.items() if seen[i] <= 2)
        print(
            f"{rows:>6}{tokens:>10,}{len(new_seen):>17,}{once:>11,}"
            f"{unseen / max(held_new, 1):>22.1%}{rare / max(held_new, 1):>11.1%}"
        )
    if args.score and first_seen is not None:
        untrained, trained = score(model, docs), score(Path(args.score), docs)
        columns = [[d.bits for d in untrained], [d.bits for d in trained]]
        if args.control:
            control = score(Path(args.control), docs)
            from llamaforge_eval.attribution import carried_bits

            columns.append([carried_bits(c, e) for e, c in zip(trained, control, strict=True)])
        totals = by_shown(trained, first_seen, first_new, columns)
        print_scores(totals, sum(len(d) for d in docs), first_rows, bool(args.control))


if __name__ == "__main__":
    main()
