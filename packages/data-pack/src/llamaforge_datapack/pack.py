"""The packing pipeline: read → tokenise → spill → split long documents → best-fit-decreasing
per category → bucket order → sharded HF datasets dirs + manifest.

Output (``out_dir``), format ``llamaforge-packed`` version 1::

    manifest.json          # counts, settings, tokenizer fingerprint, shard list
    shard-00000/ ...       # each a ``datasets.Dataset.save_to_disk`` dir with columns
                           #   input_ids  list<int32>  (max_length or fewer tokens)
                           #   labels     list<int32>  (-100 where not learned)
                           #   lengths    list<int32>  (segment lengths; position ids restart
                           #                            at 0 at each, attention never crosses)
                           #   category   string,  bucket  int32

Rows never mix categories, so each category can be split into ``num_bins`` bins and bucket ``k``
holds bin ``k`` of every category (Colossal-LLaMA's bucket order: every stretch of training sees
the whole mix). Rows are written in bucket order. Nothing is dropped silently: every count is in
the manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llamaforge_datapack.errors import DataPackError
from llamaforge_datapack.manifest import FORMAT, Manifest
from llamaforge_datapack.records import OnError, ReadStats, read_records
from llamaforge_datapack.rows import Docs, count_rows, plan_rows, write_shards
from llamaforge_datapack.spill import Spill
from llamaforge_datapack.tokenize import (
    Encoder,
    TokenizeConfig,
    encode_records,
    tokenizer_fingerprint,
)

_WORK_MARKER = ".llamaforge-pack-work"
"""In a run's temporary dir: the pid that owns it (a later run removes it once that is gone)."""


@dataclass(kw_only=True)
class Source:
    """A named group of inputs with a mixture weight."""

    name: str
    """Category of its records unless a record names its own."""
    inputs: list[str]
    """Files, dirs or globs."""
    weight: float = 1.0
    """Repeat factor: 2.0 includes every document twice, 0.5 a seeded half of them."""

    @classmethod
    def parse(cls, spec: str, index: int = 0) -> Source:
        """``NAME=PATHS[:WEIGHT]`` (PATHS comma-separated files, dirs or globs) or a bare path,
        named ``source{index}``. A ``:TAIL`` that is not a number stays part of the path."""
        name, sep, rest = spec.partition("=")
        if not sep:
            name, rest = f"source{index}", spec
        weight = 1.0
        head, colon, tail = rest.rpartition(":")
        if colon and tail:
            try:
                weight = float(tail)
                rest = head
            except ValueError:
                pass
        return cls(name=name, inputs=[p for p in rest.split(",") if p], weight=weight)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise DataPackError(f"source {self.name!r} has no inputs")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise DataPackError(f"source {self.name!r}: weight must be > 0, got {self.weight}")


