"""The learner: exact savings accounting, valid merge order, word-list constraint, bad input."""

from __future__ import annotations

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer

from llamaforge_tokenizer import LearnConfig, TokenizerExpandError, learn_pieces
from llamaforge_tokenizer.learn import read_corpus
from llamaforge_tokenizer.segment import load_segmenter


def test_savings_are_what_the_real_tokenizers_spend(llama2_expanded, smollm2_expanded):
    """The learner's before / after token counts against the real tokenizers (sentencepiece,
    HF tokenizers) on the same corpus: the base one spends exactly ``tokens_before``; the
    expanded one exactly ``tokens_after`` (sentencepiece), or at most that and within 1 %
    (byte-level BPE, whose merges may find a few more)."""
    for expanded in (llama2_expanded, smollm2_expanded):
        learned, docs = expanded["learned"], read_corpus(*expanded["corpus"])
        before, after = (_spent(expanded[k], docs) for k in ("base", "new"))
        assert before == learned.tokens_before
        if (expanded["new"] / "tokenizer.model").is_file():
            assert after == learned.tokens_after
        else:
            assert 0.99 * learned.tokens_after <= after <= learned.tokens_after
        assert sum(c.saving for c in learned.candidates) == before - learned.tokens_after
        assert after < 0.6 * before


def _spent(tokenizer_dir, docs: list[str]) -> int:
    if (tokenizer_dir / "tokenizer.model").is_file():
        sp = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))
        return sum(len(sp.encode(d)) for d in docs)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    return sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)


@pytest.mark.parametrize("name", ["llama2-tokenizer", "smollm2-tokenizer"])
def test_segments_cost_what_the_tokenizer_spends(name, asset, heldout, mixed_texts):
    seg = load_segmenter(asset(name))
    texts = mixed_texts + heldout("people-daily", 200)
    chunks = seg.chunks(texts)
    if seg.kind == "sentencepiece":
        sp = spm.SentencePieceProcessor(model_file=str(asset(name) / "tokenizer.model"))
        spent = sum(len(sp.encode(t)) for t in texts)
    else:
        tok = Tokenizer.from_file(str(asset(name) / "tokenizer.json"))
        spent = sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts)
    assert sum(sum(costs) * n for (_, costs), n in chunks.items()) == spent
    units = {u for (us, _) in chunks for u in us}
    assert all(seg.text(u) is not None for u in units)  # whole characters only
    emoji = "😀" if seg.kind == "sentencepiece" else " 😀"  # BPE keeps the space before it
    assert any(seg.text(u) == emoji for u in units)  # 4 byte tokens → 1 unit


def test_every_merge_is_built_from_earlier_pieces(llama2_expanded):
    vocab = set(load_segmenter(llama2_expanded["base"]).vocab)
    for cand in llama2_expanded["learned"].candidates:
        piece = cand.piece.replace(" ", "\u2581")
        if cand.kind == "merge":
            assert any(piece[:k] in vocab and piece[k:] in vocab for k in range(1, len(piece)))
        vocab.add(piece)
    assert llama2_expanded["report"].intermediates == 0  # the list is already a merge order


def test_pieces_follow_the_word_list(llama2_expanded, asset):
    words = [
        ln.split()[0]
        for ln in (asset("jieba-dict") / "dict.txt").read_text(encoding="utf-8").splitlines()
    ]
    joined = "\n".join(words)
    multi = [
        c.piece.strip() for c in llama2_expanded["learned"].candidates if len(c.piece.strip()) > 1
    ]
    assert multi and all(p in joined for p in multi[:500])


def test_numbers_stay_one_digit_per_token(llama2_expanded, smollm2_expanded):
    """No learned piece holds a digit next to anything else (numbers keep the base tokenizer's
    one-digit-per-token spelling), but a full-width digit, which People's Daily writes in its
    dates and which both tokenizers spell with several byte tokens, becomes one token."""
    for expanded in (llama2_expanded, smollm2_expanded):
        pieces = [c.piece.strip() for c in expanded["learned"].candidates]
        assert not any(len(p) > 1 and any(ch.isdigit() for ch in p) for p in pieces)
        assert "\uff11" in pieces  # "１"
        assert _spent(expanded["new"], ["１９９８年"]) < _spent(expanded["base"], ["１９９８年"])


def test_saving_ranking_starts_high(llama2_expanded):
    savings = [c.saving for c in llama2_expanded["learned"].candidates]
    assert savings[0] >= max(savings[len(savings) // 2 :])


def test_bad_config_and_input(asset, tmp_path):
    with pytest.raises(TokenizerExpandError, match="num_pieces must be ≥ 1"):
        LearnConfig(num_pieces=0)
    bad = tmp_path / "bad.txt"
    bad.write_bytes("第一行\n".encode() + "第二行".encode("gbk"))
    with pytest.raises(TokenizerExpandError, match=r"bad\.txt:2: not UTF-8"):
        learn_pieces(asset("llama2-tokenizer"), [bad], LearnConfig(num_pieces=10))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(TokenizerExpandError, match="corpus is empty"):
        learn_pieces(asset("llama2-tokenizer"), [empty], LearnConfig(num_pieces=10))
    with pytest.raises(TokenizerExpandError, match="no such tokenizer dir"):
        learn_pieces(tmp_path / "nope", [empty], LearnConfig(num_pieces=10))


def test_fewer_pieces_than_asked_says_why(asset, tmp_path):
    corpus = tmp_path / "zh.txt"
    text = "人民日报记者报道。\n  北京的记者，北京的人民。\n\n上海\t报道\n"
    corpus.write_text(text, encoding="utf-8")
    tok = asset("llama2-tokenizer")
    few = learn_pieces(tok, [corpus], LearnConfig(num_pieces=2))
    assert len(few.candidates) == 2
    assert few.summary() == "learned 2 pieces"
    many = learn_pieces(tok, [corpus], LearnConfig(num_pieces=10_000, min_saving=2))
    assert 2 < len(many.candidates) < 10_000
    assert min(c.saving for c in many.candidates) >= 2
    assert many.summary() == (
        f"learned {len(many.candidates):,} pieces (10,000 asked: no further piece saves ≥ 2 "
        "tokens on this corpus)"
    )
    none = learn_pieces(tok, [corpus], LearnConfig(num_pieces=5, min_saving=1000))
    assert none.summary() == (
        "learned 0 pieces (5 asked: no piece saves ≥ 1000 tokens on this corpus)"
    )
