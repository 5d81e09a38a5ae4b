"""Streamed text, token by token, against the tokenizer's own decode of the whole answer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from llamaforge_serve.streaming import Sampling, Sequence, StreamingEngine

TEXT = (
    "Paris is the capital of France.\n\n  Indented  line\twith a tab, café, naïve 🙂🚀\n"
    "人民日报 1998年1月1日：新年贺词。 混合 English 和中文，还有表情 😀 与罕见字 𠮷𠀀。\n"
    "Code: `def f(x): return x ** 2`   trailing spaces   "
)


class _Recorder:
    """A real tokenizer whose decode calls are counted by the length of what they decode."""

    def __init__(self, tok):
        self.tok, self.eos_token_id, self.lengths = tok, tok.eos_token_id, []

    def decode(self, ids, **kw):
        self.lengths.append(len(ids))
        return self.tok.decode(ids, **kw)


def _stream(tok, ids: list[int], **sampling) -> tuple[str, str | None, list[int]]:
    recorder = _Recorder(tok)
    engine = StreamingEngine(recorder, eos_ids=[-1])  # never started: _accept alone
    deltas, reasons = [], []
    seq = Sequence(
        prompt_ids=[1],
        sampling=Sampling(max_tokens=len(ids) + 1, **sampling),
        emit=lambda text, reason, n: (deltas.append(text), reasons.append(reason)),
    )
    for token in ids:
        engine._accept(seq, token)
        if seq.finished:
            break
    return "".join(deltas), reasons[-1], recorder.lengths


@pytest.fixture(params=["llama2-tokenizer", "smollm2-tokenizer"])
def tok(request, asset):
    return AutoTokenizer.from_pretrained(str(asset(request.param)))


def test_streamed_text_equals_the_full_decode(tok):
    ids = tok(TEXT * 3, add_special_tokens=False).input_ids
    # the text needs byte tokens (a character over several ids) for this to mean anything
    assert any("\ufffd" in tok.decode([i]) for i in ids)
    text, reason, lengths = _stream(tok, ids)
    assert text == tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert reason is None  # no stop, no length limit reached
    # each step decodes a short window, not the whole answer again
    assert max(lengths) <= 16 < len(ids)


def test_stop_string_across_multibyte_characters_ends_the_text_before_it(tok):
    ids = tok(TEXT, add_special_tokens=False).input_ids
    full = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    for stop in ("新年贺词", "🚀", "\n\n"):
        text, reason, _ = _stream(tok, ids, stop=[stop])
        assert (text, reason) == (full[: full.index(stop)], "stop")
