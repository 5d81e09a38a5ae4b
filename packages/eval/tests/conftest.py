"""Fixture benchmarks (our own questions, official layouts) and models to run them on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_eval_model(asset, tmp_path_factory) -> Path:
    """A random tiny LLaMA with SmolLM2's tokenizer (fast; predictions are arbitrary but fixed)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok_dir = asset("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    out = tmp_path_factory.mktemp("tiny-eval") / "model"
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(str(out))
    for f in tok_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copyfile(f, out / f.name)
    return out
