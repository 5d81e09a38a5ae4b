"""Real Chinese + English corpora (workspace assets) written in the three input schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def corpora(asset, tmp_path_factory) -> dict[str, Path]:
    """jsonl inputs: zh text, en pretraining (source/target), zh reviews, SFT conversations."""
    work = tmp_path_factory.mktemp("corpora")
    zh = (asset("people-daily") / "train.txt").read_text(encoding="utf-8").splitlines()[:1500]
    reviews = (
        (asset("chinese-reviews") / "train.txt").read_text(encoding="utf-8").splitlines()[:800]
    )
    en = (asset("botchan") / "train.txt").read_text(encoding="utf-8").splitlines()
    en += (asset("lee-news") / "train.txt").read_text(encoding="utf-8").splitlines()
    sft = [
        {
            "messages": [
                {"from": "human", "content": f"请概括：{q[:60]}"},
                {"from": "assistant", "content": a[:300]},
                {"from": "human", "content": "Now in English, briefly."},
                {"from": "assistant", "content": e[:200]},
            ]
        }
        for q, a, e in zip(zh[::3], zh[1::3], en, strict=False)
    ][:300]
    return {
        "zh": _write_jsonl(work / "zh.jsonl", [{"text": t, "category": "zh"} for t in zh]),
        "reviews": _write_jsonl(work / "reviews.jsonl", [{"text": t} for t in reviews]),
        "en": _write_jsonl(
            work / "en.jsonl", [{"source": t[:50], "target": t[50:], "category": "en"} for t in en]
        ),
        "sft": _write_jsonl(work / "sft.jsonl", sft),
        "dir": work,
    }
