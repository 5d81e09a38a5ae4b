#!/usr/bin/env python3
"""Benchmark: how good is each initialisation of the new rows, before any training?

Judged by what the issue asks first: how close the *untrained* expanded model's bits per
character on held-out text come to the base model's (lower is better; the base model is the
reference the expanded model starts from). Every variant is the same expanded tokenizer and the
same model; only the new rows differ:

- ``mean`` / ``noisy-mean`` — what ``llamaforge vocab init-model`` ships (``init_model``);
- ``out-first`` — input rows the mean, output rows the *first* sub-token's output row (EEVE's
  output initialisation: predicting the piece starts with predicting its first token);
- ``in-last`` — input rows the *last* sub-token's row (what a byte-level model has just read),
  output rows the mean;
- ``scaled-0.9`` — the mean rows × 0.9 (averaging shrinks norms; this shrinks them further);
- ``norm-matched`` — the mean rows rescaled to the old rows' average norm;
- ``freq-out`` — what ``init_model`` ships (``llamaforge_tokenizer.freq_out``): output rows the
  mean, moved along the average final hidden state so that each new piece's average logit
  matches its log-frequency in the training text the way the old tokens' do, and the old rows
  the new pieces take text from lowered by how much their count fell (an output-aware
  initialisation: the mean of its spelling's rows says nothing about how often the piece
  occurs, and its logit starts as if it were as likely as a byte).

Variants that change only one side untie tied embeddings (SmolLM2 ties them). Held-out text,
documents and device are the same for every variant; the table prints bits per character and
the change against the base model.

    python tools/bench/init_quality.py --tokenizer out/demo/expand-vocab/tokenizer \
        [--model asset:smollm2-135m] [--text zh=asset:people-daily/heldout.txt] [--docs 30]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

from common import asset_path

VARIANTS = ("out-first", "in-last", "scaled-0.9", "norm-matched")


def _variant(model, name: str, subs: list[list[int]], first_new: int) -> None:
    """Rewrite the new rows of a mean-initialised ``model`` in place for variant ``name``."""
    import torch

    emb = model.get_input_embeddings().weight
    if name in ("out-first", "in-last"):
        head = torch.nn.Parameter(emb.detach().clone())  # untie: the two sides now differ
        model.get_output_embeddings().weight = head
        model.config.tie_word_embeddings = False
    out = model.get_output_embeddings().weight
    with torch.no_grad():
        for k, ids in enumerate(subs):
            row = first_new + k
            ids = [i for i in ids if i < first_new]
            if not ids:
                continue
            if name == "out-first":
                out[row] = out[ids[0]]
            elif name == "in-last":
                emb[row] = emb[ids[-1]]
        if name == "scaled-0.9":
            emb[first_new:] *= 0.9
        elif name == "norm-matched":
            target = emb[:first_new].float().norm(dim=1).mean()
            norms = emb[first_new:].float().norm(dim=1, keepdim=True).clamp(min=1e-6)
            emb[first_new:] = (emb[first_new:].float() * (target / norms)).to(emb.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="asset:smollm2-135m")
    ap.add_argument("--tokenizer", required=True, help="an expanded tokenizer dir")
    ap.add_argument("--text", default="zh=asset:people-daily/heldout.txt")
    ap.add_argument("--only", nargs="*", help="just these variants (default: all)")
    ap.add_argument("--docs", type=int, default=30)
    ap.add_argument(
        "--train-text", default="asset:people-daily/train.txt", help="for freq-out's counts"
    )
    args = ap.parse_args()

    import torch

    from llamaforge_eval import Runner, evaluate_text, load_model
    from llamaforge_tokenizer import init_model
    from llamaforge_tokenizer.embeddings import InitConfig
    from llamaforge_tokenizer.subtokens import old_vocab_size, subtoken_ids

    torch.manual_seed(0)
    base, tok_dir = asset_path(args.model), asset_path(args.tokenizer)
    label, _, text = args.text.partition("=")
    files = {label: [asset_path(text)]}
    first_new = old_vocab_size(base)
    subs, _ = subtoken_ids(base, tok_dir, first_new)

    def bpc(model_dir: Path, variant: str | None = None) -> float:
        model, tok = load_model(model_dir, device="cpu", dtype="float32")
        if variant:
            _variant(model, variant, subs, first_new)
        res = evaluate_text(Runner(model, tok), files, max_docs=args.docs)[label]
        return res["bits_per_char"], res["tokens_per_char"]

    def wanted(name: str) -> bool:
        return not args.only or name in args.only

    rows = [("base (not expanded)", *bpc(base))]
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("mean", "noisy-mean", "freq-out"):
            if method != "mean" and not wanted(method):
                continue
            corpus = [asset_path(args.train_text)] if method == "freq-out" else []
            out = Path(tmp) / method
            init_model(base, tok_dir, out, InitConfig(method=method, corpus=corpus))
            if wanted(method):
                rows.append((method, *bpc(out)))
        mean_dir = Path(tmp) / "mean"
        for variant in VARIANTS:
            if wanted(variant):
                rows.append((variant, *bpc(mean_dir, variant)))

    ref = rows[0][1]
    print(f"{platform.processor() or platform.machine()}; {args.docs} held-out documents of {text}")
    print(f"{'initialisation':<22} {'tokens/char':>11} {'bits/char':>10} {'vs base':>9}")
    for name, b, t in rows:
        print(f"{name:<22} {t:>11.3f} {b:>10.3f} {100 * (b / ref - 1):>+8.1f}%")


if __name__ == "__main__":
    main()
