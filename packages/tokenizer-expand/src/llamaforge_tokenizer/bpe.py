"""Expand a byte-level BPE tokenizer (HF ``tokenizer.json``: LLaMA-3, SmolLM2, GPT-2 family).

New tokens become real vocabulary entries plus the merges that build them, appended after every
existing merge — not "added tokens" that bypass the model and ignore context. Since the new merges
rank last, text that none of them applies to encodes exactly as before, and every old id keeps
its meaning. A piece is built from the tokens the current tokenizer splits it into, merged left
to right; the partial merges become vocabulary entries too (counted as intermediates).
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

from llamaforge_tokenizer.errors import TokenizerExpandError
from llamaforge_tokenizer.outdir import atomic_output_dir
from llamaforge_tokenizer.report_types import ExpandReport

RESERVED = "<|reserved_{}|>"


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map used by byte-level BPE."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def to_byte_level(text: str) -> str:
    """``text`` in the byte-level alphabet (what vocabulary entries look like)."""
    table = byte_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


def load_bpe_json(tokenizer_dir: Path) -> dict:
    """Read and check ``tokenizer.json`` of a byte-level BPE tokenizer."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        raise TokenizerExpandError(f"{tokenizer_dir}: no tokenizer.json (not an HF fast tokenizer)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        raise TokenizerExpandError(f"{path}: corrupt tokenizer.json ({exc})") from None
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(data.get("pre_tokenizer")):
        raise TokenizerExpandError(f"{path}: not a byte-level BPE tokenizer")
    return data


def expand_bpe(
    tokenizer_dir: Path,
    pieces: list[str],
    out_dir: Path,
    *,
    pad_to: int = 64,
    overwrite: bool = False,
    duplicates: int = 0,
) -> ExpandReport:
    """Append ``pieces`` (plain text) as vocabulary entries + merges; write an HF tokenizer dir."""
    from tokenizers import Tokenizer

    if pad_to < 1:
        raise TokenizerExpandError(f"pad_to must be at least 1, got {pad_to}")
    tokenizer_dir = Path(tokenizer_dir)
    data = load_bpe_json(tokenizer_dir)
    vocab: dict[str, int] = data["model"]["vocab"]
    merges = data["model"]["merges"]
    as_lists = bool(merges) and isinstance(merges[0], list)
    added_tokens = data.get("added_tokens", [])
    next_id = max([*vocab.values(), *(t["id"] for t in added_tokens)]) + 1
    report = ExpandReport(kind="bpe", old_size=next_id, new_size=0, duplicates=duplicates)
    base = Tokenizer.from_str(json.dumps(data))
    pre = base.pre_tokenizer

    new_merges: list[tuple[str, str]] = []
    new_rank: dict[tuple[str, str], int] = {}
    for text in pieces:
        parts = pre.pre_tokenize_str(text) if pre is not None else [(text, None)]
        if len(parts) != 1:
            report.unusable += 1
            if len(report.examples_unusable) < 10:
                report.examples_unusable.append(text)
            continue
        target = parts[0][0]
        if target in vocab:
            report.already_present += 1
            continue
        tokens = apply_merges([t.value for t in base.model.tokenize(target)], new_rank)
        # Merge left to right: ((t0 t1) t2) ...; each partial result is an entry.
        left = tokens[0]
        for right in tokens[1:]:
            joined = left + right
            if (left, right) not in new_rank:
                new_rank[(left, right)] = len(new_merges)
                new_merges.append((left, right))
            if joined not in vocab:
                vocab[joined] = next_id
                next_id += 1
                if joined != target:
                    report.intermediates += 1
            left = joined
        report.added += 1
    k = 0
    reserved = []
    while next_id % pad_to:
        name = RESERVED.format(k)
        k += 1
        if name in vocab:
            continue
        reserved.append(
            {
                "id": next_id,
                "content": name,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
        next_id += 1
    report.reserved = len(reserved)
    report.new_size = next_id
    data["model"]["vocab"] = vocab
    data["model"]["merges"] = merges + [list(m) if as_lists else " ".join(m) for m in new_merges]
    data["added_tokens"] = added_tokens + reserved
    with atomic_output_dir(
        Path(out_dir), overwrite=overwrite, inputs=[tokenizer_dir], kind="tokenizer"
    ) as tmp:
        _write_dir(tokenizer_dir, data, reserved, tmp)
    return report


def apply_merges(tokens: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges ``ranks`` (lower first) to ``tokens`` until none applies.

    The new merges all rank after the old ones and no old merge involves a new token, so
    "old model first, then these" is exactly what the expanded tokenizer does.
    """
    tokens = list(tokens)
    while len(tokens) > 1:
        best, where = None, -1
        for i in range(len(tokens) - 1):
            rank = ranks.get((tokens[i], tokens[i + 1]))
            if rank is not None and (best is None or rank < best):
                best, where = rank, i
        if best is None:
            break
        tokens[where : where + 2] = [tokens[where] + tokens[where + 1]]
    return tokens


def _write_dir(src: Path, data: dict, reserved: list[dict], out: Path) -> None:
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    for name in ("special_tokens_map.json", "generation_config.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    config = {}
    if (src / "tokenizer_config.json").is_file():
        config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    decoder = config.setdefault("added_tokens_decoder", {})
    for tok in reserved:
        decoder[str(tok["id"])] = {k: v for k, v in tok.items() if k != "id"}
    (out / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8"
    )
