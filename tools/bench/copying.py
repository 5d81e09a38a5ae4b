#!/usr/bin/env python3
"""Probe: can a model copy? Bits per character on a document's second copy, models side by side.

A model that reads a text a second time should find it almost free: induction heads match the
current token with an earlier occurrence and copy what followed. Held-out documents are each
written twice in a row (no separator) and scored as one text after the start token, as eval
scores text; the bits of the tokens that end in the first copy and in the second are summed
apart, per character. The base model copies its own tokens almost for free; an expanded model
whose new rows come from an initialisation may not — that gap is what continual training has
to close, and it is where an expanded model loses on running text.

    python tools/bench/copying.py MODEL_DIR [MODEL_DIR ...] [--text FILE] [--docs 30]
    python tools/bench/copying.py asset:smollm2-135m out/demo/init-model/model \\
        out/demo/train/run/export out/demo/train-control/run/export
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import asset_path, cpu_name, read_docs


def copy_bits(model_dir: Path, docs: list[str], dtype: str) -> tuple[float, float]:
    """Bits per character of ``model_dir`` on the first and on the second copy of each doc."""
    from llamaforge_eval import load_model
    from llamaforge_eval.attribution import score_tokens

    model, tok = load_model(model_dir, device="cpu", dtype=dtype)
    first = second = 0.0
    for doc, scored in zip(docs, score_tokens(model, tok, [d + d for d in docs]), strict=True):
        for end, bits in zip(scored.ends, scored.bits, strict=True):
            if end <= len(doc):
                first += bits
            else:
                second += bits
    chars = sum(len(d) for d in docs)
    return first / chars, second / chars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model dirs (or asset:NAME)")
    parser.add_argument(
        "--text", help="held-out text, one document per line (default: People's Daily)"
    )
    parser.add_argument("--docs", type=int, default=30)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    import torch

    text = Path(args.text) if args.text else asset_path("asset:people-daily") / "heldout.txt"
    docs = [doc for doc in read_docs(text) if 60 <= len(doc) <= 160][: args.docs]
    if not docs:
        raise SystemExit(f"{text}: no document of 60 to 160 characters")
    print(
        f"{cpu_name()}, {torch.get_num_threads()} threads, {args.dtype}, {len(docs)} documents "
        f"of 60–160 characters from {text.name}, each written twice"
    )
    print(f"{'model':<60}{'1st copy':>10}{'2nd copy':>10}{'2nd/1st':>9}")
    for name in args.models:
        one, two = copy_bits(asset_path(name), docs, args.dtype)
        print(f"{name[-60:]:<60}{one:>10.3f}{two:>10.3f}{two / one:>9.3f}")


if __name__ == "__main__":
    main()
