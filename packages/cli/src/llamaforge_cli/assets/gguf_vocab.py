"""Turn llama.cpp's vocabulary-only GGUF files into HF tokenizer dirs.

The LLaMA-2 vocabulary becomes a sentencepiece ``tokenizer.model`` built directly from the GGUF
fields (pieces, scores, token types), so nothing but ``gguf``, ``sentencepiece`` and ``protobuf``
is needed. The LLaMA-3 byte-level BPE vocabulary goes through transformers' own GGUF converter.
"""

from __future__ import annotations

import json
from pathlib import Path

from llamaforge_cli.assets.errors import AssetError

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        raise AssetError(f"GGUF file has no field {key!r}: not a llama.cpp vocabulary file")
    return field


def _scalar(reader, key: str):
    field = _field(reader, key)
    return field.parts[field.data[0]][0].item()


def read_gguf_vocab(path: Path) -> dict:
    """Read pieces, scores, token types and special ids from a vocabulary GGUF file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    tokens_f = _field(reader, "tokenizer.ggml.tokens")
    pieces = [bytes(tokens_f.parts[i]).decode("utf-8") for i in tokens_f.data]
    scores_f = reader.fields.get("tokenizer.ggml.scores")
    scores = [float(scores_f.parts[i][0]) for i in scores_f.data] if scores_f else None
    types_f = reader.fields.get("tokenizer.ggml.token_type")
    types = [int(types_f.parts[i][0]) for i in types_f.data] if types_f else None
    model = bytes(_field(reader, "tokenizer.ggml.model").parts[-1]).decode()
    special = {}
    for name in ("bos", "eos", "unknown", "padding"):
        key = f"tokenizer.ggml.{name}_token_id"
        if key in reader.fields:
            special[name] = int(_scalar(reader, key))
    return {"model": model, "pieces": pieces, "scores": scores, "types": types, "special": special}


def build_llama_spm_dir(gguf_path: Path, out_dir: Path) -> None:
    """Write a LLaMA-2 style HF tokenizer dir (``tokenizer.model`` + configs) from a GGUF vocab."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    vocab = read_gguf_vocab(gguf_path)
    if vocab["model"] != "llama" or vocab["scores"] is None or vocab["types"] is None:
        raise AssetError(f"{gguf_path.name} is not a sentencepiece (llama) vocabulary")
    proto = sp_pb2.ModelProto()
    for piece, score, kind in zip(vocab["pieces"], vocab["scores"], vocab["types"], strict=True):
        # GGUF token types use sentencepiece's own numbering (1 normal ... 6 byte).
        proto.pieces.add(piece=piece, score=score, type=kind)
    special = vocab["special"]
    trainer = proto.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(vocab["pieces"])
    trainer.byte_fallback = True
    trainer.split_digits = True
    trainer.unk_id = special.get("unknown", 0)
    trainer.bos_id = special.get("bos", 1)
    trainer.eos_id = special.get("eos", 2)
    trainer.pad_id = -1
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = True
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.model").write_bytes(proto.SerializeToString())
    pieces = vocab["pieces"]
    unk, bos, eos = pieces[trainer.unk_id], pieces[trainer.bos_id], pieces[trainer.eos_id]
    special_map = {"bos_token": bos, "eos_token": eos, "unk_token": unk}
    config = {
        "tokenizer_class": "LlamaTokenizer",
        **special_map,
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "sp_model_kwargs": {},
    }
    _write_json(out_dir / "tokenizer_config.json", config)
    _write_json(out_dir / "special_tokens_map.json", special_map)


def build_llama_bpe_dir(gguf_path: Path, out_dir: Path) -> None:
    """Write a LLaMA-3 style byte-level BPE HF tokenizer dir from a GGUF vocabulary."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise AssetError(
            "building the LLaMA-3 tokenizer needs transformers: pip install 'llamaforge[model]'"
        ) from exc
    tok = AutoTokenizer.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, legacy=False
    )
    tok.save_pretrained(str(out_dir))
    # transformers 4.51's GGUF converter gives this vocabulary GPT-2's pre-tokenizer; LLaMA-3
    # splits text with its own pattern (digits in groups of up to three, case-insensitive
    # contractions) and looks whole pre-tokens up before merging.
    path = out_dir / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": LLAMA3_SPLIT},
                "behavior": "Isolated",
                "invert": False,
            },
            {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": True,
                "use_regex": False,
            },
        ],
    }
    data["model"]["ignore_merges"] = True
    # ...and a sentencepiece-style decoder whose Strip step deletes the first space of any text
    # that starts with one; LLaMA-3 decodes bytes, nothing more.
    data["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    }
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (out_dir / "tokenizer.model").unlink(missing_ok=True)
    use_generic_fast_class(out_dir)


def use_generic_fast_class(out_dir: Path) -> None:
    """Name ``PreTrainedTokenizerFast`` as the class of a byte-level BPE tokenizer dir.

    transformers 4.51's GGUF converter writes ``LlamaTokenizer``; transformers 5 (vLLM's
    environment) then rebuilds a sentencepiece-style pre-tokenizer and decoder for that class
    and ignores ``tokenizer.json``'s own — other ids, and "Ġ" left in decoded text. The generic
    class takes ``tokenizer.json`` as it is in both versions.
    """
    path = out_dir / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    # The generic class would otherwise also return token_type_ids, which LLaMA models refuse
    # (``model.generate(**tokenizer(text))`` fails).
    config["model_input_names"] = ["input_ids", "attention_mask"]
    _write_json(path, config)


def read_vocab_cases(inp: Path, out: Path) -> list[tuple[str, list[int]]]:
    """Parse llama.cpp's ``.inp`` / ``.out`` tokenizer test files into (text, ids) pairs."""
    sep = "\n__ggml_vocab_test__\n"
    texts = inp.read_text(encoding="utf-8").split(sep)
    if texts and texts[-1] == "":
        texts.pop()
    lines = out.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(texts) != len(lines):
        raise AssetError(f"{inp.name}: {len(texts)} inputs but {len(lines)} expected outputs")
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines, strict=True)]


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
