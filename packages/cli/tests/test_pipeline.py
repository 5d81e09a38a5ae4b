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

from llamaforge_cli.pipeline.recipe import PipelineError, load_recipe
from llamaforge_cli.pipeline.runner import plan, run

STAGES = [
    "chat-replay",
    "learn-vocab",
    "expand-vocab",
    "init-model",
    "pack-data",
    "train",
    "train-control",
    "eval",
    "report",
]


def _recipe(
    tmp: Path, asset, tiny_llama, steps: int = 2, pieces: int = 150, init: str = "mean"
) -> Path:
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
        (tmp / "prompts.txt").write_text("Say hello.\n\nName a colour.\n", encoding="utf-8")
    path = tmp / "recipe.toml"
    path.write_text(f"""
out = "out"
base_model = "base"
chat_prompt = "Hi"
chat_prompt_target = "你好"
[vocab]
corpus = ["zh.txt"]
word_list = "asset:jieba-dict/dict.txt"
num_pieces = {pieces}
init = "{init}"
[data.mix]
sources = ["zh=zh.txt", "en=en.txt:0.5"]
max_length = 64
num_bins = 2
bos = true
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
micro_batch_size = 2
[control]
[chat_replay]
prompts = "prompts.txt"
max_new_tokens = 6
weight = 3
[eval]
text = {{zh = ["zh-held.txt"], en = ["en-held.txt"]}}
generation_prompts = 2
generation_tokens = 8
generation_rounds = 2
""")
    return path