@dataclass(kw_only=True)
class PackConfig:
    """Settings of :func:`pack`."""

    out_dir: Path
    """Output dir (written to a temporary sibling, then renamed)."""
    num_bins: int = 1
    """Category bins for bucket ordering (1: no buckets)."""
    seed: int = 42
    """Seed for row order within buckets and for fractional weights."""
    shard_rows: int = 8192
    """Rows per output shard."""
    num_proc: int = 1
    """Tokenizer worker processes."""
    on_error: OnError = OnError.FAIL
    """``fail`` on the first bad record, or ``skip`` and count it."""
    overwrite: bool = False
    """Replace an existing ``out_dir``."""
    engine: str = "local"
    """``local`` (this machine's cores) or ``ray`` (Ray Data: tokenise and pack blocks on a
    Ray cluster's workers; ``num_proc`` is then the number of workers)."""
    ray_address: str | None = None
    """ray: the cluster to join (``ray start --head`` prints it); none starts a local one."""
    block_records: int = 20000
    """ray: lines of an input file per block (a block is tokenised and packed by one worker)."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.on_error = OnError(self.on_error)
        if self.engine not in ("local", "ray"):
            raise DataPackError(f"engine must be local or ray, got {self.engine!r}")
        problems = [
            f"{name} must be ≥ 1, got {value}"
            for name, value in (
                ("num_bins", self.num_bins),
                ("shard_rows", self.shard_rows),
                ("num_proc", self.num_proc),
                ("block_records", self.block_records),
            )
            if value < 1
        ]
        if problems:
            raise DataPackError("; ".join(problems))


def pack(
    sources: list[Source],
    tokenize: TokenizeConfig,
    config: PackConfig,
    progress: Callable[[str, int], None] | None = None,
) -> Manifest:
    """Pack ``sources`` into ``config.out_dir``; return the manifest (also written there).

    Args:
        sources: named input groups with weights.
        tokenize: tokenizer dir, max length, template, bos / eos.
        config: output, bins, seed, sharding, processes, error policy.
        progress: called as ``progress(stage, count)`` while working.
    """
    out = config.out_dir
    _check_output_dir(out, config.overwrite)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise DataPackError(f"source names must be unique, got {names}")
    if config.engine == "ray":
        from llamaforge_datapack.ray_engine import pack_with_ray

        run = pack_with_ray
    else:
        run = _pack_here
    encoder = Encoder(tokenize)  # a bad tokenizer fails here; BOS / EOS as resolved for it
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_work_dirs(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    (tmp / _WORK_MARKER).write_text(str(os.getpid()))
    try:
        manifest = Manifest(
            tokenizer=str(tokenize.tokenizer_dir),
            tokenizer_sha256=tokenizer_fingerprint(tokenize.tokenizer_dir),
            max_length=tokenize.max_length,
            template=tokenize.template,
            bos=encoder.bos is not None,
            eos=encoder.eos is not None,
            seed=config.seed,
            num_bins=config.num_bins,
            sources={s.name: s.weight for s in sources},
        )
        run(sources, tokenize, config, tmp, manifest, progress)
        (tmp / _WORK_MARKER).unlink()
        (tmp / "manifest.json").write_text(
            json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n"
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _pack_here(sources, tokenize, config, tmp: Path, manifest: Manifest, progress) -> None:
    """The local engine: every step in this process (tokenising in ``num_proc`` workers)."""
    rng = np.random.default_rng(config.seed)
    spill = Spill(tmp / "spill")
    docs = Docs()
    for source in sources:
        stats = ReadStats()
        records = read_records(
            source.inputs, on_error=config.on_error, stats=stats, default_category=source.name
        )
        encoded = encode_records(records, tokenize, num_proc=config.num_proc)
        add_documents(
            encoded,
            source.weight,
            config.seed,
            spill,
            docs,
            manifest,
            tokenize.max_length,
            progress,
        )
        add_read_stats(manifest, stats)
    if not docs.length:
        raise DataPackError("no documents to pack (every record was skipped or dropped)")
    tokens, labels = spill.close()
    offsets = np.asarray(spill.offsets, np.int64)
    plan = plan_rows(docs, offsets, tokenize.max_length, config.num_bins, rng)
    count_rows(plan, manifest, tokenize.max_length)
    write_shards(plan, tokens, labels, tmp, config.shard_rows, manifest, progress)
    shutil.rmtree(tmp / "spill")


def _check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output this command may not replace: '.', '/', home, a
    parent of the current dir, a file or symlink, and any existing dir that is not a packed
    dir (``manifest.json`` of this format) or empty."""
    target = out.resolve()
    cwd = Path.cwd().resolve()
    if target in {Path("/").resolve(), Path.home().resolve(), cwd, *cwd.parents}:
        raise DataPackError(f"{out}: refusing to write the output into {target}; give a new dir")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        kind = "a symlink" if out.is_symlink() else "a file"
        raise DataPackError(f"{out} is {kind}, not an output dir; give a new dir")
    if not out.exists():
        return
    if not overwrite:
        raise DataPackError(f"{out} already exists; pass --overwrite to replace it")
    try:
        Manifest.read(out)
    except DataPackError:
        if any(out.iterdir()):
            raise DataPackError(
                f"{out} is not a packed dir (no valid {FORMAT} manifest.json); --overwrite "
                "replaces only packed dirs: remove it yourself or give a new dir"
            ) from None


def _remove_stale_work_dirs(out: Path) -> None:
    """Remove the work dirs of earlier runs into ``out`` that were killed (their process is
    gone): SIGKILL leaves no chance to clean up, so the next run does."""
    for work in out.parent.glob(f".{out.name}.tmp-*"):
        marker = work / _WORK_MARKER
        if not marker.is_file():
            continue
        try:
            pid = int(marker.read_text())
            os.kill(pid, 0)  # still running: not ours to remove
        except (ValueError, ProcessLookupError):
            shutil.rmtree(work, ignore_errors=True)
        except PermissionError:
            pass


def keeps_extra_copy(seed: int, origin: str, frac: float) -> bool:
    """Whether a document gets the fractional part of its source's weight: a hash of the seed
    and the record's ``file:line``, so the choice is the same whichever engine, block or
    order reads it."""
    digest = hashlib.blake2b(f"{seed}\0{origin}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < frac


def add_documents(
    encoded, weight, seed, spill, docs: Docs, manifest: Manifest, max_len: int, progress=None
) -> None:
    """Spill each tokenised document and list it ``weight`` times (the fractional part decided
    per document by :func:`keeps_extra_copy`); count what is added, truncated or dropped in
    ``manifest``."""
    whole, frac = int(weight), weight - int(weight)
    for doc in encoded:
        manifest.truncated_conversations += doc.truncated
        if doc.dropped:
            manifest.dropped_conversations += 1
            continue
        copies = whole + (1 if frac and keeps_extra_copy(seed, doc.origin, frac) else 0)
        if copies == 0:
            continue
        index = spill.add(doc.input_ids, doc.labels)
        n = len(doc.input_ids)
        docs.spill_index += [index] * copies
        docs.length += [n] * copies
        docs.category += [doc.category] * copies
        manifest.documents += copies
        manifest.split_documents += copies * (n > max_len)
        manifest.tokens += copies * n
        manifest.label_tokens += copies * int((doc.labels != -100).sum())
        manifest.tokens_per_category[doc.category] = (
            manifest.tokens_per_category.get(doc.category, 0) + copies * n
        )
        if progress and manifest.documents % 1000 < copies:
            progress("tokenising", manifest.documents)


def add_read_stats(manifest: Manifest, stats: ReadStats) -> None:
    """Add what a reader saw (files, records, skipped ones) to ``manifest``."""
    manifest.files += stats.files
    manifest.records += stats.records
    manifest.skipped_records += stats.skipped
    manifest.skipped_examples += stats.skipped_examples[: 20 - len(manifest.skipped_examples)]
