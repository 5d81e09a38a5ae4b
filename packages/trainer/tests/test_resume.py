"""Exact resume: a 2-process ddp run (gloo, CPU) killed with SIGKILL at an arbitrary step and
resumed gives the uninterrupted run's loss curve step for step."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamaforge_trainer.metrics import read_metrics

STEPS = 12


def _recipe(tmp: Path, model: Path, data: Path, name: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(f'''
model = "{model}"
output_dir = "{tmp / name}"
save_interval = 3
keep_last = 2
[[stages]]
name = "embeddings"
data = ["{data}"]
trainable = "embeddings"
steps = 4
lr = 1e-2
[[stages]]
name = "full"
data = ["{data}"]
steps = {STEPS - 4}
lr = 3e-3
micro_batch_size = 2
neftune_alpha = 5.0
''')
    return path


def _launch(recipe: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "llamaforge_trainer", str(recipe), "--nproc", "2"]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


@pytest.mark.slow
def test_sigkill_and_resume_reproduces_the_loss_curve(tiny_model, packed_text, tmp_path):
    whole = _launch(_recipe(tmp_path, tiny_model, packed_text, "whole"))
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err.decode()[-3000:]
    expected = [r["loss"] for r in read_metrics(tmp_path / "whole")]
    assert len(expected) == STEPS

    recipe = _recipe(tmp_path, tiny_model, packed_text, "killed")
    # Any step after 7: the newest checkpoint (step 7) is in the middle of the second stage, so
    # the resume restores optimizer, schedule, sampler and RNG, not just weights.
    kill_at = random.Random(0).randint(8, STEPS - 2)
    proc = _launch(recipe)
    deadline = time.time() + 600
    while time.time() < deadline:
        rows = read_metrics(tmp_path / "killed") if (tmp_path / "killed").exists() else []
        if rows and rows[-1]["global_step"] >= kill_at:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(read_metrics(tmp_path / "killed")) < STEPS
    resumed = _launch(recipe)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()[-3000:]
    got = [r["loss"] for r in read_metrics(tmp_path / "killed")]
    assert got == expected  # exactly, step for step
    # the steps after the checkpoint ran twice but are logged once
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["global_step"] for x in lines] == list(range(1, STEPS + 1))
    assert (tmp_path / "killed" / "export" / "model.safetensors").is_file()