@pytest.mark.slow
def test_runs_then_skips_then_reruns_what_changed(asset, tiny_llama, tmp_path):
    recipe = load_recipe(_recipe(tmp_path, asset, tiny_llama))
    assert [(r.stage, r.action) for r in plan(recipe)] == [(s, "run") for s in STAGES]
    first = run(recipe)
    assert [r.action for r in first] == ["run"] * len(STAGES)
    report = (tmp_path / "out" / "report" / "report.md").read_text(encoding="utf-8")
    assert "Compression" in report and "Base, control and expanded" in report
    assert "**Verdict.**" in report and "at equal training compute" in report
    assert "evaluated on the same device: cpu in float32" in report
    assert "chat: 你好 |" in report and "No benchmark was given" in report
    assert "fastest of 2 rounds, the models in turn" in report
    for arm in ("base", "control", "result"):  # each timed in both rounds
        result = json.loads((tmp_path / "out" / "eval" / f"{arm}.json").read_text())
        assert len(result["rounds"]) == 2 and result["generation"]["new_tokens"] == 16
        assert result["generation"]["chars_per_s"] == max(result["rounds"])
        assert "bits_per_char" in json.dumps(result) and "你好" in result["chat"]
    assert (tmp_path / "out" / "report" / "loss.png").is_file()
    assert (tmp_path / "out" / "report" / "loss-per-char.png").stat().st_size > 5000
    targets = json.loads((tmp_path / "out" / "report" / "targets.json").read_text())
    assert {t["target"].split(":")[0] for t in targets} == {"zh", "en"}
    # the base model's chat answers, packed three times into both arms' data
    replay = (tmp_path / "out" / "chat-replay" / "replay.jsonl").read_text(encoding="utf-8")
    records = [json.loads(line) for line in replay.splitlines()]
    assert [r["messages"][0]["content"] for r in records] == ["Say hello.", "Name a colour."]
    for packed in ("mix", "control/mix"):
        path = tmp_path / "out" / "pack-data" / packed / "manifest.json"
        manifest = json.loads(path.read_text())
        assert manifest["sources"]["chat-replay"] == 3 and manifest["template"] == "tokenizer"
        assert manifest["tokens_per_category"]["chat-replay"] > 0
        assert manifest["documents"] > 6
        assert manifest["bos"] is True and manifest["eos"] is True  # the recipe's `bos = true`
    assert [r.action for r in plan(recipe)] == ["skip"] * len(STAGES)
    assert [r.action for r in run(recipe)] == ["skip"] * len(STAGES)
    compute = tmp_path / "out" / "train-control" / "compute.json"
    plan_first = json.loads(compute.read_text())
    changed = load_recipe(_recipe(tmp_path, asset, tiny_llama, pieces=40))
    assert [r.action for r in plan(changed)][:3] == ["skip", "rerun (changed)", "run"]
    again = run(changed)
    # the chat replay depends on the base model and the prompts only; the control arm trains
    # again: the smaller vocabulary changes what a token of the expanded arm costs
    assert [r.action for r in again] == ["skip"] + ["rerun (changed)"] * 8
    plan_before = json.loads(compute.read_text())
    assert plan_before["expanded_parameters"] < plan_first["expanded_parameters"]
    # a new initialisation (same vocabulary), set from the command line: the control arm is
    # skipped — it reads the base model, its own packed data (the same bytes again) and the
    # expanded model's size only
    changed = load_recipe(
        _recipe(tmp_path, asset, tiny_llama, pieces=40), ["vocab.init=noisy-mean"]
    )
    assert [(r.stage, r.action) for r in run(changed)] == [
        *((s, "skip") for s in STAGES[:3]),
        ("init-model", "rerun (changed)"),
        ("pack-data", "skip"),
        ("train", "rerun (changed)"),
        ("train-control", "skip"),
        ("eval", "rerun (changed)"),
        ("report", "rerun (changed)"),
    ]
    report = (tmp_path / "out" / "report" / "report.md").read_text(encoding="utf-8")
    assert "recipe.toml`, with `vocab.init=noisy-mean`" in report
    plan_after = json.loads((tmp_path / "out" / "train-control" / "compute.json").read_text())
    assert plan_after == plan_before
    partial = run(changed, start="eval")
    assert [r.action for r in partial] == ["skip"] * 7 + ["rerun (--from)"] * 2

    # A corrupted output is not trusted: pack-data runs again (into a new dir), and since it
    # writes the same bytes, the finished training is kept and skipped.
    out = tmp_path / "out"
    export = sorted((out / "train" / "run" / "export").glob("*.safetensors"))[0]
    export_bytes = export.read_bytes()
    shard = sorted((out / "pack-data" / "mix").glob("shard-*/*.arrow"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    assert [(r.stage, r.action) for r in plan(changed)][4:6] == [
        ("pack-data", "rerun (output changed)"),
        ("train", "run"),  # the plan cannot know yet that the same bytes come back
    ]
    after = run(changed)
    assert [r.action for r in after][4:] == ["rerun (output changed)"] + ["skip"] * 4
    assert export.read_bytes() == export_bytes
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no work dir left


@pytest.mark.slow
def test_a_killed_rerun_keeps_the_previous_result_and_resumes(asset, tiny_llama, tmp_path):
    """Training again with a changed setting goes into .train.next: killed half-way, the
    finished training is still there and still what the old recipe skips to; the next run of
    the new recipe resumes the half-done one and only then replaces the old."""
    recipe = load_recipe(_recipe(tmp_path, asset, tiny_llama))
    run(recipe)
    out = tmp_path / "out"
    marker = (out / "train" / "STAGE.json").read_text()
    export = {p.name: p.read_bytes() for p in (out / "train" / "run" / "export").iterdir()}
    path = _recipe(tmp_path, asset, tiny_llama, steps=12)
    metrics = out / ".train.next" / "run" / "metrics.jsonl"
    _run_and_kill(path, metrics, tmp_path)
    assert (out / "train" / "STAGE.json").read_text() == marker
    kept = {p.name: p.read_bytes() for p in (out / "train" / "run" / "export").iterdir()}
    assert kept == export
    assert [r.action for r in plan(recipe)] == ["skip"] * len(STAGES)
    done = run(load_recipe(path))
    assert [(r.stage, r.action) for r in done][5] == ("train", "resume")
    lines = (out / "train" / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert sorted({r["global_step"] for r in rows}) == list(range(1, 25))
    assert not (out / ".train.next").exists()


def _run_and_kill(path: Path, metrics: Path, cwd: Path) -> None:
    """Run the pipeline in its own process; SIGKILL it once ``metrics`` has 5 lines."""
    cmd = [sys.executable, "-m", "llamaforge_cli", "pipeline", "run", str(path)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, cwd=cwd
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 5:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_crash_inside_train_resumes(asset, tiny_llama, tmp_path):
    path = _recipe(tmp_path, asset, tiny_llama, steps=12)
    metrics = tmp_path / "out" / "train" / "run" / "metrics.jsonl"
    _run_and_kill(path, metrics, tmp_path)
    recipe = load_recipe(path)
    assert [(r.stage, r.action) for r in plan(recipe)][4:6] == [
        ("pack-data", "skip"),
        ("train", "resume"),
    ]
    done = run(recipe)
    assert [r.action for r in done] == ["skip"] * 5 + ["resume", "run", "run", "run"]
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert sorted({r["global_step"] for r in rows}) == list(range(1, 25))


def test_shipped_recipes_load_and_plan(asset):
    root = Path(__file__).resolve().parents[3] / "recipes"
    recipes = sorted(root.glob("*.toml"))
    assert recipes
    for path in recipes:
        recipe = load_recipe(path)
        assert [r.stage for r in plan(recipe)] == STAGES


GOOD = """
out = "out"
base_model = "base"
[vocab]
corpus = ["zh.txt"]
[data.mix]
sources = ["zh=zh.txt"]
[[train.stages]]
name = "full"
data = ["mix"]
steps = 2
"""


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (("steps = 2", "steps = 2.5"), "train.stages.0.steps: Input should be a valid integer"),
        (("steps = 2", 'steps = 2\nlr = "abc"'), "stages.0.lr: Input should be a valid number"),
        (("steps = 2", "steps = 2\nmicro_batch_size = 1.5"), "stages.0.micro_batch_size"),
        (("[data.mix]", "[data.mix]\nmax_length = 0"), "data.mix.max_length: Input should be"),
        (("[data.mix]", "[data.mix]\nmax_lenght = 64"), "did you mean max_length?"),
        (('corpus = ["zh.txt"]', 'corpus = "zh.txt"'), "vocab.corpus: Input should be a valid"),
        (('data = ["mix"]', 'data = ["nope"]'), "dataset 'nope' is not defined under [data]"),
        (('base_model = "base"', ""), "base_model: missing"),
        (("[vocab]", "[eval]\nmetric = 'accuracy'\n[vocab]"), "eval.metric: Input should be"),
        (("[vocab]", "[eval]\nmax_docs = { fr = 5 }\n[vocab]"), "max_docs: no text labelled 'fr'"),
        (("[vocab]", "[eval]\nmax_docs = { fr = 0 }\n[vocab]"), "eval.max_docs"),
        (("[vocab]", 'chat_promt = "hi"\n[vocab]'), "did you mean chat_prompt?"),
        (("[vocab]", 'overrides = ["out=x"]\n[vocab]'), "overrides: set by the pipeline"),
    ],
)
def test_bad_recipe_values_are_named_before_anything_runs(tmp_path, edit, error):
    """Bad-input table for pipeline recipes: one error naming the field, at load time."""
    path = tmp_path / "recipe.toml"
    path.write_text(GOOD.replace(*edit, 1))
    with pytest.raises(PipelineError) as err:
        load_recipe(path)
    assert error in str(err.value)
    assert not (tmp_path / "out").exists()


def test_train_stage_hands_the_trainer_its_typed_config(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(GOOD.replace("steps = 2", "steps = 2\nbetas = [0.8, 0.9]"))
    recipe = load_recipe(path)
    config = recipe.train_config(tmp_path / "m", tmp_path / "run", tmp_path / "packed")
    assert config.stages[0].data == [str(tmp_path / "packed" / "mix")]
    assert (config.model, config.output_dir) == (str(tmp_path / "m"), str(tmp_path / "run"))
    assert config.stages[0].betas == (0.8, 0.9) and config.seed == 42


def test_set_overrides_the_recipe_as_if_written_in_it(tmp_path, monkeypatch):
    path = tmp_path / "recipes" / "recipe.toml"
    path.parent.mkdir()
    path.write_text(GOOD + '[[train.stages]]\nname = "last"\ndata = ["mix"]\nsteps = 1\n')
    monkeypatch.chdir(tmp_path)
    sets = [
        "train.stages.full.steps=80",  # a stage by its name ...
        "train.stages.1.lr=3e-4",  # ... or its index
        "vocab.num_pieces = 16000",
        "vocab.init=freq-out",  # not a TOML value: a string
        "data.mix.sources=['zh=zh.txt', 'en=en.txt']",
        "eval.text={ zh = ['held.txt'] }",
        "eval.max_docs={ zh = 200 }",
    ]
    recipe = load_recipe(path, sets, out="runs/x2")
    assert recipe.out == tmp_path / "runs" / "x2"  # --out: relative to the cwd
    assert [st["steps"] for st in recipe.train["stages"]] == [80, 1]
    assert recipe.train["stages"][1]["lr"] == 3e-4 and "lr" not in recipe.train["stages"][0]
    assert (recipe.vocab.num_pieces, recipe.vocab.init) == (16000, "freq-out")
    assert recipe.data["mix"].sources == ["zh=zh.txt", "en=en.txt"]
    assert recipe.eval.max_docs == {"zh": 200} and recipe.overrides == sets
    assert load_recipe(path).out == path.parent / "out"  # the file itself is unchanged
    assert load_recipe(path, ["out=elsewhere"]).out == path.parent / "elsewhere"


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ("steps", "--set steps: expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("train.stages.fulll.steps=8", "train.stages has no entry 'fulll' (0–0 or full)"),
        ("train.stages.3.steps=8", "train.stages has no entry '3'"),
        ("data.mix.sources.0.x=8", "data.mix.sources.0 is a value, not a table"),
        ("vocab.corpus.x=8", "vocab.corpus has no entry 'x' (0–0)"),
        ("vocab.num_pices=8", "vocab.num_pices: unknown key (did you mean num_pieces?)"),
        ("train.stages.full.steps=2.5", "train.stages.0.steps: Input should be a valid integer"),
        ("train.stages.full.steps=many", "train.stages.0.steps: Input should be a valid integer"),
        ("eval.metric=accuracy", "eval.metric: Input should be"),
        ("path=elsewhere.toml", "path: set by the pipeline"),
    ],
)
def test_bad_set_is_named_before_anything_runs(tmp_path, item, error):
    path = tmp_path / "recipe.toml"
    path.write_text(GOOD)
    with pytest.raises(PipelineError) as err:
        load_recipe(path, [item])
    assert error in str(err.value)
    assert not (tmp_path / "out").exists()


def _minimal_inputs(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    (tmp_path / "zh.txt").write_text("你好\n", encoding="utf-8")


def test_missing_inputs_are_all_named_before_anything_runs(tmp_path):
    _minimal_inputs(tmp_path)
    path = tmp_path / "recipe.toml"
    path.write_text(
        GOOD.replace('sources = ["zh=zh.txt"]', 'sources = ["zh=zh.txt,gone/*.jsonl"]')
        + '[eval]\ntext = { en = ["held.txt"] }\nbenchmarks = { mmlu = "nowhere" }\n'
    )
    recipe = load_recipe(path)
    for call in (plan, run):
        with pytest.raises(PipelineError) as err:
            call(recipe)
        message = str(err.value)
        assert "data.mix.sources.0:" in message and "gone/*.jsonl: no such file" in message
        assert "eval.text.en.0:" in message and "held.txt: no such file" in message
        assert "eval.benchmarks.mmlu:" in message and "no such benchmark dir" in message
    assert not (tmp_path / "out").exists()


def test_a_dir_the_pipeline_did_not_make_is_never_touched(tmp_path):
    _minimal_inputs(tmp_path)
    path = tmp_path / "recipe.toml"
    path.write_text(GOOD)
    mine = tmp_path / "out" / "pack-data" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my notes")
    with pytest.raises(PipelineError, match="was not made by the pipeline"):
        run(load_recipe(path))
    assert mine.read_text() == "my notes"
    assert not (tmp_path / "out" / "learn-vocab").exists()  # refused before the first stage
