"""A tiny LLaMA with SmolLM2's real tokenizer, and packed real Chinese + English text."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(asset, tiny_llama, tmp_path_factory) -> Path:
    return tiny_llama(
        tmp_path_factory.mktemp("tiny") / "model", asset("smollm2-tokenizer"), positions=2048
    )


@pytest.fixture(scope="session")
def packed_text(asset, tmp_path_factory) -> Path:
    """People's Daily + Botchan packed into 128-token rows with SmolLM2's tokenizer."""
    from llamaforge_datapack import PackConfig, Source, TokenizeConfig, pack

    work = tmp_path_factory.mktemp("packed")
    zh = (asset("people-daily") / "train.txt").read_text(encoding="utf-8").splitlines()[:300]
    en = (asset("botchan") / "train.txt").read_text(encoding="utf-8").splitlines()[:100]
    (work / "zh.txt").write_text("\n".join(zh), encoding="utf-8")
    (work / "en.txt").write_text("\n".join(en), encoding="utf-8")
    out = work / "out"
    pack(
        [
            Source(name="zh", inputs=[str(work / "zh.txt")]),
            Source(name="en", inputs=[str(work / "en.txt")]),
        ],
        TokenizeConfig(tokenizer_dir=asset("smollm2-tokenizer"), max_length=128),
        PackConfig(out_dir=out, num_bins=2),
    )
    return out
