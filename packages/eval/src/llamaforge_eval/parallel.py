"""Data-parallel evaluation: subjects spread over worker processes (one model per process).

Each worker loads the model once, in the run's dtype (from ``cuda:0`` on, the GPUs in turn; on
the CPU with its share of the cores), and scores whole subjects, so every subject keeps its
cached few-shot prefix. Results are merged in the benchmark's subject order.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from llamaforge_eval.loaders import Benchmark

_STATE: dict = {}


def _init(
    model_dir: str, batch_size: int | None, threads: int, rank_counter, device: str, dtype: str
) -> None:
    import torch

    from llamaforge_eval.runner import Runner, load_model

    with rank_counter.get_lock():
        rank = rank_counter.value
        rank_counter.value += 1
    if device == "cuda:0" and torch.cuda.device_count() > 1:
        device = f"cuda:{rank % torch.cuda.device_count()}"  # the GPUs in turn
    elif device == "cpu":
        torch.set_num_threads(threads)
    model, tok = load_model(model_dir, device=device, dtype=dtype)
    _STATE["runner"] = Runner(model, tok, batch_size=batch_size)


def _score(bench: Benchmark, n_shots: int, metric: str) -> dict:
    from llamaforge_eval.evaluate import evaluate_benchmark

    return evaluate_benchmark(_STATE["runner"], bench, n_shots=n_shots, metric=metric)


def evaluate_parallel(
    model_dir: str | Path,
    benches: list[Benchmark],
    *,
    n_shots: int,
    metric: str,
    nproc: int,
    batch_size: int | None = 8,
    device: str = "cpu",
    dtype: str = "float32",
) -> dict[str, dict]:
    """Like :func:`evaluate_benchmark` for each benchmark, with ``nproc`` processes."""
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("i", 0)
    threads = max(1, (os.cpu_count() or 1) // nproc)
    units = [(b, s) for b in benches for s in b.subjects]
    with ProcessPoolExecutor(
        nproc,
        mp_context=ctx,
        initializer=_init,
        initargs=(str(model_dir), batch_size, threads, counter, device, dtype),
    ) as pool:
        futures = [
            pool.submit(_score, Benchmark(b.name, b.kind, [s], b.language), n_shots, metric)
            for b, s in units
        ]
        parts = [f.result() for f in futures]
    merged: dict[str, dict] = {}
    for (bench, _), part in zip(units, parts, strict=True):
        out = merged.setdefault(
            bench.name, {**part, "subjects": {}, "questions": 0, "skipped": 0, "seconds": 0.0}
        )
        out["subjects"].update(part["subjects"])
        out["questions"] += part["questions"]
        out["skipped"] += part["skipped"]
        out["seconds"] = max(out["seconds"], part["seconds"])
    for out in merged.values():
        correct = sum(s["correct"] for s in out["subjects"].values())
        out["accuracy"] = correct / out["questions"] if out["questions"] else 0.0
    return merged
