"""Convert SmolLM2's quantised GGUF checkpoint into a plain HF safetensors dir (bf16), or
into its tokenizer alone.

transformers de-quantises the GGUF tensors on load. The tokenizer it builds from the GGUF needs
three fixes to match SmolLM2's own ``tokenizer.json`` (see shared/NOTES-assets.md): no BOS is
added, and eos / pad are ``<|im_end|>``.
"""

from __future__ import annotations

from pathlib import Path

from llamaforge_cli.assets.errors import AssetError
from llamaforge_cli.assets.gguf_vocab import use_generic_fast_class

END_OF_TURN = "<|im_end|>"
EXPECTED_ROPE_THETA = 100000.0


def _load_tokenizer(gguf_path: Path):
    """SmolLM2's tokenizer from the GGUF, with the fixes that make it match the original."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, legacy=False
    )
    tokenizer.add_bos_token = False
    # SmolLM2's own tokenizer config turns this off; the GGUF converter turns it on, and with it
    # decoding deletes spaces the model generated before punctuation ("a , b" -> "a, b").
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = END_OF_TURN
    return tokenizer


def _save_tokenizer(tokenizer, out_dir: Path) -> None:
    tokenizer.save_pretrained(str(out_dir))
    # transformers copies the GGUF file's bytes as "tokenizer.model"; SmolLM2 is byte-level BPE
    # (tokenizer.json) and has no sentencepiece model, so that file would only mislead loaders.
    (out_dir / "tokenizer.model").unlink(missing_ok=True)
    use_generic_fast_class(out_dir)


def build_smollm2_tokenizer_dir(gguf_path: Path, out_dir: Path) -> None:
    """Only the tokenizer of ``gguf_path`` (the same files :func:`build_smollm2_dir` writes),
    for what needs SmolLM2's vocabulary but not its weights."""
    try:
        _save_tokenizer(_load_tokenizer(gguf_path), out_dir)
    except ImportError as exc:
        raise AssetError(
            "reading SmolLM2's tokenizer needs transformers: pip install 'llamaforge[model]'"
        ) from exc


def build_smollm2_dir(gguf_path: Path, out_dir: Path) -> None:
    """De-quantise ``gguf_path`` and save model, tokenizer and generation config to ``out_dir``."""
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError as exc:
        raise AssetError(
            "converting SmolLM2 needs torch and transformers: pip install 'llamaforge[model]'"
        ) from exc

    tokenizer = _load_tokenizer(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, torch_dtype=torch.bfloat16
    )
    rope_theta = float(getattr(model.config, "rope_theta", 0.0))
    if rope_theta != EXPECTED_ROPE_THETA:
        raise AssetError(f"converted SmolLM2 has rope_theta {rope_theta}, expected 100000")
    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.config.eos_token_id = end_id
    model.config.pad_token_id = end_id
    model.config.bos_token_id = None
    model.generation_config.eos_token_id = end_id
    model.generation_config.pad_token_id = end_id
    model.generation_config.bos_token_id = None
    model.hf_quantizer = None  # save_pretrained refuses a GGUF-loaded model otherwise
    model.save_pretrained(str(out_dir), safe_serialization=True)
    _save_tokenizer(tokenizer, out_dir)
