"""The report's conclusions: the equal-compute rule of the control arm, noise on accuracies,
the verdict line and the targets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llamaforge_cli.pipeline.control import control_train
from llamaforge_cli.pipeline.recipe import PipelineError, load_recipe
from llamaforge_cli.pipeline.verdict import (
    accuracy_stderr,
    arm_verdict,
    checks,
    paired_bpc,
    within_noise,
)

RECIPE = """
out = "out"
base_model = "base"
[vocab]
corpus = ["zh.txt"]
[data.mix]
sources = ["zh=zh.txt"]
max_length = 128
[data.zh]
sources = ["zh=zh.txt"]
max_length = 64
[[train.stages]]
name = "embeddings"
data = ["zh"]
trainable = "embeddings"
steps = 10
micro_batch_size = 4
lr = 1e-2
new_input_lr = 5e-2
[[train.stages]]
name = "full"
data = ["mix"]
steps = 7
micro_batch_size = 2
grad_accum = 3
lr = 3e-4
warmup_ratio = 0.1
share_spelling = "both"
[control]
"""


def _model_config(folder: Path, vocab: int, tied: bool = True) -> Path:
    folder.mkdir(parents=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": tied,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _reference_parameters(folder: Path) -> int:
    """Counted on a real model: every parameter but the input embedding, plus the output
    layer once more when it is the same tensor."""
    from transformers import AutoConfig, AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder)))
    total = sum(p.numel() for p in lm.parameters())  # a tied matrix counts once here
    embed = lm.get_input_embeddings().weight
    out = lm.get_output_embeddings().weight
    return total - embed.numel() + (out.numel() if out is embed else 0)


@pytest.mark.parametrize("like", [None, "embeddings"])
def test_control_gets_equal_training_flops(tmp_path, like):
    (tmp_path / "zh.txt").write_text("中文\n", encoding="utf-8")
    text = RECIPE + (f'like = "{like}"\nlr = 5e-4\n' if like else "")
    (tmp_path / "recipe.toml").write_text(text)
    recipe = load_recipe(tmp_path / "recipe.toml")
    base = _model_config(tmp_path / "base", 1000)
    expanded = _model_config(tmp_path / "expanded", 1600)
    train, plan = control_train(recipe, expanded, base)
    n_base, n_exp = _reference_parameters(base), _reference_parameters(expanded)
    assert (plan.control_parameters, plan.expanded_parameters) == (n_base, n_exp)
    assert plan.expanded_tokens == 10 * 4 * 64 + 7 * 2 * 3 * 128
    (stage,) = train["stages"]
    template = recipe.train["stages"][1 if like is None else 0]
    per_step = stage["micro_batch_size"] * stage.get("grad_accum", 1) * 128  # mix ∪ zh: 128
    assert stage["micro_batch_size"] == template["micro_batch_size"]
    assert stage["lr"] == (5e-4 if like else template["lr"])
    assert stage["data"] == ["zh", "mix"] and stage["trainable"] == "all"
    for key in ("share_spelling", "new_input_lr"):
        assert key not in stage  # the control has no new rows
    assert plan.control_tokens == stage["steps"] * per_step
    # equal FLOPs (6 · N · tokens) within half a control step
    half_step = 0.5 * 6 * n_base * per_step
    assert abs(plan.control_flops - plan.expanded_flops) <= half_step
    assert plan.control_tokens > plan.expanded_tokens  # its output layer is smaller


def test_control_settings_are_checked(tmp_path):
    (tmp_path / "recipe.toml").write_text(RECIPE + 'like = "nope"\n')
    with pytest.raises(PipelineError, match="control.like: no train stage named 'nope'"):
        load_recipe(tmp_path / "recipe.toml")
    (tmp_path / "recipe.toml").write_text(RECIPE + "lr = -1\n")
    with pytest.raises(PipelineError, match="control.lr: Input should be greater than 0"):
        load_recipe(tmp_path / "recipe.toml")


def test_accuracy_stderr_is_lm_evals():
    assert accuracy_stderr(0.25, 101) == pytest.approx(math.sqrt(0.25 * 0.75 / 100))
    assert math.isnan(accuracy_stderr(1.0, 1))
    # 30 % vs 20 % on 10 questions: within noise; on 2,000 questions: not
    small, large = accuracy_stderr(0.3, 10), accuracy_stderr(0.2, 10)
    assert within_noise(0.3, small, 0.2, large)
    assert not within_noise(0.3, accuracy_stderr(0.3, 2000), 0.2, accuracy_stderr(0.2, 2000))
    assert within_noise(0.3, float("nan"), 0.2, 0.01)


def test_verdict_names_the_winner_and_the_margin():
    assert arm_verdict("zh", 7.0, 6.3, 1e15).startswith(
        "The expanded model wins on zh at equal training compute (1e+15 FLOPs each)"
    )
    assert "10.0% fewer" in arm_verdict("zh", 7.0, 6.3, 1e15)
    lost = arm_verdict("zh", 6.0, 6.6, None)
    assert lost.startswith("The control wins on zh:") and "costs 10.0%" in lost
    assert arm_verdict("zh", 6.0, 6.0, None).startswith("The arms tie")


def _scored(doc_chars: list[int], doc_bits: list[float]) -> dict:
    return {
        "text": {
            "zh": {
                "bits_per_char": sum(doc_bits) / sum(doc_chars),
                "doc_chars": doc_chars,
                "doc_bits": doc_bits,
            }
        }
    }


def _jackknife(chars: list[int], a: list[float], b: list[float]) -> float:
    """Standard error of Σ(a − b) / Σ chars by leaving out one document at a time."""
    n = len(chars)
    est = [(sum(a) - a[i] - sum(b) + b[i]) / (sum(chars) - chars[i]) for i in range(n)]
    mean = sum(est) / n
    return math.sqrt((n - 1) / n * sum((e - mean) ** 2 for e in est))


def test_paired_difference_and_its_noise():
    import random

    rng = random.Random(0)
    chars = [rng.randint(20, 400) for _ in range(300)]  # short and long documents
    control = [c * rng.uniform(5.5, 7.5) for c in chars]
    # the expanded model 0.05 bits/char better on average, document by document noisy
    expanded = [x - c * (0.05 + rng.gauss(0, 0.3)) for x, c in zip(control, chars, strict=True)]
    p = paired_bpc(_scored(chars, expanded), _scored(chars, control), "zh")
    assert p.documents == 300
    assert p.difference == pytest.approx((sum(expanded) - sum(control)) / sum(chars))
    assert p.stderr == pytest.approx(_jackknife(chars, expanded, control), rel=0.05)
    # 300 documents resolve 0.05 bits per character; 10 of them have several times the noise
    assert not p.within_noise()
    few = paired_bpc(_scored(chars[:10], expanded[:10]), _scored(chars[:10], control[:10]), "zh")
    assert few.stderr > 3 * p.stderr
    # documents must be the same ones for a pairing
    assert paired_bpc(_scored(chars[1:], expanded[1:]), _scored(chars, control), "zh") is None
    assert (
        paired_bpc({"text": {"zh": {"bits_per_char": 6.0}}}, _scored(chars, control), "zh") is None
    )


def test_a_difference_within_noise_is_a_tie():
    chars = [100, 100, 100, 100]
    control = _scored(chars, [600.0, 700.0, 650.0, 620.0])
    noisy = _scored(chars, [560.0, 730.0, 610.0, 650.0])  # better on two, worse on two
    p = paired_bpc(noisy, control, "zh")
    line = arm_verdict("zh", 6.425, 6.375, 1e15, p)
    assert line.startswith("The arms tie on zh") and "within noise" in line
    found = checks(target="zh", keep=[], base=control, result=noisy, control=control)
    assert not found[0].met and "within noise" in found[0].value
    clear = _scored(chars, [590.0, 690.0, 641.0, 609.0])  # better on every document
    p = paired_bpc(clear, control, "zh")
    assert not p.within_noise()
    assert arm_verdict("zh", 6.425, 6.325, 1e15, p).startswith("The expanded model wins")
    assert checks(target="zh", keep=[], base=control, result=clear, control=control)[0].met


def _res(zh_bpc, en_bpc, zh_tpc, speed=None, chat=None):
    out = {
        "text": {
            "zh": {"bits_per_char": zh_bpc, "tokens_per_char": zh_tpc},
            "en": {"bits_per_char": en_bpc, "tokens_per_char": 0.25},
        }
    }
    if speed:
        out["generation"] = {"chars_per_s": speed}
    if chat:
        out["chat"] = chat
    return out


def test_targets_are_met_or_missed_by_the_numbers():
    base = _res(8.0, 1.40, 1.8, speed=10.0)
    good = _res(7.1, 1.46, 0.7, speed=25.0, chat={"Q?": "It is Paris."})
    found = checks(
        target="zh",
        keep=["en"],
        base=base,
        result=good,
        control=_res(7.3, 1.41, 1.8),
        chat_expect="paris",
        chat_question="Q?",
    )
    assert [c.met for c in found] == [True, True, True, True, True, True]
    assert "below the control's" in found[0].target and "7.100 vs 7.300" == found[0].value
    bad = _res(7.3, 1.48, 1.2, speed=15.0, chat={"Q?": "L'Étoile."})
    found = checks(
        target="zh",
        keep=["en"],
        base=base,
        result=bad,
        control=_res(7.2, 1.41, 1.8),
        chat_expect="Paris",
        chat_question="Q?",
    )
    # 8.0 → 7.3 is 8.75 % lower (< 10 %), en +5.7 %, 1.8 → 1.2 is 33 % fewer, 1.5× speed
    assert [c.met for c in found] == [False, False, False, False, False, False]
    # without a control arm there is no control check
    assert len(checks(target="zh", keep=[], base=base, result=good, control=None)) == 3
