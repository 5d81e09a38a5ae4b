#!/usr/bin/env python3
"""Benchmark: our evaluator vs lm-evaluation-harness on the same model, questions and CPU.

Questions shaped like real MMLU ones, in MMLU's official layout (4 subjects × 60 test questions
+ 5 dev shots), written to a temporary dir: each question is a passage of real held-out English
text (Botchan, Lee news) over two or three lines, of mixed length (5 to 120 words), then a
question line; the options are phrases of the same text, as written (some end in a space).
Both sides score the log-likelihood of " A".." D" after "Answer:" with SmolLM2-135M in fp32 on
the CPU, at 0 and at 5 shots, run as command-line tools in fresh processes (so both pay
start-up and model loading), one after the other, with the same threads. lm-eval
(``lm-eval`` from PyPI) lives in its own virtualenv, ``.venv-lm-eval`` (its pins differ);
``--setup`` creates it. It is pointed at the same CSV files through a local task config.

Prints, per shot count, questions/s of each, their ratio (targets: ≥ 1.4× at 0 shots, ≥ 6× at
5) and the share of identical predictions, overall and among the questions whose top-2
log-likelihood margin (lm-eval's scores) is above 0.01 nats (must be 100 %).

    python tools/bench/eval.py --setup      # once: the lm-eval virtualenv
    python tools/bench/eval.py [--questions 60] [--batch-size 16] [--backend vllm]

``--backend vllm`` runs our side from ``.venv-vllm`` (the workspace's vLLM environment).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_name

ROOT = Path(__file__).resolve().parents[2]
LM_EVAL_VENV = ROOT / ".venv-lm-eval"
VLLM_VENV = ROOT / ".venv-vllm"  # the workspace's hatch env `vllm`
SUBJECTS = ("literature", "news", "history", "geography")


def _question(docs: list[str], rng: random.Random) -> list[str]:
    words = rng.choice(docs).split()
    n = rng.randint(5, min(120, max(6, len(words))))
    cut = sorted(rng.sample(range(1, n), min(2, n - 1)))
    lines = [" ".join(words[i:j]) for i, j in zip([0, *cut], [*cut, n], strict=True)]
    question = "\n".join([*lines, "Which words come from the passage above?"])
    options = []
    while len(options) < 4:
        k = rng.randint(0, max(0, len(words) - 4))
        phrase = " ".join(words[k : k + rng.randint(1, 4)]) + rng.choice(["", "", " "])
        if phrase not in options:
            options.append(phrase)
    return [question, *options, rng.choice("ABCD")]


def write_questions(root: Path, n: int) -> int:
    from llamaforge_cli.assets import ensure_asset

    rng = random.Random(0)
    docs = []
    for name in ("botchan", "lee-news"):
        text = (ensure_asset(name) / "heldout.txt").read_text(encoding="utf-8")
        docs += [d for d in text.splitlines() if len(d.split()) >= 8]
    for subject in SUBJECTS:
        for split, count in (("dev", 5), ("test", n)):
            path = root / "data" / split / f"{subject}_{split}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as fh:
                csv.writer(fh).writerows(_question(docs, rng) for _ in range(count))
    return n * len(SUBJECTS)


def write_lm_eval_tasks(root: Path, tasks: Path) -> list[str]:
    tasks.mkdir(parents=True, exist_ok=True)
    names = []
    for subject in SUBJECTS:
        name = f"llamaforge_{subject}"
        files = {
            "test": str(root / "data" / "test" / f"{subject}_test.csv"),
            "dev": str(root / "data" / "dev" / f"{subject}_dev.csv"),
        }
        config = {
            "task": name,
            "dataset_path": "csv",
            "dataset_kwargs": {
                "data_files": files,
                "header": None,
                "column_names": ["question", "A", "B", "C", "D", "answer"],
            },
            "test_split": "test",
            "fewshot_split": "dev",
            "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice",
            "description": "The following are multiple choice questions (with answers) about "
            f"{subject}.\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer)}}",
            "metric_list": [{"metric": "acc"}],
        }
        (tasks / f"{name}.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML
        names.append(name)
    return names


def run_ours(
    model: Path, bench: Path, out: Path, batch: int, shots: int, backend: str = "transformers"
) -> tuple[float, dict]:
    python = VLLM_VENV / "bin" / "python" if backend == "vllm" else Path(sys.executable)
    cmd = [
        str(python),
        "-m",
        "llamaforge_cli",
        "eval",
        "run",
        str(model),
        "--bench",
        f"mmlu={bench}",
        "--shots",
        str(shots),
        "--metric",
        "loglik",
        "--batch-size",
        str(batch),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--backend",
        backend,
        "-o",
        str(out),
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    data = json.loads(out.read_text())["benchmarks"]["mmlu"]["subjects"]
    return seconds, {s: v["predictions"] for s, v in data.items()}


def run_lm_eval(
    model: Path, tasks: Path, names: list[str], out: Path, batch: int, shots: int
) -> tuple[float, dict, dict]:
    """(seconds, predictions, top-2 log-likelihood margins) per subject."""
    cmd = [
        str(LM_EVAL_VENV / "bin" / "lm_eval"),
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model},dtype=float32",
        "--tasks",
        ",".join(names),
        "--include_path",
        str(tasks),
        "--num_fewshot",
        str(shots),
        "--batch_size",
        str(batch),
        "--device",
        "cpu",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    start = time.perf_counter()
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"lm-eval failed:\n{done.stderr[-3000:]}")
    preds, margins = {}, {}
    for name in names:
        (path,) = sorted(out.rglob(f"samples_{name}_*.jsonl"))[-1:]
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        rows.sort(key=lambda r: r["doc_id"])
        scores = [[float(r["filtered_resps"][k][0]) for k in range(4)] for r in rows]
        subject = name.removeprefix("llamaforge_")
        preds[subject] = ["ABCD"[max(range(4), key=v.__getitem__)] for v in scores]
        margins[subject] = [sorted(v)[-1] - sorted(v)[-2] for v in scores]
    return seconds, preds, margins


def setup() -> int:
    import venv

    venv.EnvBuilder(with_pip=True, clear=True).create(LM_EVAL_VENV)
    pip = [str(LM_EVAL_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # the CPU build this machine has on disk
    subprocess.run([*pip, "lm-eval==0.4.*", "transformers==4.51.3", "accelerate"], check=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="eval benchmark vs lm-evaluation-harness (CPU)")
    parser.add_argument("--setup", action="store_true", help="create .venv-lm-eval")
    parser.add_argument("--questions", type=int, default=60, help="test questions per subject")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--keep", type=Path, help="write the work files here and keep them")
    parser.add_argument(
        "--backend", default="transformers", help="ours on transformers (default) or vllm"
    )
    parser.add_argument("--gpu", action="store_true", help="(CPU benchmark: nothing to do)")
    args = parser.parse_args()
    if args.gpu:
        print("eval: CPU benchmark; nothing to run on the GPU")
        return 0
    if args.setup:
        return setup()
    if not (LM_EVAL_VENV / "bin" / "lm_eval").exists():
        print("lm-eval is not set up: run `python tools/bench/eval.py --setup` first")
        return 2
    if args.backend == "vllm" and not (VLLM_VENV / "bin" / "python").exists():
        print("no .venv-vllm: run `python3 tools/bootstrap.py test-vllm` once to create it")
        return 2
    from llamaforge_cli.assets import ensure_asset

    model = ensure_asset("smollm2-135m")
    print(f"CPU: {cpu_name()}; SmolLM2-135M fp32; batch size {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(args.keep) if args.keep else Path(tmp)
        n = write_questions(tmp / "mmlu", args.questions)
        names = write_lm_eval_tasks(tmp / "mmlu", tmp / "tasks")
        for shots, target in ((0, 1.4), (5, 6.0)):
            t_ours, ours = run_ours(
                model,
                tmp / "mmlu",
                tmp / f"ours-{shots}.json",
                args.batch_size,
                shots,
                args.backend,
            )
            t_theirs, theirs, margins = run_lm_eval(
                model, tmp / "tasks", names, tmp / f"lm-eval-{shots}", args.batch_size, shots
            )
            pairs = [
                (a == b, m)
                for s in ours
                for a, b, m in zip(ours[s], theirs[s], margins[s], strict=True)
            ]
            same = sum(ok for ok, _ in pairs)
            clear = [ok for ok, m in pairs if m > 0.01]
            print(f"{shots}-shot, {n} questions:")
            print(f"  ours ({args.backend}): {t_ours:6.1f} s  {n / t_ours:6.2f} questions/s")
            print(f"  lm-eval:  {t_theirs:6.1f} s  {n / t_theirs:6.2f} questions/s")
            print(
                f"  speed-up {t_theirs / t_ours:.2f}× (target ≥ {target}×); identical "
                f"predictions {same}/{n}; where the margin is > 0.01 nats "
                f"{sum(clear)}/{len(clear)} (must be all)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
