"""Prompts: a subject header, the dev examples as shots, then the question — trimmed to fit.

English benchmarks end a question with ``Answer:`` and the continuation is `` A`` (with the
space, as lm-evaluation-harness scores it); Chinese ones end with ``答案：`` and continue ``A``.
"""

from __future__ import annotations

from llamaforge_eval.loaders import Question

HEADERS = {
    "en": "The following are multiple choice questions (with answers) about {subject}.\n\n",
    "zh": "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n",
}
GSM8K_HEADER = ""


def _pretty(subject: str) -> str:
    return subject.replace("_", " ")


def format_choice(q: Question, language: str, with_answer: bool) -> str:
    lines = [q.passage] if q.passage else []
    lines.append(q.question if language == "en" else f"题目：{q.question}")
    lines += [f"{letter}. {text}" for letter, text in q.choices]
    cue = "Answer:" if language == "en" else "答案："
    text = "\n".join(lines) + "\n" + cue
    if with_answer:
        text += continuation(q.answer, language) + "\n\n"
    return text


def continuation(letter: str, language: str) -> str:
    return f" {letter}" if language == "en" else letter


def format_gsm8k(q: Question, with_answer: bool) -> str:
    text = f"Question: {q.question}\nAnswer:"
    if with_answer:
        text += f" {q.solution}\n#### {q.answer}\n\n"
    return text


def build_prefix(
    subject: str, shots: list[Question], language: str, kind: str, n_shots: int
) -> list[str]:
    """Header + shot texts, shots in order (callers drop shots from the end to fit)."""
    if kind == "generate":
        return [GSM8K_HEADER] + [format_gsm8k(q, True) for q in shots[:n_shots]]
    return [HEADERS[language].format(subject=_pretty(subject))] + [
        format_choice(q, language, True) for q in shots[:n_shots]
    ]
