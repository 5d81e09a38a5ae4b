"""Bad-input table for `python -m llamaforge_tokenizer`: each case gives one error line on
stderr and exit code 2 before any long work, and deletes nothing it did not make."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamaforge_tokenizer.cli import main


@pytest.fixture
def work(tmp_path, asset) -> Path:
    """A working dir with a tokenizer, a piece list, a text, and files a user cares about."""
    (tmp_path / "pieces.txt").write_text("你好\n世界\n", encoding="utf-8")
    (tmp_path / "zh.txt").write_text("你好世界\n" * 20, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "keep.txt").write_text("keep")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "theirs")
    os.symlink(asset("smollm2-tokenizer"), tmp_path / "tok")
    return tmp_path


CASES = {
    "expand into the current dir": (
        ["expand", "tok", "pieces.txt", "-o", ".", "--overwrite"],
        "refusing to write the output into",
    ),
    "expand over a dir it did not make": (
        ["expand", "tok", "pieces.txt", "-o", "theirs", "--overwrite"],
        "theirs was not written by llamaforge-tokenizer",
    ),
    "expand over a file": (
        ["expand", "tok", "pieces.txt", "-o", "a-file", "--overwrite"],
        "a-file is a file, not an output dir",
    ),
    "expand over a symlink": (
        ["expand", "tok", "pieces.txt", "-o", "link", "--overwrite"],
        "link is a symlink, not an output dir",
    ),
    "expand over an existing dir without --overwrite": (
        ["expand", "tok", "pieces.txt", "-o", "theirs"],
        "theirs already exists; pass --overwrite",
    ),
    "expand into the dir holding an input": (
        ["expand", "tok", "sub/pieces.txt", "-o", "sub", "--overwrite"],
        "it holds the input",
    ),
    "init-model into the current dir": (
        ["init-model", "tok", "tok", "-o", ".", "--overwrite"],
        "refusing to write the output into",
    ),
    "learn into a dir": (["learn", "tok", "zh.txt", "-o", "theirs"], "theirs is a directory"),
    "learn over its own corpus": (["learn", "tok", "zh.txt", "-o", "zh.txt"], "is an input"),
    "learn where nothing can be written": (
        ["learn", "tok", "zh.txt", "-o", "/proc/llamaforge/p.jsonl"],
        "cannot write there",
    ),
    "report to an unknown image format": (
        ["report", "--old", "tok", "--text", "zh=zh.txt", "--plot", "x.xyz"],
        "unknown image format '.xyz'",
    ),
    "expand a missing tokenizer": (
        ["expand", "nowhere", "pieces.txt", "-o", "new"],
        "nowhere",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_deletes_nothing(work, case, capsys, monkeypatch):
    args, error = CASES[case]
    if "sub/pieces.txt" in args:
        (work / "sub").mkdir()
        (work / "sub" / "pieces.txt").write_text("你好\n", encoding="utf-8")
    before = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    monkeypatch.chdir(work)
    code = main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and error in lines[0], lines
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*")) == before
    assert (work / "notes.txt").read_text() == "mine"
    assert (work / "theirs" / "keep.txt").read_text() == "keep"


def test_overwrite_replaces_its_own_output(work):
    cmd = [sys.executable, "-m", "llamaforge_tokenizer", "expand", "tok", "pieces.txt", "-o", "new"]
    first = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert (work / "new" / ".llamaforge-output").is_file()
    again = subprocess.run(
        [*cmd, "--overwrite"], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert (work / "new" / "tokenizer.json").is_file()
