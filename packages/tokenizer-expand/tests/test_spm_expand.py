"""Sentencepiece (LLaMA-2) expansion on the real vocabulary and the real Chinese corpus."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer, LlamaTokenizer, LlamaTokenizerFast

from llamaforge_tokenizer import TokenizerExpandError, expand_sentencepiece
from llamaforge_tokenizer.spm import load_model_proto


def _sp(folder):
    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))


def test_old_pieces_and_ids_unchanged(llama2_expanded):
    old = load_model_proto(llama2_expanded["base"])
    new = load_model_proto(llama2_expanded["new"])
    assert [(p.piece, p.type) for p in new.pieces[:32000]] == [
        (p.piece, p.type) for p in old.pieces
    ]
    assert len(new.pieces) % 64 == 0
    assert len(new.pieces) == llama2_expanded["report"].new_size > 32000 + 7000


def test_english_encodes_identically(llama2_expanded, heldout):
    old, new = _sp(llama2_expanded["base"]), _sp(llama2_expanded["new"])
    lines = heldout("botchan") + heldout("lee-news")
    assert len(lines) > 60
    assert [new.encode(x) for x in lines] == [old.encode(x) for x in lines]


def test_chinese_heldout_needs_40_percent_fewer_tokens(llama2_expanded, heldout):
    old, new = _sp(llama2_expanded["base"]), _sp(llama2_expanded["new"])
    lines = heldout("people-daily")
    before = sum(len(ids) for ids in old.encode(lines))
    after = sum(len(ids) for ids in new.encode(lines))
    assert after <= 0.6 * before, (before, after)
    paragraph = max(lines[:50], key=len)  # one long held-out paragraph on its own
    assert len(new.encode(paragraph)) <= 0.6 * len(old.encode(paragraph))


def test_slow_and_fast_agree(llama2_expanded, heldout, mixed_texts):
    slow = AutoTokenizer.from_pretrained(llama2_expanded["new"], use_fast=False)
    fast = AutoTokenizer.from_pretrained(llama2_expanded["new"], use_fast=True)
    assert isinstance(slow, LlamaTokenizer) and isinstance(fast, LlamaTokenizerFast)
    raw = _sp(llama2_expanded["new"])
    texts = (
        mixed_texts
        + heldout("people-daily", 200)
        + heldout("chinese-reviews", 200)
        + heldout("botchan", 20)
    )
    for text in texts:
        ids = raw.encode(text)
        assert slow.encode(text, add_special_tokens=False) == ids, text
        assert fast.encode(text, add_special_tokens=False) == ids, text
    assert fast.encode("你好")[0] == 1  # BOS still added by default


def test_output_dir_is_complete(llama2_expanded):
    names = {p.name for p in llama2_expanded["new"].iterdir()}
    assert {
        "tokenizer.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    } <= names
    config = json.loads((llama2_expanded["new"] / "tokenizer_config.json").read_text())
    assert "add_prefix_space" not in config


def test_reserved_pieces_never_produced(llama2_expanded, heldout, mixed_texts):
    new = load_model_proto(llama2_expanded["new"])
    reserved = {i for i, p in enumerate(new.pieces) if p.piece.startswith("<|reserved_")}
    assert len(reserved) == llama2_expanded["report"].reserved
    sp = _sp(llama2_expanded["new"])
    lines = heldout("people-daily") + mixed_texts
    assert not reserved & {i for ids in sp.encode(lines) for i in ids}


def test_hand_made_list_gets_intermediates(asset, tmp_path):
    base = asset("llama2-tokenizer")
    # "龘" is not in LLaMA-2's vocabulary and no pair of pieces builds "中华人民共和国".
    pieces = ["中华人民共和国", "龘龘", "中华人民共和国", "the"]
    report = expand_sentencepiece(base, pieces, tmp_path / "out", pad_to=1)
    assert report.added == 2 and report.already_present == 2  # the repeat, and "the"
    assert report.intermediates > 0 and report.reserved == 0
    sp = _sp(tmp_path / "out")
    assert sp.encode("中华人民共和国", out_type=str) == ["▁", "中华人民共和国"]
    assert "龘龘" in sp.encode("龘龘", out_type=str)


def test_existing_output_dir_is_refused(asset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(TokenizerExpandError, match="already exists; pass --overwrite"):
        expand_sentencepiece(asset("llama2-tokenizer"), ["你好"], out)
    expand_sentencepiece(asset("llama2-tokenizer"), ["你好"], out, overwrite=True)
    assert (out / "tokenizer.model").is_file()


def test_corrupt_tokenizer_model(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(TokenizerExpandError, match="corrupt sentencepiece model"):
        expand_sentencepiece(tmp_path, ["你好"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
