"""From tokenised documents to rows on disk: split documents longer than a row, fill rows
best-fit-decreasing per category, order them in buckets, write them as sharded HF datasets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llamaforge_datapack.binpack import best_fit_decreasing, gather_rows, split_lengths
from llamaforge_datapack.manifest import Manifest

_GATHER_ROWS = 1024
"""Rows built by one numpy gather while writing a shard."""


@dataclass
class Docs:
    """The tokenised documents to pack, one entry per copy (a weight of 2 lists one twice)."""

    spill_index: list[int] = field(default_factory=list)
    length: list[int] = field(default_factory=list)
    category: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """Rows as lists of pieces; a piece is ``length`` tokens at ``source`` in the spill."""

    rows: list[tuple[list[int], str, int]]
    """(piece indices, category, bucket), in the order rows are written."""
    source: np.ndarray
    length: np.ndarray


def plan_rows(docs: Docs, offsets: np.ndarray, max_len: int, num_bins: int, rng) -> Plan:
    """Split documents longer than a row into pieces, best-fit-decreasing per category, then
    bucket order: bucket ``k`` holds a ``1/num_bins`` of every category's rows (``rng``
    decides which, and the order inside a bucket)."""
    doc, start, length = split_lengths(np.asarray(docs.length, np.int64), max_len)
    names = sorted(set(docs.category))
    doc_category = np.asarray([names.index(c) for c in docs.category], np.int64)
    piece_category = doc_category[doc]
    buckets: list[list[tuple[list[int], str, int]]] = [[] for _ in range(num_bins)]
    for c, cat in enumerate(names):
        members = np.flatnonzero(piece_category == c)
        bins = [members[b].tolist() for b in best_fit_decreasing(length[members], max_len)]
        order = rng.permutation(len(bins))
        for k, part in enumerate(np.array_split(order, num_bins)):
            buckets[k] += [(bins[j], cat, k) for j in part.tolist()]
    rows = []
    for bucket in buckets:
        rows += [bucket[j] for j in rng.permutation(len(bucket)).tolist()]
    source = offsets[np.asarray(docs.spill_index, np.int64)[doc]] + start
    return Plan(rows=rows, source=source, length=length)


def count_rows(plan: Plan, manifest: Manifest, max_len: int) -> None:
    """Add the plan's segments and rows (per category) to ``manifest``; set its fill ratio."""
    manifest.segments += len(plan.length)
    manifest.rows += len(plan.rows)
    manifest.fill_ratio = manifest.tokens / max(manifest.rows * max_len, 1)
    counts = dict(manifest.rows_per_category)
    for _, cat, _ in plan.rows:
        counts[cat] = counts.get(cat, 0) + 1
    manifest.rows_per_category = dict(sorted(counts.items()))


def _pin_fingerprint(folder: Path) -> None:
    """datasets stamps a random fingerprint; use the data's hash so same input → same bytes."""
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text())
    digest = hashlib.sha256()
    for f in sorted(folder.glob("*.arrow")):
        digest.update(f.read_bytes())
    state["_fingerprint"] = digest.hexdigest()[:16]
    state_path.write_text(json.dumps(state, indent=2, sort_keys=True))


def write_shards(
    plan: Plan, tokens, labels, folder: Path, shard_rows: int, manifest, progress=None
) -> list[int]:
    """Write the plan's rows as ``shard-NNNNN`` dirs in ``folder`` (listed in ``manifest``);
    a shard never spans two buckets. Returns each shard's bucket."""
    from datasets import Dataset, Features, Sequence, Value

    features = Features(
        {
            "input_ids": Sequence(Value("int32")),
            "labels": Sequence(Value("int32")),
            "lengths": Sequence(Value("int32")),
            "category": Value("string"),
            "bucket": Value("int32"),
        }
    )
    spans, lo = [], 0
    while lo < len(plan.rows):  # runs of one bucket, ≤ shard_rows each
        hi, bucket = lo, plan.rows[lo][2]
        while hi < len(plan.rows) and hi - lo < shard_rows and plan.rows[hi][2] == bucket:
            hi += 1
        spans.append((lo, hi))
        lo = hi
    buckets = []
    for n, (lo, hi) in enumerate(spans):
        cols: dict[str, list] = {k: [] for k in features}
        shard = plan.rows[lo:hi]
        for part in range(0, len(shard), _GATHER_ROWS):  # bounds the gather's index array
            rows = shard[part : part + _GATHER_ROWS]
            bins = [pieces for pieces, _, _ in rows]
            for name, values in (("input_ids", tokens), ("labels", labels)):
                flat, row_offsets = gather_rows(values, plan.source, plan.length, bins)
                cols[name] += np.split(flat, row_offsets[1:-1])
            cols["lengths"] += [plan.length[pieces].tolist() for pieces in bins]
            cols["category"] += [cat for _, cat, _ in rows]
            cols["bucket"] += [bucket for _, _, bucket in rows]
        name = f"shard-{n:05d}"
        Dataset.from_dict(cols, features=features).save_to_disk(str(folder / name))
        _pin_fingerprint(folder / name)
        manifest.shards.append(name)
        buckets.append(shard[0][2])
        if progress:
            progress("writing", hi)
    return buckets
