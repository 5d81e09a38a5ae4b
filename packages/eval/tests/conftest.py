"""Fixture benchmarks (our own questions, official layouts) and models to run them on."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_eval_model(asset, tiny_llama, tmp_path_factory) -> Path:
    """A random tiny LLaMA with SmolLM2's tokenizer (fast; predictions are arbitrary but fixed)."""
    return tiny_llama(
        tmp_path_factory.mktemp("tiny-eval") / "model", asset("smollm2-tokenizer"), seed=1
    )
