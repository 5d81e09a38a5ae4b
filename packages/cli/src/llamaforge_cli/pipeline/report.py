"""The pipeline's report: base, control and expanded model side by side, the loss of both arms
per character of text, the verdict at equal compute, and the targets, stated plainly."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from llamaforge_cli.pipeline.recipe import PipelineError, Recipe
from llamaforge_cli.pipeline.verdict import (
    accuracy_stderr,
    arm_verdict,
    bpc,
    checks,
    paired_bpc,
    within_noise,
)

ARMS = (("base", "base model"), ("control", "control"), ("result", "expanded"))


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _load(path: Path) -> dict:
    return json.loads(_read(path) or "{}")


def _chat(model_dir: Path, prompt: str, *, start_timeout: float = 120.0) -> str:
    """Serve the result on localhost and ask one question through the OpenAI-style API."""
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    from llamaforge_serve import build

    app, engine = build(model_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise PipelineError(
                    f"report: the chat server for {model_dir} did not start "
                    f"({'it stopped' if not thread.is_alive() else f'{start_timeout:.0f} s'})"
                )
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}/v1"
        name = httpx.get(f"{base}/models", timeout=30).json()["data"][0]["id"]
        r = httpx.post(
            f"{base}/chat/completions",
            timeout=300,
            json={
                "model": name,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 48,
                "temperature": 0,
            },
        )
        if r.status_code != 200:
            raise PipelineError(f"report: the chat request failed ({r.status_code}): {r.text}")
        return r.json()["choices"][0]["message"]["content"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.close()


def _cell(text: str) -> str:
    """Text for one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|") or "(empty)"


def _arms_section(recipe: Recipe, results: dict[str, dict], plan: dict | None) -> list[str]:
    """One table: each arm's compression, bits per character, generation speed, compute and
    chat answers."""
    target = recipe.eval.target_label()
    arms = [(key, name) for key, name in ARMS if key in results]
    lines = [
        "## Base, control and expanded model",
        "",
        "| | " + " | ".join(name for _, name in arms) + " |",
        "|---" * (len(arms) + 1) + "|",
    ]

    def row(title: str, value) -> None:
        cells = [value(results[key], key) for key, _ in arms]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")

    def text_metric(label: str, field: str, fmt: str):
        def get(res: dict, _key: str) -> str:
            v = res.get("text", {}).get(label, {}).get(field)
            return format(v, fmt) if v is not None else "—"

        return get

    if target:
        row(f"{target}: tokens per character", text_metric(target, "tokens_per_char", ".3f"))
    for label in recipe.eval.text:
        row(f"{label}: bits per character", text_metric(label, "bits_per_char", ".3f"))

    def speed(res: dict, _key: str) -> str:
        g = res.get("generation")
        if not g:
            return "—"
        per_token = g["new_tokens"] / g["seconds"] if g["seconds"] else 0.0
        return (
            f"{g['chars_per_s']:.1f} = {per_token:.1f} tokens/s × "
            f"{g['chars_per_token']:.2f} chars/token"
        )

    if target and any(r.get("generation") for r in results.values()):
        e = recipe.eval
        row(
            f"{target}: characters generated per second (greedy, {e.generation_prompts} "
            f"prompts × {e.generation_tokens} tokens, {e.generation_batch} at a time; "
            f"fastest of {e.generation_rounds} rounds, the models in turn)",
            speed,
        )
    if plan:
        flops = {"control": plan["control_flops"], "result": plan["expanded_flops"]}
        tokens = {"control": plan["control_tokens"], "result": plan["expanded_tokens"]}
        row("training tokens", lambda _r, k: f"{tokens[k]:,}" if k in tokens else "—")
        row(
            "training FLOPs (6 · N · tokens)",
            lambda _r, k: f"{flops[k]:.3g}" if k in flops else "—",
        )
    for question in (recipe.chat_prompt, recipe.chat_prompt_target):
        if question and any(question in r.get("chat", {}) for r in results.values()):
            row(
                f"chat: {_cell(question)}",
                lambda r, _k, q=question: _cell(r.get("chat", {}).get(q, "—")),
            )
    return lines


