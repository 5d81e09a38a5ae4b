"""The pipeline's report: before / after tables and plots, and the targets, stated plainly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llamaforge_cli.pipeline.recipe import PipelineError, Recipe

ZH_COMPRESSION_TARGET = 0.40  # Chinese tokens per character down at least 40 %
EN_BPC_TOLERANCE = 0.05  # English bits per character within +5 % of the base model


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


Check = tuple[str, bool, str]
"""(target, met, measured value)"""


def _compression_section(compression: list[dict]) -> tuple[list[str], list[Check]]:
    lines = [
        "## Compression (tokens per character, held-out text)",
        "",
        "| text | base tokenizer | new tokenizer | change |",
        "|---|---|---|---|",
    ]
    by = {(r["tokenizer"], r["label"]): r for r in compression}
    checks = []
    for label in dict.fromkeys(r["label"] for r in compression):
        old, new = by[("old", label)], by[("new", label)]
        change = new["tokens_per_char"] / old["tokens_per_char"] - 1
        lines.append(
            f"| {label} | {old['tokens_per_char']:.3f} | {new['tokens_per_char']:.3f} | "
            f"{change:+.1%} |"
        )
        if label.startswith("zh"):
            target = f"{label}: tokens per character down ≥ {ZH_COMPRESSION_TARGET:.0%}"
            checks.append((target, -change >= ZH_COMPRESSION_TARGET, f"{-change:.1%} fewer"))
    return [*lines, "", "![compression](compression.png)"], checks


def _bits_section(base: dict, result: dict) -> tuple[list[str], list[Check]]:
    lines = [
        "## Bits per character (held-out text; lower is better)",
        "",
        "| text | base model | result | change |",
        "|---|---|---|---|",
    ]
    checks = []
    for label, b in base.get("text", {}).items():
        r = result.get("text", {}).get(label)
        if not r:
            continue
        before, after = b["bits_per_char"], r["bits_per_char"]
        change = after / before - 1
        lines.append(f"| {label} | {before:.3f} | {after:.3f} | {change:+.1%} |")
        if label.startswith("zh"):
            target = f"{label}: bits per character below the base model's"
            checks.append((target, after < before, f"{before:.3f} → {after:.3f}"))
        if label.startswith("en"):
            target = f"{label}: bits per character within +{EN_BPC_TOLERANCE:.0%} of base"
            checks.append((target, change <= EN_BPC_TOLERANCE, f"{change:+.1%}"))
    return lines, checks


def _benchmark_section(base: dict, result: dict) -> list[str]:
    if not base.get("benchmarks"):
        return []
    lines = [
        "## Benchmarks (accuracy)",
        "",
        "| benchmark | subject | base | result |",
        "|---|---|---|---|",
    ]
    nan = float("nan")
    for name, b in base["benchmarks"].items():
        r = result.get("benchmarks", {}).get(name, {})
        lines.append(f"| {name} | (all) | {b['accuracy']:.1%} | {r.get('accuracy', nan):.1%} |")
        for subj, s in b["subjects"].items():
            rs = r.get("subjects", {}).get(subj, {})
            lines.append(
                f"| {name} | {subj} | {s['accuracy']:.1%} | {rs.get('accuracy', nan):.1%} |"
            )
    return lines


def write_report(recipe: Recipe, folder: Path) -> Path:
    """``report.md`` (tables, plots, the chat answer, the targets) and ``targets.json``."""
    ev, run_dir = recipe.out / "eval", recipe.out / "train" / "run"
    base, result = _load(ev / "base.json"), _load(ev / "result.json")
    compression = json.loads(_read(ev / "compression.json") or "[]")
    compression_lines, checks = _compression_section(compression)
    bits_lines, bits_checks = _bits_section(base, result)
    checks += bits_checks
    lines = ["# llamaforge pipeline report", "", f"Recipe: `{recipe.path}`", ""]
    if base.get("device"):
        where = f"{base['device']} in {base['dtype']}"
        lines += [f"Base model and result evaluated on the same device: {where}.", ""]
    lines += [*compression_lines, "", *bits_lines]
    benchmark_lines = _benchmark_section(base, result)
    lines += ["", *benchmark_lines] if benchmark_lines else []
    if (run_dir / "loss.png").is_file():
        shutil.copyfile(run_dir / "loss.png", folder / "loss.png")
        lines += ["", "## Training", "", "![loss per stage](loss.png)"]
    if (ev / "compression.png").is_file():
        shutil.copyfile(ev / "compression.png", folder / "compression.png")
    answer = _chat(run_dir / "export", recipe.chat_prompt)
    lines += [
        "",
        "## Chat with the result (served on localhost)",
        "",
        f"> **Q:** {recipe.chat_prompt}",
        ">",
        f"> **A:** {answer.strip()}",
        "",
        "## Targets",
        "",
    ]
    lines += [f"- {'met' if ok else '**MISSED**'}: {text} ({value})" for text, ok, value in checks]
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    targets = [{"target": t, "met": ok, "value": v} for t, ok, v in checks]
    (folder / "targets.json").write_text(json.dumps(targets, indent=2, ensure_ascii=False))
    return path
