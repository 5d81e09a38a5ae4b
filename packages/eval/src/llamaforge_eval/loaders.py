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
import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llamaforge_eval.errors import EvalError

LETTERS = ("A", "B", "C", "D")


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
    """``(line, row)`` per record, read the way the CSV module means files to be read (a file
    object with ``newline=""``): a quoted field keeps its line breaks, ``\r\n`` inside it
    included, and a BOM is dropped. ``line`` is the file's line where the record starts."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            start, first = 1, True
            for row in reader:
                lineno, start = start, reader.line_num + 1
                if header and first:
                    first = False
                    continue
                first = False
                if not row:
                    continue
                if len(row) != width:
                    if strict:
                        raise EvalError(f"{path}:{lineno}: {len(row)} columns, expected {width}")
                    where_skip.append(lineno)
                    continue
                yield lineno, row
    except UnicodeDecodeError as exc:
        raise EvalError(f"{path}: not UTF-8 ({exc.reason})") from None
    except csv.Error as exc:
        raise EvalError(f"{path}: malformed CSV ({exc})") from None


def _choice(path, lineno, question, options, answer, strict, skipped) -> Question | None:
    answer = answer.strip().upper()
    if answer not in LETTERS:
        if strict:
            raise EvalError(f"{path}:{lineno}: answer {answer!r} is not one of A, B, C, D")
        skipped.append(lineno)
        return None
    # As lm-evaluation-harness's templates do: the question stripped, the options as written.
    return Question(
        question=question.strip(),
        answer=answer,
        choices=tuple(zip(LETTERS, options, strict=True)),
    )


@dataclass(frozen=True)
class CsvLayout:
    """A multiple-choice benchmark stored as one CSV file per subject and split."""

    test: str
    """Dir (under the benchmark root) of the scored split."""
    dev: str
    """Dir of the few-shot split."""
    header: bool
    """Files start with a header row."""
    columns: slice
    """Where question, A, B, C, D and the answer sit in a row."""
    width: int
    """Columns a well-formed row has."""
    test_suffix: str = ""
    """Ending of a scored file's stem after the subject name (``_test``)."""
    dev_suffix: str = ""
    """Ending of a few-shot file's stem (``_dev``)."""

    def read_subjects(self, root: Path, strict: bool) -> list[Subject]:
        subjects = []
        for path in sorted((root / self.test).glob(f"*{self.test_suffix}.csv")):
            name = path.stem[: len(path.stem) - len(self.test_suffix)]
            skipped: list[int] = []
            questions = self._questions(path, strict, skipped)
            dev = root / self.dev / f"{name}{self.dev_suffix}.csv"
            shots = self._questions(dev, strict, []) if dev.is_file() else []
            subjects.append(Subject(name, questions, shots, skipped=len(skipped)))
        return subjects

    def _questions(self, path: Path, strict: bool, skipped: list[int]) -> list[Question]:
        out = []
        for lineno, row in _csv_rows(path, self.header, self.width, strict, skipped):
            q, a, b, c, d, ans = row[self.columns]
            item = _choice(path, lineno, q, (a, b, c, d), ans, strict, skipped)
            if item:
                out.append(item)
        return out


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark reader, declared: what its files look like and how they are read."""

    layout: str
    """The official layout, as shown to a user whose dir does not match it."""
    kind: str
    """``choice`` (scored by answer letter) or ``generate`` (scored by exact match)."""
    language: str
    """Language of the prompts (``en`` / ``zh``)."""
    matches: Callable[[Path], bool]
    """Whether a dir has this layout's required files."""
    read: Callable[[Path, bool], list[Subject]]
    """Read every subject of a matching dir (``strict``: a bad row raises)."""


_MMLU = CsvLayout(
    test="data/test",
    dev="data/dev",
    header=False,
    columns=slice(0, 6),
    width=6,
    test_suffix="_test",
    dev_suffix="_dev",
)
_CMMLU = CsvLayout(test="test", dev="dev", header=True, columns=slice(1, 7), width=7)


