"""Bad-input table for `python -m llamaforge_eval run` (its `main`, in this process): one error
line on stderr and exit code 2, before the model is loaded (the model dir does not exist)."""

from __future__ import annotations

import pytest

from llamaforge_eval.cli import main

CASES = {
    "results path is a dir": (["-o", "."], "is a directory; give a file name"),
    "results where nothing can be written": (["-o", "/proc/llamaforge/r.json"], "cannot write"),
    "zero batch size": (["--batch-size", "0"], "batch_size must be ≥ 1 or 'auto', got 0"),
    "negative batch size": (["--batch-size", "-3"], "batch_size must be ≥ 1 or 'auto', got -3"),
    "a batch size that is no number": (["--batch-size", "big"], "must be a number or auto"),
    "negative shots": (["--shots", "-2"], "shots must be ≥ 0, got -2"),
    "zero processes": (["--nproc", "0"], "nproc must be ≥ 1, got 0"),
    "zero documents": (["--max-docs", "0"], "max_docs must be ≥ 1, got 0"),
    "unknown metric": (["--metric", "accuracy"], "unknown metric 'accuracy'"),
    "unknown benchmark": (["--bench", "mmlux=x"], "unknown benchmark 'mmlux' (did you mean mmlu?)"),
    "benchmark without a dir": (["--bench", "mmlu"], "--bench 'mmlu': expected NAME=PATH"),
    "unknown backend": (["--backend", "onnx"], "backend 'onnx' is not one of"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_the_model_loads(tmp_path, case, capsys, monkeypatch):
    args, error = CASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "held.txt").write_text("some text\n")
    code = main(["run", "no-model", "--text", "en=held.txt", *args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and error in lines[0], lines
