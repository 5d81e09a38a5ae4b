"""Benchmarks from local directories in their official layouts (nothing is downloaded).

| benchmark | layout |
|---|---|
| mmlu   | ``data/{dev,val,test}/{subject}_{split}.csv``, no header: question, A, B, C, D, answer |
| cmmlu  | ``{dev,test}/{subject}.csv``, header ``,Question,A,B,C,D,Answer`` |
| ceval  | ``{dev,val,test}/{subject}_{split}.csv``, header id,question,A,B,C,D,answer,explanation |
| agieval| ``*.jsonl`` lines {passage, question, options: ["(A)...", ...], label or answer} |
| gaokao | ``*.json`` {"keywords": ..., "example": [{question, answer: [...], ...}]} |
| gsm8k  | ``test.jsonl`` (scored), ``train.jsonl`` (shots): {question, answer: "... #### N"} |

A row that breaks its layout (wrong column count, answer not in A–D) raises with file and line,
or with ``strict=False`` is skipped and counted in the subject's ``skipped``.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from llamaforge_eval.errors import EvalError

LETTERS = ("A", "B", "C", "D")
LAYOUTS = {
    "mmlu": "data/{dev,val,test}/{subject}_{split}.csv (no header: question,A,B,C,D,answer)",
    "cmmlu": "{dev,test}/{subject}.csv (header: ,Question,A,B,C,D,Answer)",
    "ceval": "{dev,val,test}/{subject}_{split}.csv (header: id,question,A,B,C,D,answer,"
    "explanation)",
    "agieval": "*.jsonl (passage, question, options, label or answer)",
    "gaokao": '*.json ({"keywords": ..., "example": [{"question", "answer": [...]}]})',
    "gsm8k": "test.jsonl and train.jsonl ({question, answer ending in #### N})",
}


@dataclass(frozen=True)
class Question:
    """One item. Multiple choice has ``choices`` (letter → text); GSM8K has none."""

    question: str
    answer: str  # a letter, or GSM8K's number
    choices: tuple[tuple[str, str], ...] = ()
    passage: str = ""
    solution: str = ""  # GSM8K worked answer (for shots)


@dataclass
class Subject:
    name: str
    questions: list[Question]
    shots: list[Question] = field(default_factory=list)
    skipped: int = 0


@dataclass
class Benchmark:
    name: str
    kind: str  # "choice" or "generate"
    subjects: list[Subject]
    language: str = "en"


def _csv_rows(path: Path, header: bool, width: int, strict: bool, where_skip: list[int]):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvalError(f"{path}: not UTF-8 ({exc.reason})") from None
    reader = csv.reader(text.splitlines())
    for lineno, row in enumerate(reader, start=1):
        if header and lineno == 1:
            continue
        if not row:
            continue
        if len(row) != width:
            if strict:
                raise EvalError(f"{path}:{lineno}: {len(row)} columns, expected {width}")
            where_skip.append(lineno)
            continue
        yield lineno, row


def _choice(path, lineno, question, options, answer, strict, skipped) -> Question | None:
    answer = answer.strip().upper()
    if answer not in LETTERS:
        if strict:
            raise EvalError(f"{path}:{lineno}: answer {answer!r} is not one of A, B, C, D")
        skipped.append(lineno)
        return None
    return Question(
        question=question.strip(),
        answer=answer,
        choices=tuple(zip(LETTERS, (o.strip() for o in options), strict=True)),
    )


def _subjects_from_csv(
    root: Path,
    pattern: str,
    split_dirs: tuple[str, str],
    header: bool,
    columns: slice,
    width: int,
    strict: bool,
    suffix: str = "",
    dev_suffix: str = "",
) -> list[Subject]:
    test_dir, dev_dir = (root / split_dirs[0]), (root / split_dirs[1])
    files = sorted(test_dir.glob(pattern))
    subjects = []
    for path in files:
        name = path.stem[: -len(suffix)] if suffix and path.stem.endswith(suffix) else path.stem
        skipped: list[int] = []
        qs = []
        for lineno, row in _csv_rows(path, header, width, strict, skipped):
            q, a, b, c, d, ans = row[columns]
            item = _choice(path, lineno, q, (a, b, c, d), ans, strict, skipped)
            if item:
                qs.append(item)
        shots = []
        dev = dev_dir / f"{name}{dev_suffix}.csv"
        if dev.is_file():
            for lineno, row in _csv_rows(dev, header, width, strict, []):
                q, a, b, c, d, ans = row[columns]
                item = _choice(dev, lineno, q, (a, b, c, d), ans, strict, [])
                if item:
                    shots.append(item)
        subjects.append(Subject(name, qs, shots, skipped=len(skipped)))
    return subjects


def _require(root: Path, kind: str, ok: bool) -> None:
    if not ok:
        raise EvalError(f"{root} does not look like {kind}: expected {LAYOUTS[kind]}")


def load_benchmark(
    kind: str, root: str | Path, *, subjects: list[str] | None = None, strict: bool = True
) -> Benchmark:
    """Load benchmark ``kind`` from ``root`` (its official layout); optionally some subjects."""
    root = Path(root)
    if kind not in LAYOUTS:
        raise EvalError(f"unknown benchmark {kind!r}; choose one of {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise EvalError(f"{root}: no such benchmark dir (expected {LAYOUTS[kind]})")
    if kind == "mmlu":
        _require(root, kind, (root / "data" / "test").is_dir())
        subs = _subjects_from_csv(
            root / "data",
            "*_test.csv",
            ("test", "dev"),
            False,
            slice(0, 6),
            6,
            strict,
            suffix="_test",
            dev_suffix="_dev",
        )
        bench = Benchmark("mmlu", "choice", subs)
    elif kind == "cmmlu":
        _require(root, kind, (root / "test").is_dir())
        subs = _subjects_from_csv(root, "*.csv", ("test", "dev"), True, slice(1, 7), 7, strict)
        bench = Benchmark("cmmlu", "choice", subs, language="zh")
    elif kind == "ceval":
        split = "val" if (root / "val").is_dir() else "test"
        _require(root, kind, (root / split).is_dir())
        subs = _subjects_from_csv(
            root,
            f"*_{split}.csv",
            (split, "dev"),
            True,
            slice(1, 7),
            8,
            strict,
            suffix=f"_{split}",
            dev_suffix="_dev",
        )
        bench = Benchmark("ceval", "choice", subs, language="zh")
    elif kind == "agieval":
        files = sorted(root.glob("*.jsonl"))
        _require(root, kind, bool(files))
        bench = Benchmark("agieval", "choice", [_agieval(p, strict) for p in files])
    elif kind == "gaokao":
        files = sorted(root.rglob("*.json"))
        _require(root, kind, bool(files))
        bench = Benchmark("gaokao", "choice", [_gaokao(p, strict) for p in files], language="zh")
    else:
        _require(root, kind, (root / "test.jsonl").is_file())
        bench = Benchmark("gsm8k", "generate", [_gsm8k(root)])
    if subjects:
        unknown = sorted(set(subjects) - {s.name for s in bench.subjects})
        if unknown:
            raise EvalError(
                f"{kind}: no subject(s) {', '.join(unknown)} in {root}; found "
                f"{', '.join(s.name for s in bench.subjects)}"
            )
        bench.subjects = [s for s in bench.subjects if s.name in subjects]
    for s in bench.subjects:
        if not s.questions:
            raise EvalError(f"{kind}: subject {s.name!r} has no questions ({root})")
    if not bench.subjects:
        raise EvalError(f"{root}: no subjects found (expected {LAYOUTS[kind]})")
    return bench


def _jsonl(path: Path):
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None


_OPTION = re.compile(r"^\s*\(?([A-E])\)?[.:、．]?\s*")


def _agieval(path: Path, strict: bool) -> Subject:
    qs, skipped = [], []
    for lineno, rec in _jsonl(path):
        options = rec.get("options") or []
        label = rec.get("label") or rec.get("answer") or ""
        if isinstance(label, list):
            label = label[0] if len(label) == 1 else ""
        if len(options) != 4 or not isinstance(label, str):
            skipped.append(lineno)  # Colossal-LLaMA scores 4-choice questions only
            continue
        texts = [_OPTION.sub("", o, count=1) for o in options]
        item = _choice(path, lineno, rec.get("question", ""), texts, label, strict, skipped)
        if item:
            qs.append(
                Question(item.question, item.answer, item.choices, passage=rec.get("passage") or "")
            )
    return Subject(path.stem, qs, [], skipped=len(skipped))


def _gaokao(path: Path, strict: bool) -> Subject:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        examples = data["example"]
    except (ValueError, KeyError, TypeError) as exc:
        raise EvalError(f"{path}: not a GAOKAO-Bench file ({exc})") from None
    qs, skipped = [], []
    for k, ex in enumerate(examples, start=1):
        answer = ex.get("answer") or []
        text = ex.get("question", "")
        found = re.findall(r"(?:^|\n)\s*([A-D])[.．、:：]\s*(.+)", text)
        if len(answer) != 1 or len(found) != 4:
            skipped.append(k)  # 4-choice, single-answer questions only (as Colossal-LLaMA)
            continue
        stem = re.split(r"(?:^|\n)\s*A[.．、:：]", text, maxsplit=1)[0]
        item = _choice(path, k, stem, [t for _, t in found], answer[0], strict, skipped)
        if item:
            qs.append(item)
    return Subject(path.stem, qs, [], skipped=len(skipped))


def gsm8k_number(text: str) -> str | None:
    """The final numeric answer: after ``####`` if present, else the last number; commas removed."""
    tail = text.split("####")[-1] if "####" in text else text
    nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", tail)
    if not nums:
        return None
    value = nums[-1 if "####" not in text else 0].replace(",", "").rstrip(".")
    return value[:-2] if value.endswith(".0") else value


def _gsm8k(root: Path) -> Subject:
    def read(path: Path) -> list[Question]:
        out = []
        for lineno, rec in _jsonl(path):
            number = gsm8k_number(rec.get("answer", ""))
            if number is None or "####" not in rec.get("answer", ""):
                raise EvalError(f"{path}:{lineno}: field 'answer' must end in '#### N'")
            out.append(
                Question(
                    rec["question"].strip(), number, solution=rec["answer"].split("####")[0].strip()
                )
            )
        return out

    shots = read(root / "train.jsonl") if (root / "train.jsonl").is_file() else []
    return Subject("gsm8k", read(root / "test.jsonl"), shots)
