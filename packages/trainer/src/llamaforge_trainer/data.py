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


def micro_batches(data, sampler, size: int, flat: bool, multiple: int = 1) -> Iterator[dict]:
    """Endless micro-batches in sampler order; a new epoch starts when the data runs out.
    ``multiple``: the row length is padded up to a multiple of it (sequence parallelism cuts
    every row into that many equal slices)."""
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
                batch = pad_to_multiple(collate_packed(rows, flat=flat), multiple)
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


def pad_to(batch: dict, length: int) -> dict:
    """``batch`` with its rows padded on the right to ``length``: input 0, label -100 and
    positions of a run of their own, so padding is a separate document and never a target
    (the mask, the spans and the loss all follow from the position ids). ``cu_seqlens`` and
    ``max_seqlen``, which would no longer describe it, are dropped; other entries are kept. A
    batch already that long is returned unchanged."""
    rows, pad = batch["input_ids"].shape[0], length - batch["input_ids"].shape[1]
    if pad <= 0:
        return batch
    fill = {
        "input_ids": torch.zeros(rows, pad, dtype=batch["input_ids"].dtype),
        "labels": torch.full((rows, pad), -100, dtype=batch["labels"].dtype),
        "position_ids": torch.arange(pad, dtype=batch["position_ids"].dtype).expand(rows, pad),
    }
    kept = {k: v for k, v in batch.items() if k not in ("cu_seqlens", "max_seqlen")}
    return {**kept, **{key: torch.cat([batch[key], part], dim=1) for key, part in fill.items()}}


def pad_to_multiple(batch: dict, multiple: int) -> dict:
    """:func:`pad_to` the next multiple of ``multiple`` of the row length."""
    length = batch["input_ids"].shape[1]
    return pad_to(batch, -(-length // multiple) * multiple)


def stack_micro_batches(batches: list[dict]) -> dict:
    """One batch of a step's micro-batches for the pipeline schedule, which cuts it back into
    equal slices: each is padded (:func:`pad_to`) to the longest and they are concatenated."""
    longest = max(b["input_ids"].shape[1] for b in batches)
    padded = [pad_to(b, longest) for b in batches]
    return {
        key: torch.cat([b[key] for b in padded]) for key in ("input_ids", "labels", "position_ids")
    }
