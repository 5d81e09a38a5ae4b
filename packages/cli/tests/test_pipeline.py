"""The pipeline on a tiny configuration: plan, skip, rerun on change, crash and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamaforge_cli.pipeline.recipe import load_recipe
from llamaforge_cli.pipeline.runner import plan, run

STAGES = ["learn-vocab", "expand-vocab", "init-model", "pack-data", "train", "eval", "report"]


def _recipe(tmp: Path, asset, tiny_llama, steps: int = 2, pieces: int = 150) -> Path:
    base = tmp / "base"
    if not base.exists():
        tiny_llama(
            base, asset("smollm2-135m"), hidden=32, layers=1, heads=2, kv_heads=1, positions=512
        )
        shutil.copyfile(
            asset("smollm2-135m") / "generation_config.json", base / "generation_config.json"
        )
        zh = (asset("people-daily") / "train.txt").read_text(encoding="utf-8").splitlines()
        (tmp / "zh.txt").write_text("\n".join(zh[:150]), encoding="utf-8")
        (tmp / "zh-held.txt").write_text("\n".join(zh[-10:]), encoding="utf-8")
        en = (asset("botchan") / "train.txt").read_text(encoding="utf-8").splitlines()
        (tmp / "en.txt").write_text("\n".join(en[:40]), encoding="utf-8")
        (tmp / "en-held.txt").write_text("\n".join(en[-5:]), encoding="utf-8")
    path = tmp / "recipe.toml"
    path.write_text(f"""
out = "out"
base_model = "base"
chat_prompt = "Hi"
[vocab]
corpus = ["zh.txt"]
word_list = "asset:jieba-dict/dict.txt"
num_pieces = {pieces}
[data.mix]
sources = ["zh=zh.txt", "en=en.txt:0.5"]
max_length = 64
num_bins = 2
[train]
save_interval = 2
[[train.stages]]
name = "embeddings"
data = ["mix"]
trainable = "embeddings"
steps = {steps}
lr = 1e-2
[[train.stages]]
name = "full"
data = ["mix"]
steps = {steps}
lr = 1e-3
[eval]
text = {{zh = ["zh-held.txt"], en = ["en-held.txt"]}}
""")
    return path


@pytest.mark.slow
def test_runs_then_skips_then_reruns_what_changed(asset, tiny_llama, tmp_path):
    recipe = load_recipe(_recipe(tmp_path, asset, tiny_llama))
    assert [(r.stage, r.action) for r in plan(recipe)] == [(s, "run") for s in STAGES]
    first = run(recipe)
    assert [r.action for r in first] == ["run"] * len(STAGES)
    report = (tmp_path / "out" / "report" / "report.md").read_text(encoding="utf-8")
    assert "Compression" in report and "Bits per character" in report and "Targets" in report
    assert (tmp_path / "out" / "report" / "loss.png").is_file()
    targets = json.loads((tmp_path / "out" / "report" / "targets.json").read_text())
    assert {t["target"].split(":")[0] for t in targets} == {"zh", "en"}
    assert [r.action for r in plan(recipe)] == ["skip"] * len(STAGES)
    assert [r.action for r in run(recipe)] == ["skip"] * len(STAGES)
    changed = load_recipe(_recipe(tmp_path, asset, tiny_llama, pieces=120))
    assert [r.action for r in plan(changed)][:2] == ["rerun (changed)", "run"]
    again = run(changed)
    assert [r.action for r in again] == ["rerun (changed)"] * len(STAGES)
    partial = run(changed, start="eval")
    assert [r.action for r in partial] == ["skip"] * 5 + ["rerun (changed)"] * 2


@pytest.mark.slow
def test_crash_inside_train_resumes(asset, tiny_llama, tmp_path):
    path = _recipe(tmp_path, asset, tiny_llama, steps=12)
    cmd = [sys.executable, "-m", "llamaforge_cli", "pipeline", "run", str(path)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    metrics = tmp_path / "out" / "train" / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 5:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    recipe = load_recipe(path)
    assert [(r.stage, r.action) for r in plan(recipe)][3:5] == [
        ("pack-data", "skip"),
        ("train", "resume"),
    ]
    done = run(recipe)
    assert [r.action for r in done] == ["skip"] * 4 + ["resume", "run", "run"]
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert sorted({r["global_step"] for r in rows}) == list(range(1, 25))


def test_shipped_recipes_load_and_plan(asset):
    root = Path(__file__).resolve().parents[3] / "recipes"
    recipes = sorted(root.glob("*.toml"))
    assert recipes
    for path in recipes:
        recipe = load_recipe(path)
        assert [r.stage for r in plan(recipe)] == STAGES