def _loss_curves(recipe: Recipe, plan: dict | None, folder: Path) -> list[str]:
    """Both arms' training loss in bits per character of training text against training
    FLOPs (per token the arms' losses do not compare: their tokens hold different amounts of
    text)."""
    counts = _load(recipe.out / "pack-data" / "characters.json")
    runs = {
        "expanded": (recipe.out / "train" / "run", "tokens", "expanded_parameters"),
        "control": (recipe.out / "train-control" / "run", "control_tokens", "control_parameters"),
    }
    curves = {}
    for name, (run_dir, key, params) in runs.items():
        rows = [
            json.loads(ln) for ln in (_read(run_dir / "metrics.jsonl") or "").splitlines() if ln
        ]
        chars = sum(c["characters"] for c in counts.values())
        tokens = sum(c.get(key, 0) for c in counts.values())
        if not rows or not chars or not tokens:
            continue
        per_char = tokens / chars  # tokens per character of the mix this arm trains on
        n = plan[params] if plan else None
        seen, xs, ys = 0, [], []
        for r in rows:
            seen += r["tokens"]
            xs.append(6 * n * seen if n else r["global_step"])
            ys.append(r["loss"] * per_char / math.log(2))
        curves[name] = (xs, ys)
    if not curves:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (xs, ys) in curves.items():
        k = 5
        smooth = [
            sum(ys[max(0, i - k + 1) : i + 1]) / len(ys[max(0, i - k + 1) : i + 1])
            for i in range(len(ys))
        ]
        (line,) = ax.plot(xs, ys, alpha=0.25)
        ax.plot(xs, smooth, color=line.get_color(), label=f"{name} (mean of {k} steps)")
    ax.set_xlabel("training FLOPs" if plan else "step")
    ax.set_ylabel("training loss, bits per character")
    ax.set_title("Loss per character of training text")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "loss-per-char.png", dpi=110)
    plt.close(fig)
    return [
        "## Training loss per character",
        "",
        "Loss per token × the mix's tokens per character (each arm's own tokenizer), so the "
        "arms compare; x is the training compute spent.",
        "",
        "![loss per character](loss-per-char.png)",
    ]


def _compression_section(compression: list[dict]) -> list[str]:
    lines = [
        "## Compression (tokens per character, held-out text)",
        "",
        "| text | base tokenizer | new tokenizer | change |",
        "|---|---|---|---|",
    ]
    by = {(r["tokenizer"], r["label"]): r for r in compression}
    for label in dict.fromkeys(r["label"] for r in compression):
        old, new = by[("old", label)], by[("new", label)]
        change = new["tokens_per_char"] / old["tokens_per_char"] - 1
        lines.append(
            f"| {label} | {old['tokens_per_char']:.3f} | {new['tokens_per_char']:.3f} | "
            f"{change:+.1%} |"
        )
    return [*lines, "", "![compression](compression.png)"]


def _benchmark_section(results: dict[str, dict]) -> list[str]:
    """Accuracy ± standard error per arm; a difference from the base model within noise (95 %)
    is marked ≈."""
    base = results["base"]
    if not base.get("benchmarks"):
        return [
            "## Benchmarks",
            "",
            "No benchmark was given (no real benchmark of the target language ships among the "
            "offline assets); accuracy rows are left out rather than shown on a handful of "
            "fixture questions.",
        ]
    arms = [(key, name) for key, name in ARMS if key in results]
    lines = [
        "## Benchmarks (accuracy ± standard error; ≈: within noise of the base model)",
        "",
        "| benchmark | subject | questions | " + " | ".join(n for _, n in arms) + " |",
        "|---|---|---" + "|---" * len(arms) + "|",
    ]

    def cells(get) -> list[str]:
        out, ref = [], None
        for key, _ in arms:
            item = get(results[key])
            if not item:
                out.append("—")
                continue
            n = item.get("n", 0)
            acc, se = item["accuracy"], accuracy_stderr(item["accuracy"], n)
            mark = ""
            if ref is None:
                ref = (acc, se)
            elif within_noise(acc, se, *ref):
                mark = " ≈"
            out.append(f"{acc:.1%} ± {se:.1%}{mark}")
        return out

    def whole(name: str, n: int):
        def get(r: dict):
            item = r.get("benchmarks", {}).get(name)
            return {**item, "n": n} if item else None

        return get

    def part(name: str, subj: str):
        def get(r: dict):
            return r.get("benchmarks", {}).get(name, {}).get("subjects", {}).get(subj)

        return get

    for name, b in base["benchmarks"].items():
        n = sum(s.get("n", 0) for s in b["subjects"].values())
        lines.append(f"| {name} | (all) | {n} | " + " | ".join(cells(whole(name, n))) + " |")
        for subj, s in b["subjects"].items():
            got = cells(part(name, subj))
            lines.append(f"| {name} | {subj} | {s.get('n', 0)} | " + " | ".join(got) + " |")
    return lines


