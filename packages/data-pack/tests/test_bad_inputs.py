"""Bad-input table for `python -m llamaforge_datapack`: one error line on stderr, exit code 2,
nothing deleted that the command did not make; a killed run's leftovers are cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamaforge_datapack.cli import main


@pytest.fixture
def work(tmp_path, asset) -> Path:
    (tmp_path / "zh.txt").write_text("你好世界\n" * 20, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "keep.txt").write_text("keep")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "manifest.json").write_text('{"format": "llamaforge-pa')
    os.symlink(asset("smollm2-tokenizer"), tmp_path / "tok")
    return tmp_path


CASES = {
    "pack into the current dir": (
        ["pack", "zh.txt", "-t", "tok", "-o", ".", "--overwrite"],
        "refusing to write the output into",
    ),
    "pack over a dir that is not packed data": (
        ["pack", "zh.txt", "-t", "tok", "-o", "theirs", "--overwrite"],
        "theirs is not a packed dir",
    ),
    "pack over a file": (
        ["pack", "zh.txt", "-t", "tok", "-o", "notes.txt", "--overwrite"],
        "notes.txt is a file",
    ),
    "pack over an existing dir without --overwrite": (
        ["pack", "zh.txt", "-t", "tok", "-o", "theirs"],
        "theirs already exists; pass --overwrite",
    ),
    "inspect a corrupt manifest": (["inspect", "corrupt"], "corrupt manifest"),
    "inspect a dir that is not packed": (["inspect", "theirs"], "no manifest.json"),
    "a missing input": (["pack", "gone.txt", "-t", "tok", "-o", "new"], "gone.txt"),
    "a weight that is no number stays in the path": (
        ["pack", "zh=zh.txt:abc", "-t", "tok", "-o", "new"],
        "zh.txt:abc",
    ),
    "zero bins": (["pack", "zh.txt", "-t", "tok", "-o", "new", "--num-bins", "0"], "num_bins"),
    "an unknown error policy": (
        ["pack", "zh.txt", "-t", "tok", "-o", "new", "--on-error", "ignore"],
        "--on-error must be fail or skip",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_deletes_nothing(work, case, capsys, monkeypatch):
    args, error = CASES[case]
    before = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    monkeypatch.chdir(work)
    code = main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and error in lines[0], lines
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*")) == before
    assert (work / "theirs" / "keep.txt").read_text() == "keep"


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_the_next_run_keeps(work, asset):
    """SIGKILL mid-pack leaves its work dir (nothing can run then); the next run into the
    same output removes it, and never one whose process is alive."""
    big = work / "big.txt"
    big.write_text((asset("people-daily") / "train.txt").read_text(encoding="utf-8"))
    cmd = [sys.executable, "-m", "llamaforge_datapack", "pack", "big.txt", "-t", "tok", "-o"]
    proc = subprocess.Popen([*cmd, "out"], cwd=work, start_new_session=True)
    deadline = time.time() + 120
    while not list(work.glob(".out.tmp-*/.llamaforge-pack-work")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    left = list(work.glob(".out.tmp-*"))
    assert left, "the killed run left no work dir: nothing was tested"
    alive = work / ".out.tmp-alive"  # another run's, still going (this process)
    alive.mkdir()
    (alive / ".llamaforge-pack-work").write_text(str(os.getpid()))
    done = subprocess.run([*cmd, "out"], cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not any(p.exists() for p in left)
    assert alive.is_dir()
    assert (work / "out" / "manifest.json").is_file()
