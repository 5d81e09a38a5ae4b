"""Each official layout read exactly, as its files are written: a question over several lines
(quoted in CSV), a BOM, CRLF records, an option's trailing space — and errors at the file's
real line."""

from __future__ import annotations

import csv
import json

import pytest

from llamaforge_eval import EvalError, load_benchmark

QUESTION = "Which of these are true?\nI. disk seek time\nII. rotational latency\nIII. both"
OPTIONS = ["I only", "II only ", "I and II", "None of the above"]  # "II only " as written


def _write_csv(path, rows, *, bom: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        csv.writer(fh, lineterminator="\r\n").writerows(rows)  # CRLF between records


def _layout(kind: str, root, bad_answer: bool = False):
    answer = "E" if bad_answer else "C"
    if kind == "mmlu":
        row = [QUESTION, *OPTIONS, answer]
        _write_csv(
            root / "data" / "test" / "cs_test.csv", [["q0", "a", "b", "c", "d", "A"], row], bom=True
        )
        _write_csv(
            root / "data" / "dev" / "cs_dev.csv", [["shot", "a", "b", "c", "d", "B"]], bom=False
        )
    elif kind == "cmmlu":
        rows = [
            ["", "Question", "A", "B", "C", "D", "Answer"],
            ["0", "q0", "a", "b", "c", "d", "A"],
            ["1", QUESTION, *OPTIONS, answer],
        ]
        _write_csv(root / "test" / "cs.csv", rows, bom=True)
        _write_csv(root / "dev" / "cs.csv", rows[:2], bom=True)
    elif kind == "ceval":
        head = ["id", "question", "A", "B", "C", "D", "answer", "explanation"]
        rows = [
            head,
            ["0", "q0", "a", "b", "c", "d", "A", ""],
            ["1", QUESTION, *OPTIONS, answer, "line one\nline two"],
        ]
        _write_csv(root / "val" / "cs_val.csv", rows, bom=True)
        _write_csv(root / "dev" / "cs_dev.csv", rows[:2], bom=False)
    elif kind == "agieval":
        root.mkdir(parents=True, exist_ok=True)
        records = [
            {
                "passage": None,
                "question": "q0",
                "options": ["(A)a", "(B)b", "(C)c", "(D)d"],
                "label": "A",
            },
            {
                "passage": "A passage\u2028with a line separator",
                "question": QUESTION,
                "options": [f"({x}){o}" for x, o in zip("ABCD", OPTIONS, strict=True)],
                "label": answer,
            },
        ]
        (root / "cs.jsonl").write_text(
            "\ufeff" + "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n",
            encoding="utf-8",
        )
    return root


@pytest.mark.parametrize("kind", ["mmlu", "cmmlu", "ceval", "agieval"])
def test_multiline_question_is_read_exactly(kind, tmp_path):
    bench = load_benchmark(kind, _layout(kind, tmp_path / kind))
    (subject,) = bench.subjects
    q = subject.questions[1]
    assert q.question == QUESTION  # line breaks kept, not joined
    assert [text for _, text in q.choices] == OPTIONS
    assert q.answer == "C" and subject.questions[0].question == "q0"
    if kind == "agieval":
        assert q.passage == "A passage\u2028with a line separator"


@pytest.mark.parametrize("kind", ["mmlu", "cmmlu", "ceval"])
def test_errors_name_the_line_where_the_record_starts(kind, tmp_path):
    root = _layout(kind, tmp_path / kind, bad_answer=True)
    # header (cmmlu, ceval) + one one-line row: the multi-line record starts on line 2 or 3
    line = 2 if kind == "mmlu" else 3
    with pytest.raises(EvalError, match=rf":{line}: answer 'E' is not one of A, B, C, D"):
        load_benchmark(kind, root)
