#!/usr/bin/env python3
"""Benchmark: 16 concurrent clients on `llamaforge serve` vs the same requests one at a time.

Model: SmolLM2-135M (the workspace asset), CPU, greedy, 48 new tokens per request, 16
different chat prompts, the same dtype on both sides (``--dtype``; float32 by default, bfloat16
uses the CPU's bf16 matrix units where it has them). Baseline: plain ``model.generate`` on each
prompt in turn, in this process. Ours: ``llamaforge serve`` in its own process on localhost, 16
client threads streaming at once. Prints output tokens/s of both and the ratio (target ≥ 4×),
and p50 / p95 time to first token of the concurrent run.

    python tools/bench/serve.py [--clients 16] [--tokens 48]
    .venv-vllm/bin/python tools/bench/serve.py --backend vllm     # the vLLM backend
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "What is 12 times 7?",
    "Write a haiku about rain.",
    "Who wrote Hamlet?",
    "What is photosynthesis?",
    "Give me a synonym for happy.",
    "How many legs does a spider have?",
    "What is the boiling point of water?",
    "Translate 'thank you' to French.",
    "What is a prime number?",
    "Describe a cat in one sentence.",
    "What is the largest planet?",
    "Why is the sky blue?",
    "Name a famous painter.",
    "What does a CPU do?",
]


def baseline(model_dir: Path, prompts: list[str], tokens: int, dtype: str) -> tuple[float, int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=getattr(torch, dtype))
    model.eval()
    start, produced = time.perf_counter(), 0
    for p in prompts:
        text = tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
        )
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        out = model.generate(
            ids, max_new_tokens=tokens, do_sample=False, pad_token_id=tok.eos_token_id
        )
        produced += out.shape[1] - ids.shape[1]
    return time.perf_counter() - start, produced


def _metric(base: str, name: str) -> float:
    import httpx

    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"{name} missing from /metrics")


def concurrent(
    model_dir: Path, prompts: list[str], tokens: int, backend: str, dtype: str
) -> tuple[float, int, list]:
    """The real server in its own process (as in production: clients do not share its GIL)."""
    import socket
    import subprocess

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    cmd = [
        str(Path(sys.executable).parent / "llamaforge"),
        "serve",
        str(model_dir),
        "--port",
        str(port),
        "--backend",
        backend,
        "--dtype",
        dtype,
        "--max-batch",
        str(len(prompts)),
        "--max-queue",
        str(4 * len(prompts)),
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ttft: list[float] = []

    def client(p: str) -> None:
        sent = time.perf_counter()
        first = None
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": p}],
            "max_tokens": tokens,
            "temperature": 0,
            "stream": True,
        }
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=600) as r:
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = json.loads(line[6:])["choices"][0].get("delta", {})
                if delta.get("content") and first is None:
                    first = time.perf_counter() - sent
        ttft.append(first or 0.0)

    try:
        deadline = time.time() + 600
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"server did not start: {' '.join(cmd)}")
            time.sleep(0.5)
        client(prompts[0])  # warm-up
        before = _metric(base, "llamaforge_generated_tokens")
        threads = [threading.Thread(target=client, args=(p,)) for p in prompts]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        produced = int(_metric(base, "llamaforge_generated_tokens") - before)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return seconds, produced, ttft


def main() -> int:
    parser = argparse.ArgumentParser(description="serving benchmark (CPU)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--backend", default="transformers", help="transformers or vllm")
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16 (both sides)")
    parser.add_argument("--gpu", action="store_true", help="(CPU benchmark: nothing to do)")
    args = parser.parse_args()
    if args.gpu:
        print("serve: CPU benchmark; nothing to run on the GPU")
        return 0
    from llamaforge_cli.assets import ensure_asset

    model = ensure_asset("smollm2-135m")
    prompts = (QUESTIONS * (args.clients // len(QUESTIONS) + 1))[: args.clients]
    t_base, n_base = baseline(model, prompts, args.tokens, args.dtype)
    t_ours, n_ours, ttft = concurrent(model, prompts, args.tokens, args.backend, args.dtype)
    ttft.sort()
    print(
        f"{args.clients} requests, up to {args.tokens} new tokens each, SmolLM2-135M "
        f"{args.dtype} CPU"
    )
    print(f"one at a time (model.generate): {n_base / t_base:6.1f} output tok/s ({t_base:.1f} s)")
    print(
        f"{args.clients} concurrent clients ({args.backend}): {n_ours / t_ours:6.1f} output tok/s "
        f"({t_ours:.1f} s)"
    )
    print(
        f"ratio: {(n_ours / t_ours) / (n_base / t_base):.1f}× (target ≥ 4×); time to first "
        f"token p50 {statistics.median(ttft):.2f} s, p95 {ttft[int(0.95 * (len(ttft) - 1))]:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
