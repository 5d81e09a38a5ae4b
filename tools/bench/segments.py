#!/usr/bin/env python3
"""Probe: how much probability goes to other spellings of the same text?

Bits per character score the tokenizer's own (canonical) segmentation. At each position of a
held-out document, other tokens also spell a prefix of what follows — after an expansion the
single-character piece 时 where the text continues 时期, or a lone first byte of a character
for a byte-level model — and the probability they get is lost to the score. For each model
this prints its bits per character, what they would be if every token that spells a prefix of
the remaining text had given its probability to the canonical token (a bound: the model would
also have to prefer the canonical spelling), and the share of positions where such another
token is likelier than the canonical one. Documents are scored after the start token, as eval
scores text. Byte-level BPE tokenizers only (GPT-2 byte alphabet: SmolLM2, LLaMA-3, Qwen).

    python tools/bench/segments.py MODEL_DIR [MODEL_DIR ...] [--text FILE] [--docs 30]
    python tools/bench/segments.py asset:smollm2-135m out/demo/init-model/model \\
        out/demo/train/run/export out/demo/train-control/run/export
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from common import asset_path, cpu_name, read_docs


@dataclass
class Spellings:
    """Bits of one model on some documents, canonical and with every spelling's mass pooled."""

    characters: int = 0
    tokens: int = 0
    skipped: int = 0  # documents longer than the model's context
    canonical_bits: float = 0.0
    pooled_bits: float = 0.0
    other_likelier: int = 0


def token_bytes(tok) -> dict[int, bytes]:
    """Each token's bytes: a vocabulary entry's in the GPT-2 byte alphabet, an added or special
    token's its text (what the tokenizer matches it on: ``<|im_end|>`` written in a document
    becomes that token, as eval tokenizes text)."""
    from llamaforge_tokenizer.bpe import byte_to_unicode

    byte_of = {ch: b for b, ch in byte_to_unicode().items()}
    added = {tid: t.content for tid, t in tok.added_tokens_decoder.items()}
    out = {}
    for piece, tid in tok.get_vocab().items():
        if tid in added:
            out[tid] = added[tid].encode("utf-8")
            continue
        try:
            out[tid] = bytes(byte_of[ch] for ch in piece)
        except KeyError:
            raise SystemExit(
                f"error: token {piece!r} is not in the GPT-2 byte alphabet: this probe reads "
                "byte-level BPE tokenizers only"
            ) from None
    return out


def prefix_trie(spelled: dict[int, bytes]) -> dict:
    """A byte trie of the tokens; a node's ``None`` key lists the tokens that end there."""
    root: dict = {}
    for tid, raw in spelled.items():
        node = root
        for b in raw:
            node = node.setdefault(b, {})
        node.setdefault(None, []).append(tid)
    return root


def spellers(trie: dict, text: bytes, at: int) -> list[int]:
    """The tokens whose bytes are a prefix of ``text[at:]``."""
    found, node = [], trie
    for b in text[at:]:
        node = node.get(b)
        if node is None:
            break
        found += node.get(None, [])
    return found


def measure(model_dir: Path, docs: list[str]) -> Spellings:
    """Score ``docs`` with ``model_dir`` (float32, one document at a time)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llamaforge_eval.windows import with_start

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    spelled = token_bytes(tok)
    trie = prefix_trie(spelled)
    context = model.config.max_position_embeddings
    out = Spellings()
    for doc in docs:
        ids = tok(doc, add_special_tokens=False).input_ids
        full, front = with_start(tok, ids)
        if len(full) > context:
            out.skipped += 1  # the probe reads a document in one window
            continue
        if len(full) < 2:
            continue  # one token and no start token: nothing to score
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
        # without a start token the first token cannot be scored: its bytes are skipped
        text = doc.encode("utf-8")
        at = 0 if front else len(spelled[full[0]])
        for pos in range(1, len(full)):
            tid, row = full[pos], logp[pos - 1]
            valid = spellers(trie, text, at)
            p_canonical = float(row[tid].exp())
            probs = row[valid].exp()
            out.canonical_bits -= math.log2(max(p_canonical, 1e-300))
            out.pooled_bits -= math.log2(max(float(probs.sum()), p_canonical, 1e-300))
            out.other_likelier += int(float(probs.max()) > p_canonical)
            at += len(spelled[tid])
        out.characters += len(doc)
        out.tokens += len(full) - 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model dirs (or asset:NAME)")
    parser.add_argument(
        "--text", default="asset:people-daily/heldout.txt", help="documents, one per line"
    )
    parser.add_argument("--docs", type=int, default=30)
    args = parser.parse_args()
    text = asset_path(args.text)
    try:
        docs = read_docs(text, args.docs)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: {text}: {exc}", file=sys.stderr)
        return 2
    if not docs:
        print(f"error: {text}: no documents", file=sys.stderr)
        return 2
    dirs = [asset_path(model) for model in args.models]
    for model, path in zip(args.models, dirs, strict=True):
        if not (path / "config.json").is_file():
            print(f"error: {model}: not a model dir (no config.json)", file=sys.stderr)
            return 2
    print(f"{cpu_name()}, float32, the first {len(docs)} documents of {text.name}")
    print(
        f"{'model':<52} {'tokens/char':>11} {'bits/char':>9} {'pooled':>8} {'other likelier':>14}"
    )
    for model, path in zip(args.models, dirs, strict=True):
        r = measure(path, docs)
        print(
            f"{model:<52} {r.tokens / r.characters:>11.3f} {r.canonical_bits / r.characters:>9.3f}"
            f" {r.pooled_bits / r.characters:>8.3f} {r.other_likelier / r.tokens:>14.1%}"
        )
        if r.skipped:
            print(f"  {model}: {r.skipped} documents longer than its context left out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
