"""`llamaforge eval where`: an expanded model's bits against its base model's, by token kind,
on a real expanded SmolLM2 tokenizer and tiny models built on it (eval reads the model dirs
that tokenizer-expand writes, so the test spans both packages)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # builds an expanded tokenizer and two models (~10 s)

ZH = [
    "中国人民银行今天宣布，人民币汇率保持稳定。",
    "  北京  的天气\t很好，中国队赢了比赛！ 2024年",
    "人民日报社论：据中国人民银行消息，发展是硬道理。English words stay old tokens here.",
]
PIECES = ["中国", "人民", "银行", "中国人民银行", "国", "宣", "天气"]


@pytest.fixture(scope="module")
def models(asset, tiny_llama, tmp_path_factory):
    from llamaforge_tokenizer import InitConfig, expand_tokenizer, init_model
    from llamaforge_tokenizer.pieces import write_pieces

    work = tmp_path_factory.mktemp("where")
    write_pieces(work / "p.jsonl", [{"piece": p} for p in PIECES])
    expand_tokenizer(asset("smollm2-tokenizer"), work / "p.jsonl", work / "tok")
    base = tiny_llama(work / "base", asset("smollm2-tokenizer"), seed=3)
    init_model(base, work / "tok", work / "expanded", InitConfig(method="mean"))
    return base, work / "expanded"


def _scored(path, texts):
    from llamaforge_eval import load_model
    from llamaforge_eval.attribution import score_tokens

    model, tok = load_model(path, device="cpu", dtype="float32")
    return score_tokens(model, tok, texts), tok


def test_kinds_follow_the_expanded_tokens(models):
    from llamaforge_eval.attribution import KINDS, compare_by_kind, first_new_id

    base, expanded = models
    first_new = first_new_id(expanded)
    new, tok = _scored(expanded, ZH)
    rows = {r.kind: r for r in compare_by_kind(new, new, first_new)}
    # the model against itself: every kind's two columns agree exactly
    for r in rows.values():
        assert r.model_bits == pytest.approx(r.reference_bits, rel=1e-9)
    # kinds counted by hand from the tokens (every token is scored, the first one after BOS)
    want = {k: 0 for k in KINDS}
    for text in ZH:
        ids = tok(text, add_special_tokens=False).input_ids
        for i in ids:
            piece = tok.decode([i])
            if i >= first_new:
                want[KINDS[min(len(piece), 3)]] += 1
    for kind in KINDS[1:]:
        assert (rows[kind].tokens if kind in rows else 0) == want[kind], kind
    assert rows[KINDS[3]].tokens >= 1 and rows[KINDS[2]].tokens >= 3  # 中国人民银行, 中国 ...


def test_reference_bits_are_carried_whole_onto_the_expanded_spans(models):
    from llamaforge_eval.attribution import compare_by_kind, first_new_id

    base, expanded = models
    new, _ = _scored(expanded, ZH)
    ref, _ = _scored(base, ZH)
    rows = compare_by_kind(ref, new, first_new_id(expanded))
    # plain reference computation: every token of every document is scored (the first one
    # after the start token), so each side's total is the sum of all its tokens' bits
    want_ref = sum(sum(r.bits) for r in ref)
    want_new = sum(sum(n.bits) for n in new)
    want_chars = sum(len(text) for text in ZH)
    assert not any(math.isnan(b) for r in (*ref, *new) for b in r.bits)
    assert sum(r.reference_bits for r in rows) == pytest.approx(want_ref, rel=1e-9)
    assert sum(r.model_bits for r in rows) == pytest.approx(want_new, rel=1e-9)
    # byte tokens of one character share an end: a character is counted once
    assert sum(r.characters for r in rows) == want_chars
    # the base model reads Chinese in more tokens than the expanded one
    assert sum(len(r.ids) for r in ref) > sum(len(n.ids) for n in new)


def test_first_token_is_scored_after_the_start_token(models):
    import torch
    import torch.nn.functional as F

    from llamaforge_eval import load_model

    _, expanded = models
    new, tok = _scored(expanded, ZH[:1])
    model, _ = load_model(expanded, device="cpu", dtype="float32")
    ids = tok(ZH[0], add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([[tok.bos_token_id, ids[0]]])).logits[0, 0]
    want = float(F.cross_entropy(logits[None], torch.tensor([ids[0]]))) / math.log(2)
    assert new[0].bits[0] == pytest.approx(want, rel=1e-5)


def test_a_document_longer_than_the_context_is_scored_as_eval_run_scores_it(models, tmp_path):
    from llamaforge_eval import Runner, evaluate_text, load_model
    from llamaforge_eval.attribution import score_tokens

    _, expanded = models
    model, tok = load_model(expanded, device="cpu", dtype="float32")
    context = model.config.max_position_embeddings
    one = len(tok("，".join(ZH), add_special_tokens=False).input_ids)
    long = "，".join(ZH * (2 * context // one + 2))  # over two windows of the model's context
    assert len(tok(long, add_special_tokens=False).input_ids) > 2 * context
    text = tmp_path / "long.txt"
    text.write_text(f"{long}\n{ZH[1]}\n", encoding="utf-8")
    want = evaluate_text(Runner(model, tok), {"zh": [text]})["zh"]["doc_bits"]
    got = [sum(s.bits) for s in score_tokens(model, tok, [long, ZH[1]])]
    assert got == pytest.approx(want, rel=1e-6)  # windows of the model's context, not 2048


def test_cli_table_and_an_unexpanded_model_is_one_line(models, tmp_path):
    base, expanded = models
    text = tmp_path / "zh.txt"
    text.write_text("\n".join(ZH) + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "llamaforge_eval", "where"]
    ok = subprocess.run(
        [*cmd, str(base), str(expanded), "--text", str(text), "-o", str(tmp_path / "w.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    result = json.loads((tmp_path / "w.json").read_text())
    kinds, total = result["kinds"], result["all"]
    assert {k["kind"] for k in kinds} >= {"old token", "new piece, 2 characters"}
    assert all(k["characters"] > 0 and k["model_bits"] > 0 for k in kinds)
    for key in ("tokens", "characters", "model_bits", "reference_bits"):
        assert total[key] == pytest.approx(sum(k[key] for k in kinds), rel=1e-12), key
    assert any(line.startswith("│ all ") for line in ok.stdout.splitlines()), ok.stdout
    bad = subprocess.run(
        [*cmd, str(expanded), str(base), "--text", str(text)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "expanded_from_vocab_size" in errors[0], bad.stderr
