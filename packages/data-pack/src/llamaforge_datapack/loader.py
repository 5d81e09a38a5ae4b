"""Reading packed data for training: load shards, resume mid-epoch, collate without padding.

* :func:`load_packed` opens one or more packed dirs (e.g. packed on several machines from
  disjoint inputs) as one dataset, after checking they share tokenizer and ``max_length``, and
  keeps the bucket order across them.
* :class:`ResumableSampler` yields row indices for one rank; its ``state_dict`` records how many
  rows were consumed, so a resumed run continues with exactly the remaining rows.
* :func:`collate_packed` builds ``input_ids``, ``labels``, ``position_ids`` (restarting at each
  document) and ``cu_seqlens`` (document boundaries for varlen attention). EOS stays a real
  token; nothing inside a row is padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llamaforge_datapack.errors import DataPackError
from llamaforge_datapack.manifest import Manifest


def load_packed(dirs: Sequence[str | Path]):
    """One ``datasets.Dataset`` over every shard of ``dirs``, rows in bucket order.

    Returns ``(dataset, manifests)``. Raises when the dirs were packed with different tokenizers
    or lengths.
    """
    from datasets import concatenate_datasets, load_from_disk

    if not dirs:
        raise DataPackError("no packed dataset dirs given")
    manifests = [Manifest.read(Path(d)) for d in dirs]
    first = manifests[0]
    for d, m in zip(dirs, manifests, strict=True):
        if (m.tokenizer_sha256, m.max_length) != (first.tokenizer_sha256, first.max_length):
            raise DataPackError(
                f"{d} was packed with another tokenizer or max_length than "
                f"{dirs[0]}; they cannot be trained on together"
            )
    parts = [
        load_from_disk(str(Path(d) / s))
        for d, m in zip(dirs, manifests, strict=True)
        for s in m.shards
    ]
    data = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if len(dirs) > 1:  # interleave the machines' outputs bucket by bucket (stable)
        order = np.argsort(np.asarray(data["bucket"]), kind="stable")
        data = data.select(order.tolist())
    return data, manifests


@dataclass
class ResumableSampler:
    """Row indices for one rank, in dataset order or shuffled per epoch, resumable mid-epoch."""

    num_rows: int
    rank: int = 0
    world_size: int = 1
    shuffle: bool = False
    seed: int = 0
    epoch: int = 0
    consumed: int = 0  # indices of this rank already yielded in this epoch

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise DataPackError(f"rank {self.rank} is outside world size {self.world_size}")

    def _indices(self) -> np.ndarray:
        order = (
            np.random.default_rng(self.seed + self.epoch).permutation(self.num_rows)
            if self.shuffle
            else np.arange(self.num_rows)
        )
        usable = len(order) - len(order) % self.world_size  # same count on every rank
        return order[:usable][self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self._indices()) - self.consumed

    def __iter__(self) -> Iterator[int]:
        indices = self._indices()
        while self.consumed < len(indices):
            index = int(indices[self.consumed])
            self.consumed += 1
            yield index

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.consumed = epoch, 0

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "seed": self.seed,
            "num_rows": self.num_rows,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["num_rows"], state["world_size"]) != (self.num_rows, self.world_size):
            raise DataPackError("sampler state is for another dataset size or world size")
        self.epoch, self.consumed, self.seed = state["epoch"], state["consumed"], state["seed"]


def position_ids_from_lengths(lengths: Sequence[int]) -> np.ndarray:
    """0, 1, ... restarting at every document: ``[3, 2]`` → ``[0, 1, 2, 0, 1]``."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total) - starts


def collate_packed(rows: Sequence[dict], *, pad_id: int = 0, flat: bool = False) -> dict:
    """Batch packed rows into torch tensors.

    ``flat=True``: one sequence ``[1, total]`` made of all rows — no padding at all, which
    varlen attention wants. ``flat=False``: ``[batch, longest]``; a row shorter than the
    longest is followed by padding (label -100, its own position run) that forms a separate
    segment in ``cu_seqlens``, so it never attends to or is attended by real tokens.
    Returns ``input_ids``, ``labels``, ``position_ids``, ``cu_seqlens`` (int32, over the
    flattened batch) and ``max_seqlen``.
    """
    try:
        import torch
    except ImportError:
        raise DataPackError(
            "collate_packed builds torch tensors: pip install 'llamaforge-datapack[torch]'"
        ) from None

    if not rows:
        raise DataPackError("cannot collate an empty batch")
    ids = [np.asarray(r["input_ids"], np.int64) for r in rows]
    labels = [np.asarray(r["labels"], np.int64) for r in rows]
    lengths = [list(r["lengths"]) for r in rows]
    for k, (i, ln) in enumerate(zip(ids, lengths, strict=True)):
        if sum(ln) != len(i):
            raise DataPackError(f"row {k}: lengths sum to {sum(ln)} but it has {len(i)} tokens")
    if flat:
        ids, labels = [np.concatenate(ids)], [np.concatenate(labels)]
        lengths = [[n for ln in lengths for n in ln]]
    longest = max(len(i) for i in ids)
    seg_lengths: list[int] = []
    out_ids, out_labels, out_pos = [], [], []
    for i, lab, ln in zip(ids, labels, lengths, strict=True):
        pad = longest - len(i)
        segs = ln + ([pad] if pad else [])
        out_ids.append(np.concatenate([i, np.full(pad, pad_id)]))
        out_labels.append(np.concatenate([lab, np.full(pad, -100)]))
        out_pos.append(position_ids_from_lengths(segs))
        seg_lengths += segs
    cu = np.concatenate([[0], np.cumsum(seg_lengths)])
    return {
        "input_ids": torch.from_numpy(np.stack(out_ids)),
        "labels": torch.from_numpy(np.stack(out_labels)),
        "position_ids": torch.from_numpy(np.stack(out_pos)),
        "cu_seqlens": torch.from_numpy(cu.astype(np.int32)),
        "max_seqlen": int(max(seg_lengths)),
    }
