"""Every metric against a plain reference (one question at a time, no batching, no cache)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from llamaforge_eval import (
    EvalError,
    Runner,
    evaluate_benchmark,
    evaluate_text,
    gsm8k_number,
    load_benchmark,
    load_model,
)
from llamaforge_eval.prompts import build_prefix, continuation, format_choice
from llamaforge_eval.windows import windows

KINDS = ("mmlu", "cmmlu", "ceval", "agieval", "gaokao")


def _reference_predictions(model, tok, bench, n_shots, metric):
    """Plain: the whole prompt as one string, one forward pass per question."""
    preds = {}
    adds_bos = tok("a").input_ids[0] == tok.bos_token_id
    for subject in bench.subjects:
        prefix = "".join(
            build_prefix(subject.name, subject.shots, bench.language, "choice", n_shots)
        )
        letters = [letter for letter, _ in subject.questions[0].choices]
        out = []
        for q in subject.questions:
            prompt = prefix + format_choice(q, bench.language, False)
            ids = tok(prompt, add_special_tokens=False).input_ids
            if adds_bos:
                ids = [tok.bos_token_id, *ids]
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1].float()
            scores = []
            for letter in letters:
                full = tok(
                    prompt + continuation(letter, bench.language), add_special_tokens=False
                ).input_ids
                cont = full[len(ids) - int(adds_bos) :]
                assert len(cont) == 1
                value = (
                    F.log_softmax(logits, -1)[cont[0]] if metric == "loglik" else logits[cont[0]]
                )
                scores.append(float(value))
            out.append(letters[max(range(4), key=scores.__getitem__)])
        preds[subject.name] = out
    return preds


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("metric", ["first-token", "loglik"])
def test_batched_cached_predictions_equal_the_reference(kind, metric, fixtures, tiny_eval_model):
    model, tok = load_model(tiny_eval_model)
    bench = load_benchmark(kind, fixtures / kind)
    result = evaluate_benchmark(Runner(model, tok, batch_size=3), bench, n_shots=2, metric=metric)
    reference = _reference_predictions(model, tok, bench, 2, metric)
    for name, subject in result["subjects"].items():
        assert subject["predictions"] == reference[name], (kind, name)
    assert result["questions"] == sum(len(v) for v in reference.values())


def test_skipped_items_are_counted(fixtures):
    agieval = load_benchmark("agieval", fixtures / "agieval")
    assert all(s.skipped == 1 for s in agieval.subjects)  # the 5-option item
    gaokao = load_benchmark("gaokao", fixtures / "gaokao")
    assert all(s.skipped == 1 for s in gaokao.subjects)  # the multi-answer item
    mmlu = load_benchmark("mmlu", fixtures / "mmlu", subjects=["geography"])
    assert [s.name for s in mmlu.subjects] == ["geography"] and len(mmlu.subjects[0].shots) == 2


def test_gsm8k_generation_and_extraction(fixtures, tiny_eval_model):
    assert gsm8k_number("so 3 + 4 = 7.\n#### 1,234") == "1234"
    assert gsm8k_number("The answer is 42.") == "42"
    assert gsm8k_number("no number") is None
    model, tok = load_model(tiny_eval_model)
    bench = load_benchmark("gsm8k", fixtures / "gsm8k")
    result = evaluate_benchmark(Runner(model, tok), bench, n_shots=2)
    assert result["metric"] == "exact-match" and result["questions"] == 3


def _plain_bits_per_char(model, tok, docs: list[str]) -> float:
    """Each document alone after BOS (else EOS), one forward pass, every token scored."""
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    nll = 0.0
    for d in docs:
        ids = torch.tensor([[start, *tok(d, add_special_tokens=False).input_ids]])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        nll += float(F.cross_entropy(logits, ids[0, 1:], reduction="sum"))
    return nll / math.log(2) / sum(len(d) for d in docs)


def test_bits_per_character_matches_a_plain_computation(tiny_eval_model, tmp_path):
    model, tok = load_model(tiny_eval_model)
    docs = ["中华人民共和国成立了。", "The quick brown fox jumps over the lazy dog."]
    (tmp_path / "t.txt").write_text("\n".join(docs), encoding="utf-8")
    got = evaluate_text(Runner(model, tok), {"mixed": [tmp_path / "t.txt"]})["mixed"]
    chars = sum(len(d) for d in docs)
    assert got["bits_per_char"] == pytest.approx(_plain_bits_per_char(model, tok, docs), rel=1e-5)
    assert got["tokens_per_char"] == pytest.approx(
        sum(len(tok(d, add_special_tokens=False).input_ids) for d in docs) / chars
    )
    # each document's own bits, for paired comparisons between models
    assert got["doc_chars"] == [len(d) for d in docs]
    for d, b in zip(docs, got["doc_bits"], strict=True):
        assert b == pytest.approx(_plain_bits_per_char(model, tok, [d]) * len(d), abs=1e-3)


def test_max_docs_per_label(tiny_eval_model, tmp_path):
    """One limit for every label, or label → limit (a label left out keeps all its documents);
    a limit for a label that has no text is refused before the model loads."""
    from llamaforge_eval import evaluate_model

    zh, en = tmp_path / "zh.txt", tmp_path / "en.txt"
    zh.write_text("第一篇。\n第二篇，长一点。\n第三篇\n", encoding="utf-8")
    en.write_text("one\ntwo words\nthree more words\n", encoding="utf-8")
    texts = {"zh": [zh], "en": [en]}
    model, tok = load_model(tiny_eval_model)
    runner = Runner(model, tok)
    both = evaluate_text(runner, texts, max_docs=2)
    assert (both["zh"]["documents"], both["en"]["documents"]) == (2, 2)
    apart = evaluate_text(runner, texts, max_docs={"zh": 1})
    assert (apart["zh"]["documents"], apart["en"]["documents"]) == (1, 3)
    assert apart["zh"]["doc_bits"] == both["zh"]["doc_bits"][:1]
    with pytest.raises(EvalError, match="max_docs: no text labelled 'fr'"):
        evaluate_model("no-such-model", texts=texts, max_docs={"fr": 1})
    with pytest.raises(EvalError, match="max_docs must be ≥ 1, got 0 for 'en'"):
        evaluate_model("no-such-model", texts=texts, max_docs={"en": 0})


def test_windows_cover_every_token_once():
    for n in (0, 1, 2, 5, 16, 17, 100):
        for length in (2, 3, 16):
            targets = [t for lo, hi in windows(n, length) for t in range(lo + 1, hi)]
            assert targets == list(range(1, n)), (n, length)
            assert all(hi - lo <= length for lo, hi in windows(n, length))
    with pytest.raises(ValueError, match="at least 2"):
        windows(10, 1)


def test_long_documents_are_scored_in_windows_token_by_token(tiny_eval_model):
    """A document longer than the model: every token scored once, the first after the start
    token; each window's first target sees the previous token."""
    model, tok = load_model(tiny_eval_model)
    doc = "人民日报 reports, line after line: 中华人民共和国成立了。" * 6
    ids = tok(doc, add_special_tokens=False).input_ids
    assert len(ids) > 40
    ((total, count),) = Runner(model, tok, max_length=16).document_nll([doc])
    assert count == len(ids)
    # the same windows by hand: slices of [start, *ids] of 16, overlapping by one
    full = torch.tensor([[tok.bos_token_id, *ids]])
    want = 0.0
    for lo in range(0, full.shape[1] - 1, 15):
        chunk = full[:, lo : lo + 16]
        with torch.no_grad():
            logits = model(chunk).logits[0, :-1]
        want += float(F.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
    assert total == pytest.approx(want, rel=1e-5)


def test_layout_errors_name_the_expected_layout(fixtures, tmp_path, tiny_eval_model):
    with pytest.raises(EvalError, match=r"does not look like mmlu: expected data/\{dev,val,test\}"):
        load_benchmark("mmlu", fixtures / "cmmlu")
    bad = tmp_path / "mmlu"
    shutil.copytree(fixtures / "mmlu", bad)
    path = bad / "data" / "test" / "geography_test.csv"
    path.write_text(path.read_text() + "Too,few,columns\n")
    with pytest.raises(EvalError, match=r"geography_test\.csv:6: 3 columns, expected 6"):
        load_benchmark("mmlu", bad)
    skipped = load_benchmark("mmlu", bad, strict=False)
    assert skipped.subjects[1].skipped == 1
    path.write_text("Q?,a,b,c,d,E\n")
    with pytest.raises(EvalError, match=r"answer 'E' is not one of A, B, C, D"):
        load_benchmark("mmlu", bad)
    path.write_text("")
    with pytest.raises(EvalError, match="subject 'geography' has no questions"):
        load_benchmark("mmlu", bad)
    with pytest.raises(EvalError, match="no subject\\(s\\) history"):
        load_benchmark("mmlu", fixtures / "mmlu", subjects=["history"])
    no_tok = tmp_path / "no-tok"
    no_tok.mkdir()
    (no_tok / "config.json").write_text((tiny_eval_model / "config.json").read_text())
    with pytest.raises(EvalError, match="no tokenizer"):
        load_model(no_tok)


def test_cli_run_and_compare(fixtures, tiny_eval_model, asset, tmp_path, capsys, monkeypatch):
    from llamaforge_cli.main import main

    monkeypatch.setenv("COLUMNS", "160")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    held = asset("people-daily") / "heldout.txt"
    short = tmp_path / "zh.txt"
    short.write_text("\n".join(held.read_text(encoding="utf-8").splitlines()[:5]))
    args = [
        "eval",
        "run",
        str(tiny_eval_model),
        "--bench",
        f"mmlu={fixtures / 'mmlu'}",
        "--bench",
        f"cmmlu={fixtures / 'cmmlu'}",
        "--text",
        f"zh={short}",
        "--shots",
        "2",
    ]
    assert main([*args, "-o", str(a)]) == 0
    assert main([*args, "--metric", "loglik", "-o", str(b)]) == 0
    data = json.loads(a.read_text())
    assert set(data["benchmarks"]) == {"mmlu", "cmmlu"} and "zh" in data["text"]
    capsys.readouterr()
    assert main(["eval", "compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "geography" in out and "bits_per_char" in out and "pt" in out
    assert main(["eval", "run", str(tiny_eval_model), "--bench", f"mmlu={fixtures}"]) == 2
    assert "does not look like mmlu" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_matches_the_reference(fixtures, asset):
    model, tok = load_model(asset("smollm2-135m"))
    bench = load_benchmark("mmlu", fixtures / "mmlu")
    result = evaluate_benchmark(Runner(model, tok, batch_size=4), bench, n_shots=2, metric="loglik")
    reference = _reference_predictions(model, tok, bench, 2, "loglik")
    for name, subject in result["subjects"].items():
        assert subject["predictions"] == reference[name]
    # A 135M model is near chance on such questions: compare predictions, not accuracy.


@pytest.mark.slow
def test_two_processes_give_the_same_predictions(fixtures, tiny_eval_model):
    from llamaforge_eval.parallel import evaluate_parallel

    benches = [
        load_benchmark("mmlu", fixtures / "mmlu"),
        load_benchmark("cmmlu", fixtures / "cmmlu"),
    ]
    model, tok = load_model(tiny_eval_model)
    single = {
        b.name: evaluate_benchmark(Runner(model, tok), b, n_shots=2, metric="loglik")
        for b in benches
    }
    multi = evaluate_parallel(tiny_eval_model, benches, n_shots=2, metric="loglik", nproc=2)
    for name in single:
        assert multi[name]["accuracy"] == single[name]["accuracy"]
        for subj, res in single[name]["subjects"].items():
            assert multi[name]["subjects"][subj]["predictions"] == res["predictions"]


@pytest.fixture(scope="module")
def vllm_runner(asset):
    from llamaforge_eval.vllm_runner import VllmRunner

    # vLLM sizes its KV cache to a share of all RAM by default; two engines share this process.
    return VllmRunner(
        asset("smollm2-135m"), max_length=2048, enforce_eager=True, kv_cache_memory_bytes=1 << 30
    )


@pytest.mark.vllm
@pytest.mark.parametrize("metric", ["first-token", "loglik"])
@pytest.mark.parametrize("kind", ["mmlu", "cmmlu"])
def test_vllm_backend_matches_the_reference(kind, metric, fixtures, asset, vllm_runner):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = asset("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    bench = load_benchmark(kind, fixtures / kind)
    result = evaluate_benchmark(vllm_runner, bench, n_shots=2, metric=metric)
    reference = _reference_predictions(model, tok, bench, 2, metric)
    for name, subject in result["subjects"].items():
        assert subject["predictions"] == reference[name], (kind, name)


@pytest.mark.vllm
def test_vllm_backend_generation_and_bits_per_character(fixtures, asset, vllm_runner, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = asset("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    prompt = "Question: What is 2 + 3?\nAnswer:"
    ids = torch.tensor([tok(prompt, add_special_tokens=False).input_ids])
    plain = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=12,
        do_sample=False,
        pad_token_id=tok.eos_token_id,
    )
    expected = tok.decode(plain[0, ids.shape[1] :], skip_special_tokens=True).split("\n")[0]
    assert vllm_runner.generate([prompt], 12, stop=["\n"]) == [expected]
    assert (
        evaluate_benchmark(vllm_runner, load_benchmark("gsm8k", fixtures / "gsm8k"), n_shots=2)[
            "questions"
        ]
        == 3
    )
    docs = ["中华人民共和国成立了。", "The quick brown fox jumps over the lazy dog."]
    (tmp_path / "t.txt").write_text("\n".join(docs), encoding="utf-8")
    got = evaluate_text(vllm_runner, {"mixed": [tmp_path / "t.txt"]})["mixed"]
    assert got["bits_per_char"] == pytest.approx(_plain_bits_per_char(model, tok, docs), rel=1e-3)


def test_vllm_args_parse_values_and_refuse_bad_items():
    from llamaforge_eval.vllm_runner import parse_vllm_args

    assert parse_vllm_args(["max_model_len=4096", "dtype=bfloat16"]) == {
        "max_model_len": 4096,
        "dtype": "bfloat16",
    }
    with pytest.raises(EvalError, match="expected KEY=VALUE"):
        parse_vllm_args(["=3"])


def _greedy(model, tok, prompt: str, n: int) -> str:
    """Plain greedy decoding: one full forward pass per new token."""
    adds_bos = tok("a").input_ids[0] == tok.bos_token_id
    ids = tok(prompt, add_special_tokens=False).input_ids
    ids = [tok.bos_token_id, *ids] if adds_bos else ids
    start = len(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return tok.decode(ids[start:], skip_special_tokens=True)


@pytest.mark.parametrize("kind", ["agieval", "gaokao"])
def test_agieval_combined_equals_first_token_then_generation(kind, fixtures, tiny_eval_model):
    """``agieval-combined`` (Colossal-LLaMA's AGIEval scoring): the first-token choice, and a
    question it gets wrong still counts when the greedy answer starts with the right letter."""
    model, tok = load_model(tiny_eval_model)
    bench = load_benchmark(kind, fixtures / kind)
    result = evaluate_benchmark(
        Runner(model, tok, batch_size=3), bench, n_shots=0, metric="agieval-combined"
    )
    first = _reference_predictions(model, tok, bench, 0, "first-token")
    rescued = 0
    for subject in bench.subjects:
        expected = []
        for q, pred in zip(subject.questions, first[subject.name], strict=True):
            if pred != q.answer:
                prompt = format_choice(q, bench.language, False)
                generated = _greedy(model, tok, prompt, 4).split("\n")[0].strip()
                if generated[:1].upper() == q.answer:
                    pred, rescued = q.answer, rescued + 1
            expected.append(pred)
        assert result["subjects"][subject.name]["predictions"] == expected
    assert result["metric"] == "agieval-combined"
    correct = sum(
        p == q.answer
        for s in bench.subjects
        for p, q in zip(first[s.name], s.questions, strict=True)
    )
    assert result["accuracy"] == (correct + rescued) / result["questions"]


def test_auto_batch_size_gives_the_same_predictions(fixtures, tiny_eval_model):
    """``--batch-size auto`` sizes batches to the memory; predictions do not change."""
    model, tok = load_model(tiny_eval_model)
    bench = load_benchmark("mmlu", fixtures / "mmlu")
    fixed = evaluate_benchmark(Runner(model, tok, batch_size=2), bench, n_shots=2, metric="loglik")
    auto_runner = Runner(model, tok, batch_size=None)
    auto = evaluate_benchmark(auto_runner, bench, n_shots=2, metric="loglik")
    for name, subject in fixed["subjects"].items():
        assert auto["subjects"][name]["predictions"] == subject["predictions"]
    assert 1 <= auto_runner._auto_batch(prefix=500, longest=300) <= 64
