"""A tiny LLaMA with SmolLM2's real tokenizer, and packed real Chinese + English text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def make_tiny_llama(
    out: Path, tokenizer_dir: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2
) -> Path:
    """A randomly initialised LlamaForCausalLM dir that uses ``tokenizer_dir``'s vocabulary."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out), safe_serialization=True)
    for f in Path(tokenizer_dir).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copyfile(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def tiny_model(asset, tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", asset("smollm2-135m"))


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
        TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), max_length=128),
        PackConfig(out_dir=out, num_bins=2),
    )
    return out
