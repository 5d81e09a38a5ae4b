"""Shared fixtures: a real LLaMA-2 expansion learned from People's Daily and jieba's words."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaforge_tokenizer import LearnConfig, expand_tokenizer, learn_pieces
from llamaforge_tokenizer.pieces import write_pieces

# Enough text and pieces for the ≥ 40 % target, small enough for the fast tier (~10 s).
LEARN_CHARS = 800_000
NUM_PIECES = 8000


def _learn_and_expand(asset, base: Path, work: Path) -> dict:
    result = learn_pieces(
        base,
        [asset("people-daily") / "train.txt"],
        LearnConfig(
            num_pieces=NUM_PIECES,
            word_list=asset("jieba-dict") / "dict.txt",
            max_corpus_chars=LEARN_CHARS,
        ),
    )
    pieces = work / "pieces.jsonl"
    write_pieces(pieces, [c.to_dict() for c in result.candidates])
    report = expand_tokenizer(base, pieces, work / "tokenizer")
    return {
        "base": base,
        "new": work / "tokenizer",
        "pieces": pieces,
        "report": report,
        "learned": result,
        "corpus": ([asset("people-daily") / "train.txt"], LEARN_CHARS),
    }


@pytest.fixture(scope="session")
def llama2_expanded(asset, tmp_path_factory) -> dict:
    """LLaMA-2's sentencepiece tokenizer expanded with pieces learned from Chinese news."""
    return _learn_and_expand(
        asset, asset("llama2-tokenizer"), tmp_path_factory.mktemp("llama2-expanded")
    )


@pytest.fixture(scope="session")
def heldout(asset):
    """``heldout(asset_name, n=None)``: the held-out documents of a corpus asset."""

    def get(name: str, n: int | None = None) -> list[str]:
        lines = (asset(name) / "heldout.txt").read_text(encoding="utf-8").splitlines()
        return lines[:n] if n else lines

    return get


@pytest.fixture(scope="session")
def mixed_texts() -> list[str]:
    """Chinese / English / emoji / whitespace edge cases."""
    return list(MIXED_TEXTS)


MIXED_TEXTS = [
    "中华人民共和国成立了，人民群众欢欣鼓舞。",
    "Hello world! 你好，世界。",
    "emoji 😀🎉 and 汉字 mixed — “quotes” and ‘single’",
    "  leading spaces and trailing   ",
    "\ttabs\tand\nnewlines\n\n中文\n",
    "１９９８年１月１日，北京。",
    "数字 12345 and 3.14159",
    " ",
    "",
    "a",
    "混合English和中文的句子with no spaces",
    "日本語のテキストも少し。한국어도.",
]


@pytest.fixture(scope="session")
def smollm2_expanded(asset, tmp_path_factory) -> dict:
    """SmolLM2's byte-level BPE tokenizer expanded with pieces learned from Chinese news."""
    return _learn_and_expand(
        asset, asset("smollm2-135m"), tmp_path_factory.mktemp("smollm2-expanded")
    )