def _ceval_layout(root: Path) -> CsvLayout:
    split = "val" if (root / "val").is_dir() else "test"  # test has no public answers
    return CsvLayout(
        test=split,
        dev="dev",
        header=True,
        columns=slice(1, 7),
        width=8,
        test_suffix=f"_{split}",
        dev_suffix="_dev",
    )


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "mmlu": BenchmarkSpec(
        layout="data/{dev,val,test}/{subject}_{split}.csv (no header: question,A,B,C,D,answer)",
        kind="choice",
        language="en",
        matches=lambda root: (root / _MMLU.test).is_dir(),
        read=_MMLU.read_subjects,
    ),
    "cmmlu": BenchmarkSpec(
        layout="{dev,test}/{subject}.csv (header: ,Question,A,B,C,D,Answer)",
        kind="choice",
        language="zh",
        matches=lambda root: (root / _CMMLU.test).is_dir(),
        read=_CMMLU.read_subjects,
    ),
    "ceval": BenchmarkSpec(
        layout="{dev,val,test}/{subject}_{split}.csv (header: id,question,A,B,C,D,answer,"
        "explanation)",
        kind="choice",
        language="zh",
        matches=lambda root: (root / _ceval_layout(root).test).is_dir(),
        read=lambda root, strict: _ceval_layout(root).read_subjects(root, strict),
    ),
    "agieval": BenchmarkSpec(
        layout="*.jsonl (passage, question, options, label or answer)",
        kind="choice",
        language="en",
        matches=lambda root: any(root.glob("*.jsonl")),
        read=lambda root, strict: [_agieval(p, strict) for p in sorted(root.glob("*.jsonl"))],
    ),
    "gaokao": BenchmarkSpec(
        layout='*.json ({"keywords": ..., "example": [{"question", "answer": [...]}]})',
        kind="choice",
        language="zh",
        matches=lambda root: any(root.rglob("*.json")),
        read=lambda root, strict: [_gaokao(p, strict) for p in sorted(root.rglob("*.json"))],
    ),
    "gsm8k": BenchmarkSpec(
        layout="test.jsonl and train.jsonl ({question, answer ending in #### N})",
        kind="generate",
        language="en",
        matches=lambda root: (root / "test.jsonl").is_file(),
        read=lambda root, strict: [_gsm8k(root)],
    ),
}
"""Every benchmark ``load_benchmark`` reads, by name."""


def load_benchmark(
    kind: str, root: str | Path, *, subjects: list[str] | None = None, strict: bool = True
) -> Benchmark:
    """Load benchmark ``kind`` from ``root`` (its official layout); optionally some subjects."""
    root = Path(root)
    spec = BENCHMARKS.get(kind)
    if spec is None:
        hint = difflib.get_close_matches(kind, BENCHMARKS, 1)
        raise EvalError(
            f"unknown benchmark {kind!r}"
            + (f" (did you mean {hint[0]}?)" if hint else "")
            + f"; choose one of {', '.join(BENCHMARKS)}"
        )
    if not root.is_dir():
        raise EvalError(f"{root}: no such benchmark dir (expected {spec.layout})")
    if not spec.matches(root):
        raise EvalError(f"{root} does not look like {kind}: expected {spec.layout}")
    bench = Benchmark(kind, spec.kind, spec.read(root, strict), language=spec.language)
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
        raise EvalError(f"{root}: no subjects found (expected {spec.layout})")
    return bench


def _jsonl(path: Path):
    # split on "\n" only: str.splitlines would also split at U+2028 / U+2029, which JSON
    # allows unescaped inside strings
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvalError(f"{path}: not UTF-8 ({exc.reason})") from None
    for lineno, line in enumerate(text.split("\n"), start=1):
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
        data = json.loads(path.read_text(encoding="utf-8-sig"))
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
