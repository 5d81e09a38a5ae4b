"""Batches for a stage: packed rows from llamaforge-datapack, or random rows (benchmark mode)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from llamaforge_trainer.errors import TrainError


def load_stage_data(dirs: list[str]):
    """(dataset, manifests) for a stage's packed dirs, with a clear error for a missing one."""
    from pathlib import Path

    from llamaforge_datapack import DataPackError, load_packed

    for d in dirs:
        if not Path(d).is_dir():
            raise TrainError(f"dataset {d} does not exist (pack it with `llamaforge data pack`)")
    try:
        return load_packed(dirs)
    except DataPackError as exc:
        raise TrainError(str(exc)) from None


def random_rows(num_rows: int, length: int, vocab: int, seed: int) -> list[dict]:
    """Benchmark mode: full rows of random ids, each one document."""
    rng = np.random.default_rng(seed)
    return [
        {
            "input_ids": rng.integers(0, vocab, length).tolist(),
            "labels": rng.integers(0, vocab, length).tolist(),
            "lengths": [length],
        }
        for _ in range(num_rows)
    ]


def micro_batches(data, sampler, size: int, flat: bool) -> Iterator[dict]:
    """Endless micro-batches in sampler order; a new epoch starts when the data runs out."""
    from llamaforge_datapack import collate_packed

    if len(data) < sampler.world_size:
        raise TrainError(
            f"the dataset has {len(data)} rows, fewer than {sampler.world_size} processes"
        )
    while True:
        rows = []
        for index in sampler:
            rows.append(data[index])
            if len(rows) == size:
                batch = collate_packed(rows, flat=flat)
                batch["lengths"] = [n for r in rows for n in r["lengths"]]
                batch["real_tokens"] = sum(batch["lengths"])  # padding excluded
                yield batch
                rows = []
        sampler.set_epoch(sampler.epoch + 1)


def target_count(batch: dict) -> int:
    """Positions with a target (what the loss is averaged over) — the same rule as the loss."""
    from llamaforge_trainer.packed import IGNORE, shift_labels

    return int((shift_labels(batch["labels"], batch["position_ids"]) != IGNORE).sum())


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def stack_micro_batches(batches: list[dict]) -> dict:
    """One batch of a step's micro-batches for the pipeline schedule, which cuts it back into
    equal slices: each is padded to the longest (input 0, label -100, positions of a separate
    run, so padding is its own document and never a target) and they are concatenated."""
    longest = max(b["input_ids"].shape[1] for b in batches)
    parts: dict[str, list[torch.Tensor]] = {"input_ids": [], "labels": [], "position_ids": []}
    for b in batches:
        rows, pad = b["input_ids"].shape[0], longest - b["input_ids"].shape[1]
        fill = {
            "input_ids": torch.zeros(rows, pad, dtype=b["input_ids"].dtype),
            "labels": torch.full((rows, pad), -100, dtype=b["labels"].dtype),
            "position_ids": torch.arange(pad, dtype=b["position_ids"].dtype).expand(rows, pad),
        }
        for key, tensors in parts.items():
            tensors.append(torch.cat([b[key], fill[key]], dim=1))
    return {key: torch.cat(tensors) for key, tensors in parts.items()}
