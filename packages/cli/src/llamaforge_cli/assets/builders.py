"""Builders for the tokenizer and model assets (thin wrappers over the GGUF converters)."""

from __future__ import annotations

import shutil
from pathlib import Path

from llamaforge_cli.assets.gguf_model import build_smollm2_dir, build_smollm2_tokenizer_dir
from llamaforge_cli.assets.gguf_vocab import build_llama_bpe_dir, build_llama_spm_dir

CASES_INP = "llama.cpp-cases.inp"
CASES_OUT = "llama.cpp-cases.out"


def _pick(members: dict[str, Path], suffix: str) -> Path:
    (path,) = (p for name, p in members.items() if name.endswith(suffix))
    return path


def _copy_cases(members: dict[str, Path], out_dir: Path) -> None:
    shutil.copyfile(_pick(members, ".gguf.inp"), out_dir / CASES_INP)
    shutil.copyfile(_pick(members, ".gguf.out"), out_dir / CASES_OUT)


def build_llama2_tokenizer(members: dict[str, Path], out_dir: Path) -> None:
    """LLaMA-2 sentencepiece tokenizer dir plus llama.cpp's reference cases."""
    build_llama_spm_dir(_pick(members, ".gguf"), out_dir)
    _copy_cases(members, out_dir)


def build_llama3_tokenizer(members: dict[str, Path], out_dir: Path) -> None:
    """LLaMA-3 byte-level BPE tokenizer dir plus llama.cpp's reference cases."""
    build_llama_bpe_dir(_pick(members, ".gguf"), out_dir)
    _copy_cases(members, out_dir)


def build_smollm2(members: dict[str, Path], out_dir: Path) -> None:
    """SmolLM2-135M-Instruct as an HF safetensors dir."""
    build_smollm2_dir(_pick(members, ".gguf"), out_dir)


def build_smollm2_tokenizer(members: dict[str, Path], out_dir: Path) -> None:
    """SmolLM2's tokenizer alone (the files of the full SmolLM2 dir, without the weights)."""
    build_smollm2_tokenizer_dir(_pick(members, ".gguf"), out_dir)
