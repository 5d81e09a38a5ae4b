"""Byte-level BPE (SmolLM2) expansion: real vocabulary entries + merges, old encodings intact."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from llamaforge_tokenizer import TokenizerExpandError, expand_bpe
from llamaforge_tokenizer.bpe import to_byte_level


def _tok(folder):
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def test_old_ids_unchanged_and_new_entries_are_model_vocab(smollm2_expanded):
    old = json.loads((smollm2_expanded["base"] / "tokenizer.json").read_text())
    new = json.loads((smollm2_expanded["new"] / "tokenizer.json").read_text())
    old_vocab, new_vocab = old["model"]["vocab"], new["model"]["vocab"]
    assert all(new_vocab[t] == i for t, i in old_vocab.items())
    assert new["model"]["merges"][: len(old["model"]["merges"])] == old["model"]["merges"]
    added = [t for t in new_vocab if t not in old_vocab]
    assert len(added) >= smollm2_expanded["report"].added
    # Not "added tokens": the learned pieces are in the BPE model itself.
    added_contents = {t["content"] for t in new["added_tokens"]}
    assert not added_contents & set(added)
    assert smollm2_expanded["report"].new_size % 64 == 0


def test_new_tokens_come_from_normal_encoding_in_context(smollm2_expanded):
    new = _tok(smollm2_expanded["new"])
    vocab = new.get_vocab()
    text = "今天，中华人民共和国国务院召开常务会议。经济发展稳中有进。"
    pieces = [json.loads(x)["piece"] for x in smollm2_expanded["pieces"].read_text().splitlines()]
    ids = new.encode(text).ids
    new_ids = {i for i in ids if i >= 49152}
    assert new_ids, "the learned pieces are produced by encoding ordinary text"
    for piece in pieces[:200]:
        if piece in text:
            assert vocab[to_byte_level(piece)] >= 49152
    assert new.decode(ids) == text


def test_english_encodes_identically(smollm2_expanded, heldout, mixed_texts):
    old, new = _tok(smollm2_expanded["base"]), _tok(smollm2_expanded["new"])
    english = heldout("botchan") + heldout("lee-news") + [t for t in mixed_texts if t.isascii()]
    assert [e.ids for e in new.encode_batch(english)] == [e.ids for e in old.encode_batch(english)]


def test_chinese_heldout_needs_40_percent_fewer_tokens(smollm2_expanded, heldout):
    old, new = _tok(smollm2_expanded["base"]), _tok(smollm2_expanded["new"])
    lines = heldout("people-daily")
    before = sum(len(e.ids) for e in old.encode_batch(lines))
    after = sum(len(e.ids) for e in new.encode_batch(lines))
    assert after <= 0.6 * before, (before, after)


def test_transformers_loads_and_round_trips(smollm2_expanded, mixed_texts, heldout):
    tok = AutoTokenizer.from_pretrained(smollm2_expanded["new"])
    assert len(tok) == smollm2_expanded["report"].new_size
    for text in mixed_texts + heldout("chinese-reviews", 50):
        assert tok.decode(tok.encode(text), skip_special_tokens=True) == text
    assert tok.encode("你好")[0] != tok.convert_tokens_to_ids("<|im_start|>")


def test_reserved_tokens_never_produced(smollm2_expanded, heldout, mixed_texts):
    new = json.loads((smollm2_expanded["new"] / "tokenizer.json").read_text())
    reserved = {t["id"] for t in new["added_tokens"] if t["content"].startswith("<|reserved_")}
    assert len(reserved) == smollm2_expanded["report"].reserved
    tok = _tok(smollm2_expanded["new"])
    seen = {i for e in tok.encode_batch(heldout("people-daily") + mixed_texts) for i in e.ids}
    assert not reserved & seen


def test_piece_across_pretoken_boundary_is_counted_unusable(asset, tmp_path):
    report = expand_bpe(
        asset("smollm2-135m"), ["hello world", "你好呀", "你好呀"], tmp_path / "o", pad_to=1
    )
    assert report.unusable == 1 and report.examples_unusable == ["hello world"]
    assert report.added == 1 and report.already_present == 1
    tok = _tok(tmp_path / "o")
    assert len(tok.encode("你好呀").ids) == 1


def test_sentencepiece_dir_is_not_bpe(asset, tmp_path):
    with pytest.raises(TokenizerExpandError, match="no tokenizer.json"):
        expand_bpe(asset("llama2-tokenizer"), ["你好"], tmp_path / "o")


@pytest.mark.slow
def test_llama3_expansion_keeps_old_encodings(asset, heldout, tmp_path):
    from llamaforge_cli.assets import read_vocab_cases
    from llamaforge_tokenizer import LearnConfig, learn_pieces
    from llamaforge_tokenizer.pieces import write_pieces

    base = asset("llama3-tokenizer")
    learned = learn_pieces(
        base,
        [asset("people-daily") / "train.txt"],
        LearnConfig(num_pieces=1500, max_corpus_chars=200_000),
    )
    write_pieces(tmp_path / "p.jsonl", [c.to_dict() for c in learned.candidates])
    from llamaforge_tokenizer import expand_tokenizer

    report = expand_tokenizer(base, tmp_path / "p.jsonl", tmp_path / "tok")
    assert report.new_size % 64 == 0 and report.old_size == 128256
    old, new = _tok(base), _tok(tmp_path / "tok")
    cases = read_vocab_cases(base / "llama.cpp-cases.inp", base / "llama.cpp-cases.out")
    plain = [t for t, _ in cases if all(ord(ch) < 0x2E80 for ch in t)]
    plain += heldout("botchan") + heldout("lee-news")
    assert [e.ids for e in new.encode_batch(plain)] == [e.ids for e in old.encode_batch(plain)]
    zh = heldout("people-daily")
    before = sum(len(e.ids) for e in old.encode_batch(zh))
    after = sum(len(e.ids) for e in new.encode_batch(zh))
    assert after < 0.9 * before
