"""Evaluate a model on benchmarks and on held-out text; results as a JSON-ready dict."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llamaforge_eval.errors import EvalError
from llamaforge_eval.loaders import Benchmark, gsm8k_number
from llamaforge_eval.prompts import build_prefix, continuation, format_choice, format_gsm8k
from llamaforge_eval.runner import Runner, bits

METRICS = ("first-token", "loglik", "agieval-combined")


@dataclass
class SubjectResult:
    n: int
    correct: int
    skipped: int
    shots: int
    predictions: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


def _fit_shots(
    runner: Runner, subject, language: str, kind: str, n_shots: int, questions: list[str]
) -> int:
    """Most shots (≤ n_shots) such that prefix + the longest question fits the model."""
    longest = max(questions, key=len)
    for k in range(min(n_shots, len(subject.shots)), -1, -1):
        prefix = "".join(build_prefix(subject.name, subject.shots, language, kind, k))
        if len(runner.encode(prefix + longest)) + 8 <= runner.max_length:
            return k
    raise EvalError(
        f"subject {subject.name}: a question does not fit the model's "
        f"{runner.max_length} tokens even without shots"
    )


def evaluate_choice(
    runner: Runner, bench: Benchmark, *, n_shots: int, metric: str, gen_tokens: int = 4
) -> dict[str, SubjectResult]:
    if metric not in METRICS:
        raise EvalError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    out = {}
    for subject in bench.subjects:
        texts = [format_choice(q, bench.language, False) for q in subject.questions]
        k = _fit_shots(runner, subject, bench.language, bench.kind, n_shots, texts)
        prefix = "".join(build_prefix(subject.name, subject.shots, bench.language, bench.kind, k))
        letters = [letter for letter, _ in subject.questions[0].choices]
        conts = [continuation(letter, bench.language) for letter in letters]
        scores = runner.choice_scores(prefix, texts, conts)
        preds = []
        for q, s, text in zip(subject.questions, scores, texts, strict=True):
            values = s.loglik if metric == "loglik" else s.first_token
            pred = letters[max(range(len(values)), key=values.__getitem__)]
            if metric == "agieval-combined" and pred != q.answer:
                gen = runner.generate([prefix + text], gen_tokens, stop=["\n"])[0].strip()
                if gen[:1].upper() == q.answer:
                    pred = q.answer
            preds.append(pred)
        correct = sum(p == q.answer for p, q in zip(preds, subject.questions, strict=True))
        out[subject.name] = SubjectResult(len(preds), correct, subject.skipped, k, preds)
    return out


def evaluate_gsm8k(
    runner: Runner, bench: Benchmark, *, n_shots: int, max_new_tokens: int = 256
) -> dict[str, SubjectResult]:
    subject = bench.subjects[0]
    texts = [format_gsm8k(q, False) for q in subject.questions]
    k = _fit_shots(runner, subject, "en", "generate", n_shots, texts)
    prefix = "".join(build_prefix(subject.name, subject.shots, "en", "generate", k))
    gens = runner.generate(
        [prefix + t for t in texts], max_new_tokens, stop=["\n\nQuestion:", "Question:"]
    )
    preds = [gsm8k_number(g) or "" for g in gens]
    correct = sum(p == q.answer for p, q in zip(preds, subject.questions, strict=True))
    return {subject.name: SubjectResult(len(preds), correct, subject.skipped, k, preds)}


def evaluate_benchmark(
    runner: Runner, bench: Benchmark, *, n_shots: int, metric: str = "first-token"
) -> dict:
    start = time.perf_counter()
    if bench.kind == "generate":
        subjects = evaluate_gsm8k(runner, bench, n_shots=n_shots)
        metric = "exact-match"
    else:
        subjects = evaluate_choice(runner, bench, n_shots=n_shots, metric=metric)
    n = sum(s.n for s in subjects.values())
    correct = sum(s.correct for s in subjects.values())
    return {
        "metric": metric,
        "shots": n_shots,
        "questions": n,
        "skipped": sum(s.skipped for s in subjects.values()),
        "accuracy": correct / n if n else 0.0,
        "seconds": time.perf_counter() - start,
        "subjects": {name: {**asdict(s), "accuracy": s.accuracy} for name, s in subjects.items()},
    }


def read_documents(label: str, paths: list[Path], max_docs: int | None = None) -> list[str]:
    """The non-blank lines (documents) of ``paths``, the first ``max_docs`` when given."""
    docs: list[str] = []
    for path in paths:
        try:
            docs += [x for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
        except (FileNotFoundError, UnicodeDecodeError) as exc:
            raise EvalError(f"{path}: cannot read text ({exc})") from None
    if not docs:
        raise EvalError(f"text {label!r}: no documents")
    return docs[:max_docs] if max_docs else docs


def docs_limit(max_docs: int | Mapping[str, int] | None, label: str) -> int | None:
    """How many documents of ``label`` to score: ``max_docs`` itself, or its entry for
    ``label`` when it maps labels to limits (a label it leaves out: all)."""
    return max_docs.get(label) if isinstance(max_docs, Mapping) else max_docs


def evaluate_text(
    runner: Runner,
    files: dict[str, list[Path]],
    max_docs: int | Mapping[str, int] | None = None,
) -> dict:
    """Tokens per character and bits per character per labelled group of text files (the
    first ``max_docs`` documents of each group when given — one limit for all, or label →
    limit), with each document's characters and bits (``doc_chars``, ``doc_bits``) for
    paired comparisons."""
    out = {}
    for label, paths in files.items():
        docs = read_documents(label, paths, docs_limit(max_docs, label))
        scored = runner.document_nll(docs)
        nll, count = sum(n for n, _ in scored), sum(c for _, c in scored)
        chars = sum(len(d) for d in docs)
        tokens = sum(len(runner.tok(d, add_special_tokens=False).input_ids) for d in docs)
        out[label] = {
            "documents": len(docs),
            "characters": chars,
            "tokens": tokens,
            "tokens_per_char": tokens / chars,
            "bits_per_char": bits(nll) / chars,
            "bits_per_token": bits(nll) / count,
            # per document, so that two models scored on the same text compare pairwise
            "doc_chars": [len(d) for d in docs],
            "doc_bits": [round(bits(n), 4) for n, _ in scored],
        }
    return out


def evaluate_model(
    model: str | Path,
    *,
    benchmarks: dict[str, Path] | None = None,
    texts: dict[str, list[Path]] | None = None,
    shots: int = 5,
    metric: str = "first-token",
    subjects: list[str] | None = None,
    batch_size: int | str = 8,
    nproc: int = 1,
    max_docs: int | Mapping[str, int] | None = None,
    backend: str = "transformers",
    vllm_args: dict | None = None,
    device: str = "auto",
    dtype: str = "auto",
    on_status: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate the HF model dir ``model`` on benchmarks (kind → dir in its official layout)
    and held-out text (label → files); returns the results dict that :func:`write_results`
    writes. ``device`` / ``dtype``: see :mod:`llamaforge_eval.device` (``auto``: the GPU when
    there is one, the checkpoint's bf16 / fp16 where the device computes it natively); the
    results say which were used. Every input is checked before the model loads."""
    from llamaforge_eval.loaders import load_benchmark

    benchmarks, texts = benchmarks or {}, texts or {}
    status = on_status or (lambda _message: None)
    if not benchmarks and not texts:
        raise EvalError("nothing to evaluate: give benchmarks (KIND=DIR) and/or text (LABEL=FILE)")
    if backend not in ("transformers", "vllm"):
        raise EvalError(f"backend {backend!r} is not one of transformers, vllm")
    if backend == "vllm" and nproc > 1:
        raise EvalError("nproc is for the transformers backend; vLLM batches by itself")
    if metric not in METRICS:
        raise EvalError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if batch_size == "auto":
        batch_size = None  # the runner sizes batches to the memory
    elif not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise EvalError(f"batch_size must be ≥ 1 or 'auto', got {batch_size!r}")
    for name, value, low in (("shots", shots, 0), ("nproc", nproc, 1)):
        if value < low:
            raise EvalError(f"{name} must be ≥ {low}, got {value}")
    if isinstance(max_docs, Mapping):
        for label, limit in max_docs.items():
            if label not in texts:
                raise EvalError(f"max_docs: no text labelled {label!r} (text: {', '.join(texts)})")
            if limit < 1:
                raise EvalError(f"max_docs must be ≥ 1, got {limit} for {label!r}")
    elif max_docs is not None and max_docs < 1:
        raise EvalError(f"max_docs must be ≥ 1, got {max_docs}")
    from llamaforge_eval.device import resolve_device, resolve_dtype

    loaded = [
        load_benchmark(kind, folder, subjects=subjects) for kind, folder in benchmarks.items()
    ]
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, Path(model), device)
    if backend == "vllm":
        from llamaforge_eval.vllm_runner import VllmRunner

        runner = VllmRunner(model, **{"dtype": dtype, **(vllm_args or {})})
    else:
        from llamaforge_eval.runner import load_model

        model_obj, tok = load_model(model, device=device, dtype=dtype)
        runner = Runner(model_obj, tok, batch_size=batch_size)
    results: dict = {
        "model": str(model),
        "device": device if nproc <= 1 or not loaded else f"{device} ({nproc} processes)",
        "dtype": dtype,
        "benchmarks": {},
        "text": {},
    }
    start = time.perf_counter()
    if nproc > 1 and loaded:
        from llamaforge_eval.parallel import evaluate_parallel

        status(f"{len(loaded)} benchmarks on {nproc} processes")
        results["benchmarks"] = evaluate_parallel(
            model,
            loaded,
            n_shots=shots,
            metric=metric,
            nproc=nproc,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
        )
    for b in loaded if nproc <= 1 else []:
        status(f"{b.name}: {sum(len(s.questions) for s in b.subjects)} questions")
        results["benchmarks"][b.name] = evaluate_benchmark(runner, b, n_shots=shots, metric=metric)
    if texts:
        status("held-out text")
        results["text"] = evaluate_text(runner, texts, max_docs=max_docs)
    results["seconds"] = time.perf_counter() - start
    return results
