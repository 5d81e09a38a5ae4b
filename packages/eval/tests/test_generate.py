"""Greedy generation speed and chat answers, against plain transformers generation."""

from __future__ import annotations

import pytest
import torch

from llamaforge_eval import (
    EvalError,
    chat_answer,
    chat_answers,
    compare_generation,
    evaluate_generation,
    generation_speed,
    load_model,
    read_prompts,
)
from llamaforge_eval.generate import PROMPT_CHARS

PROMPTS = ["１９９８年，中国人民将满怀", "The capital of", "  odd\twhitespace\n"]


def _plain_greedy(model, tok, prompt: str, n: int) -> str:
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        pad_token_id=0,
    )
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_every_prompt_generates_exactly_n_tokens_and_chars_are_counted(tiny_eval_model):
    model, tok = load_model(tiny_eval_model, device="cpu", dtype="float32")
    result = generation_speed(model, tok, PROMPTS, max_new_tokens=12)
    assert result.prompts == 3 and result.new_tokens == 36
    assert result.samples == [_plain_greedy(model, tok, p, 12) for p in PROMPTS]
    chars = [c for s in result.samples for c in s if not c.isspace()]
    assert result.characters == len(chars)
    assert result.cjk_characters == sum("\u4e00" <= c <= "\u9fff" for c in chars)
    assert result.seconds > 0 and result.chars_per_s == result.characters / result.seconds
    assert result.chars_per_token == result.characters / 36


def test_batched_generation_writes_what_one_stream_writes(tiny_eval_model):
    """Prompts of different lengths, generated together (left-padded), continue exactly as
    each does alone, and every one still gets exactly n tokens."""
    model, tok = load_model(tiny_eval_model, device="cpu", dtype="float32")
    alone = generation_speed(model, tok, PROMPTS, max_new_tokens=10, repeats=1)
    together = generation_speed(model, tok, PROMPTS, max_new_tokens=10, repeats=1, batch_size=2)
    assert together.samples == alone.samples
    assert together.new_tokens == 30 and together.characters == alone.characters


def test_evaluate_generation_answers_in_the_chat_template(tiny_eval_model):
    out = evaluate_generation(
        tiny_eval_model,
        prompts=PROMPTS[:1],
        questions=["Hi?", "你好？"],
        max_new_tokens=4,
        device="cpu",
        dtype="float32",
    )
    assert (out["device"], out["dtype"]) == ("cpu", "float32")
    assert out["generation"]["new_tokens"] == 4
    model, tok = load_model(tiny_eval_model, device="cpu", dtype="float32")
    text = tok.apply_chat_template(
        [{"role": "user", "content": "你好？"}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
    plain = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=48, do_sample=False, pad_token_id=0
    )
    expected = tok.decode(plain[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert out["chat"] == {"Hi?": out["chat"]["Hi?"], "你好？": expected}


@pytest.mark.parametrize("resident", [True, False])
def test_compared_models_write_what_each_writes_alone(
    tiny_eval_model, tiny_llama, asset, tmp_path, resident
):
    """Two models timed in alternating rounds, held together or loaded again for each turn:
    each generates and answers exactly what it does measured alone, and keeps its fastest
    round."""
    other = tiny_llama(tmp_path / "other", asset("smollm2-tokenizer"), seed=2, tied=False)
    dirs = {"a": tiny_eval_model, "b": other}
    out = compare_generation(
        dirs,
        prompts=PROMPTS,
        questions=["你好？"],
        max_new_tokens=6,
        batch_size=2,
        rounds=2,
        device="cpu",
        dtype="float32",
        resident=resident,
    )
    assert list(out) == ["a", "b"]
    for label, model_dir in dirs.items():
        alone = evaluate_generation(
            model_dir,
            prompts=PROMPTS,
            questions=["你好？"],
            max_new_tokens=6,
            device="cpu",
            dtype="float32",
        )
        got = out[label]
        assert got["generation"]["samples"] == alone["generation"]["samples"]
        assert got["chat"] == alone["chat"]
        assert len(got["rounds"]) == 2 and got["generation"]["chars_per_s"] == max(got["rounds"])
    assert out["a"]["generation"]["samples"] != out["b"]["generation"]["samples"]
    with pytest.raises(EvalError, match="rounds must be ≥ 1, got 0"):
        compare_generation(dirs, prompts=PROMPTS, rounds=0, device="cpu")


@pytest.mark.slow
def test_batched_chat_answers_are_the_answers_alone(asset):
    """The real instruct model answers questions of different lengths together: a short
    answer ends at its end token while the others go on, and each is what it is alone."""
    model, tok = load_model(asset("smollm2-135m"), device="cpu", dtype="float32")
    questions = ["What is 2 + 2?", "请用中文详细介绍一下长城的历史。", "Say hi."]
    alone = [chat_answer(model, tok, q, max_new_tokens=24) for q in questions]
    lengths = [len(tok(a, add_special_tokens=False).input_ids) for a in alone]
    assert min(lengths) < 20 and max(lengths) >= 23  # one ended early, one ran to the limit
    assert chat_answers(model, tok, questions, max_new_tokens=24, batch_size=3) == alone
    with pytest.raises(EvalError, match="batch_size must be ≥ 1, got 0"):
        chat_answers(model, tok, questions, batch_size=0)


def test_bad_generation_settings_are_named(tiny_eval_model):
    model, tok = load_model(tiny_eval_model, device="cpu", dtype="float32")
    with pytest.raises(EvalError, match="no prompts"):
        generation_speed(model, tok, [])
    with pytest.raises(EvalError, match="max_new_tokens, repeats and batch_size must be ≥ 1"):
        generation_speed(model, tok, ["x"], max_new_tokens=0)
    with pytest.raises(EvalError, match="got 4, 2, 0"):
        generation_speed(model, tok, ["x"], max_new_tokens=4, batch_size=0)


def test_prompts_are_the_first_characters_of_each_document_across_files(tmp_path):
    a, b, empty = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "empty.txt"
    first = "人民日报社论：发展是硬道理，改革开放是强国之路。全文如下：一九九八年一月一日"
    a.write_text(f"  {first}\n\n\t\nshort\n", encoding="utf-8")
    b.write_text("第三篇\n第四篇\n", encoding="utf-8")
    empty.write_text("\n  \n", encoding="utf-8")
    assert read_prompts([a, b], limit=3, chars=8) == ["人民日报社论：发", "short", "第三篇"]
    assert len(first) > PROMPT_CHARS
    assert read_prompts(a) == [first[:PROMPT_CHARS], "short"]
    with pytest.raises(EvalError, match="empty.txt: no prompts"):
        read_prompts(empty)
    with pytest.raises(EvalError, match="missing.txt: cannot read prompts"):
        read_prompts(tmp_path / "missing.txt")
