"""The pipeline's report: before / after tables and plots, and the targets, stated plainly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llamaforge_cli.pipeline.recipe import Recipe

ZH_COMPRESSION_TARGET = 0.40  # Chinese tokens per character down at least 40 %
EN_BPC_TOLERANCE = 0.05  # English bits per character within +5 % of the base model


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _chat(model_dir: Path, prompt: str) -> str:
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
        while not server.started:
            time.sleep(0.05)
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=300,
            json={
                "model": "m",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 48,
                "temperature": 0,
            },
        )
        return r.json()["choices"][0]["message"]["content"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.close()


def write_report(recipe: Recipe, folder: Path) -> Path:
    out = recipe.out
    ev = out / "eval"
    base, result = _load(ev / "base.json"), _load(ev / "result.json")
    compression = (
        json.loads((ev / "compression.json").read_text())
        if (ev / "compression.json").is_file()
        else []
    )
    lines = [
        "# llamaforge pipeline report",
        "",
        f"Recipe: `{recipe.path}`",
        "",
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
            checks.append(
                (
                    f"{label}: tokens per character down ≥ {ZH_COMPRESSION_TARGET:.0%}",
                    -change >= ZH_COMPRESSION_TARGET,
                    f"{-change:.1%} fewer",
                )
            )
    lines += [
        "",
        "![compression](compression.png)",
        "",
        "## Bits per character (held-out text; lower is better)",
        "",
        "| text | base model | result | change |",
        "|---|---|---|---|",
    ]
    for label, b in base.get("text", {}).items():
        r = result.get("text", {}).get(label)
        if not r:
            continue
        change = r["bits_per_char"] / b["bits_per_char"] - 1
        lines.append(
            f"| {label} | {b['bits_per_char']:.3f} | {r['bits_per_char']:.3f} | {change:+.1%} |"
        )
        if label.startswith("zh"):
            checks.append(
                (
                    f"{label}: bits per character below the base model's",
                    r["bits_per_char"] < b["bits_per_char"],
                    f"{b['bits_per_char']:.3f} → {r['bits_per_char']:.3f}",
                )
            )
        if label.startswith("en"):
            checks.append(
                (
                    f"{label}: bits per character within +{EN_BPC_TOLERANCE:.0%} of base",
                    change <= EN_BPC_TOLERANCE,
                    f"{change:+.1%}",
                )
            )
    if base.get("benchmarks"):
        lines += [
            "",
            "## Benchmarks (accuracy)",
            "",
            "| benchmark | subject | base | result |",
            "|---|---|---|---|",
        ]
        for name, b in base["benchmarks"].items():
            r = result.get("benchmarks", {}).get(name, {})
            lines.append(
                f"| {name} | (all) | {b['accuracy']:.1%} | {r.get('accuracy', float('nan')):.1%} |"
            )
            for subj, s in b["subjects"].items():
                rs = r.get("subjects", {}).get(subj, {})
                lines.append(
                    f"| {name} | {subj} | {s['accuracy']:.1%} | "
                    f"{rs.get('accuracy', float('nan')):.1%} |"
                )
    run_dir = out / "train" / "run"
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
    for text, ok, value in checks:
        lines.append(f"- {'met' if ok else '**MISSED**'}: {text} ({value})")
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "targets.json").write_text(
        json.dumps(
            [{"target": t, "met": ok, "value": v} for t, ok, v in checks],
            indent=2,
            ensure_ascii=False,
        )
    )
    return path