def _times(recipe: Recipe) -> list[str]:
    lines = ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    total = 0.0
    for marker in sorted(recipe.out.glob("*/STAGE.json"), key=lambda p: p.stat().st_mtime):
        seconds = json.loads(marker.read_text()).get("seconds")
        if seconds is not None and marker.parent.name != "report":
            total += seconds
            lines.append(f"| {marker.parent.name} | {seconds:.0f} |")
    return [*lines, f"| (all, this report excluded) | {total:.0f} |"]


def write_report(recipe: Recipe, folder: Path) -> Path:
    """``report.md`` (tables, plots, chat answers, verdict, targets) and ``targets.json``."""
    ev, run_dir = recipe.out / "eval", recipe.out / "train" / "run"
    results = {key: _load(ev / f"{key}.json") for key, _ in ARMS if (ev / f"{key}.json").is_file()}
    if "base" not in results or "result" not in results:
        raise PipelineError(f"report: {ev} lacks base.json or result.json; run the eval stage")
    plan = _load(recipe.out / "train-control" / "compute.json") or None
    target = recipe.eval.target_label()
    keep = [label for label in recipe.eval.text if label != target]
    changed = "".join(f" `{item}`" for item in recipe.overrides)
    recipe_line = f"Recipe: `{recipe.path}`" + (f", with{changed}" if changed else "")
    lines = ["# llamaforge pipeline report", "", recipe_line, ""]
    if results["base"].get("device"):
        where = f"{results['base']['device']} in {results['base']['dtype']}"
        lines += [f"Every model evaluated on the same device: {where}.", ""]
    if target and "control" in results:
        c, r = bpc(results["control"], target), bpc(results["result"], target)
        if c is not None and r is not None:
            flops = plan["expanded_flops"] if plan else None
            paired = paired_bpc(results["result"], results["control"], target)
            verdict = arm_verdict(target, c, r, flops, paired)
            lines += [f"**Verdict.** {verdict}", ""]
    elif target:
        lines += [
            "No control arm in this recipe (add `[control]`): the report cannot say whether "
            "the expansion beat plain continued training.",
            "",
        ]
    lines += _arms_section(recipe, results, plan)
    curves = _loss_curves(recipe, plan, folder)
    lines += ["", *curves] if curves else []
    compression = json.loads(_read(ev / "compression.json") or "[]")
    if compression:
        lines += ["", *_compression_section(compression)]
    lines += ["", *_benchmark_section(results)]
    if (run_dir / "loss.png").is_file():
        shutil.copyfile(run_dir / "loss.png", folder / "loss.png")
        lines += ["", "## Training stages of the expanded model", "", "![loss per stage](loss.png)"]
    if (ev / "compression.png").is_file():
        shutil.copyfile(ev / "compression.png", folder / "compression.png")
    answer = _chat(run_dir / "export", recipe.chat_prompt)
    lines += [
        "",
        "## The result, served on localhost (OpenAI-style chat API)",
        "",
        f"> **Q:** {recipe.chat_prompt}",
        ">",
        f"> **A:** {answer.strip()}",
        "",
        *_times(recipe),
        "",
        "## Targets",
        "",
    ]
    found = (
        checks(
            target=target,
            keep=keep,
            base=results["base"],
            result=results["result"],
            control=results.get("control"),
            chat_expect=recipe.chat_expect,
            chat_question=recipe.chat_prompt,
        )
        if target
        else []
    )
    lines += [f"- {'met' if c.met else '**MISSED**'}: {c.target} ({c.value})" for c in found]
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    targets = [{"target": c.target, "met": c.met, "value": c.value} for c in found]
    (folder / "targets.json").write_text(json.dumps(targets, indent=2, ensure_ascii=False))
    return path
