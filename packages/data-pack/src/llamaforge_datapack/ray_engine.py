"""The Ray engine (``--engine ray``): tokenise and pack on a Ray cluster's workers.

Same inputs, options and output format as the local engine. The driver splits every input
file into blocks of ``block_records`` lines (one pass counting newlines; a ``.json`` or
``.parquet`` file is one block) and hands them to Ray Data, which runs them through a pool of
``num_proc`` actors — each loads the tokenizer once. A worker reads its block (a bad record is
``file:line: field ...`` as in the local engine), tokenises it, applies the source weight,
splits long documents, packs best-fit-decreasing per category *within the block*, deals the
rows into ``num_bins`` buckets and writes them as shards of its own, under the run's work dir,
through a temporary name renamed when complete: a worker killed mid-block leaves nothing a
retry would count twice, and Ray retries the block on a new actor. The driver assembles the
manifest from what the workers report and renames the shards into bucket order.

Row order: bucket by bucket; inside a bucket, block by block — blocks taken round-robin over
the sources, so each stretch of training still sees every source — and each block's rows in
its own seeded order. Every random choice of a block is seeded by (seed, block number), so the
same inputs, seed and block size give the same bytes on every run, whatever the number of
workers and whichever worker ran which block.

On a cluster the output dir's parent must be storage every node sees (the workers write
there), and every node needs this package and the tokenizer dir at the same path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np

from llamaforge_datapack.errors import DataPackError
from llamaforge_datapack.records import FileBlock, ReadStats, expand_inputs, read_block, split_file
from llamaforge_datapack.tokenize import Encoder, TokenizeConfig

FAULT_ENV = "LLAMAFORGE_PACK_FAULT"
"""Fault drill for tests: ``BLOCK:MARKER_FILE`` makes the worker that takes block ``BLOCK``
die (``os._exit``) half-way through writing it, once — the marker file records that it did."""


def plan_blocks(sources, block_records: int) -> list[dict]:
    """Every input file's blocks as plain dicts (what Ray ships to workers), round-robin over
    the sources, numbered in that order."""
    per_source = []
    for s, source in enumerate(sources):
        blocks = [
            b for path in expand_inputs(source.inputs) for b in split_file(path, block_records)
        ]
        if not blocks:
            raise DataPackError(f"source {source.name!r}: no input files")
        per_source.append([(s, b) for b in blocks])
    order = []
    for k in range(max(len(b) for b in per_source)):
        order += [blocks[k] for blocks in per_source if k < len(blocks)]
    return [
        {
            "block": n,
            "source": s,
            "path": str(b.path),
            "start": b.start,
            "first_line": b.first_line,
            "lines": b.lines,
        }
        for n, (s, b) in enumerate(order)
    ]


class BlockPacker:
    """A Ray Data actor: tokenise and pack one block per call (the tokenizer loads once)."""

    def __init__(self, tokenize: TokenizeConfig, sources: list[dict], settings: dict, work: str):
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()  # the driver reports progress
        self.tokenize = tokenize
        self.encoder = Encoder(tokenize)
        self.sources, self.settings, self.work = sources, settings, Path(work)

    def __call__(self, batch: dict) -> dict:
        reports = []
        for i in range(len(batch["block"])):
            spec = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in batch.items()}
            try:
                report = self.pack_block(spec)
            except DataPackError as exc:
                report = {"block": spec["block"], "error": str(exc)}
            reports.append(json.dumps(report))
        return {"block": batch["block"], "report": np.asarray(reports, dtype=object)}

    def pack_block(self, spec: dict) -> dict:
        from llamaforge_datapack.manifest import Manifest
        from llamaforge_datapack.pack import add_documents, add_read_stats
        from llamaforge_datapack.rows import Docs, count_rows, plan_rows, write_shards
        from llamaforge_datapack.spill import Spill

        n, source = spec["block"], self.sources[spec["source"]]
        block = FileBlock(Path(spec["path"]), spec["start"], spec["first_line"], spec["lines"])
        final = self.work / f"block-{n:06d}"
        tmp = self.work / f".block-{n:06d}.{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            rng = np.random.default_rng([self.settings["seed"], n])
            stats, part = ReadStats(), Manifest()
            records = read_block(
                block,
                on_error=self.settings["on_error"],
                stats=stats,
                default_category=source["name"],
            )
            encoded = (self.encoder.encode(record) for record in records)
            spill, docs = Spill(tmp / "spill"), Docs()
            max_len = self.tokenize.max_length
            seed = self.settings["seed"]
            add_documents(encoded, source["weight"], seed, spill, docs, part, max_len)
            add_read_stats(part, stats)
            seen = stats.records + stats.skipped > 0  # a record, valid or not
            tokens, labels = spill.close()
            buckets: list[int] = []
            if docs.length:
                offsets = np.asarray(spill.offsets, np.int64)
                plan = plan_rows(docs, offsets, max_len, self.settings["num_bins"], rng)
                count_rows(plan, part, max_len)
                self._maybe_die(n, tmp)
                buckets = write_shards(plan, tokens, labels, tmp, self.settings["shard_rows"], part)
            del tokens, labels
            shutil.rmtree(tmp / "spill")
            if final.exists():  # an earlier attempt finished but was not reported
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        report = asdict(part)
        report.update(block=n, path=spec["path"], seen=seen, buckets=buckets, dir=final.name)
        return report

    @staticmethod
    def _maybe_die(n: int, tmp: Path) -> None:
        drill = os.environ.get(FAULT_ENV, "")
        block, _, marker = drill.partition(":")
        if drill and block == str(n) and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            (tmp / "half-written").write_text("")
            os._exit(1)


def _fault_drill_env() -> dict | None:
    """Pass the fault drill's variable to the workers (they do not see the driver's env)."""
    drill = os.environ.get(FAULT_ENV)
    return {"env_vars": {FAULT_ENV: drill}} if drill else None


def pack_with_ray(sources, tokenize, config, tmp: Path, manifest, progress) -> None:
    """Fill ``tmp`` (the run's work dir) and ``manifest`` using Ray Data; see the module."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise DataPackError(
            f"--engine ray needs Ray Data ({exc}): pip install 'llamaforge-datapack[ray]'"
        ) from None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers fork after this
    specs = plan_blocks(sources, config.block_records)
    started = False
    if not ray.is_initialized():
        kwargs = {"address": config.ray_address} if config.ray_address else {}
        if not config.ray_address:
            # one CPU per worker, one for Ray Data's own tasks; Ray's C++ core logs a warning
            # about restartable actors at error level: keep only fatal ones on this terminal
            kwargs.update(num_cpus=config.num_proc + 1, include_dashboard=False)
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        try:
            ray.init(log_to_driver=False, logging_level=logging.ERROR, **kwargs)
        except ConnectionError as exc:
            raise DataPackError(f"ray: cannot reach {config.ray_address} ({exc})") from None
        started = True
    try:
        reports = _run_blocks(ray, specs, sources, tokenize, config, tmp, progress)
    finally:
        if started:
            ray.shutdown()
    _assemble(reports, specs, tmp, manifest, config.num_bins, tokenize.max_length)


def _run_blocks(ray, specs, sources, tokenize, config, tmp: Path, progress) -> list[dict]:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # the driver reports progress
    ds = ray.data.from_items(specs, override_num_blocks=len(specs)).map_batches(
        BlockPacker,
        fn_constructor_kwargs={
            "tokenize": tokenize,
            "sources": [{"name": s.name, "weight": s.weight} for s in sources],
            "settings": {
                "seed": config.seed,
                "num_bins": config.num_bins,
                "shard_rows": config.shard_rows,
                "on_error": config.on_error,
            },
            "work": str(tmp / "blocks"),
        },
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.num_proc),
        num_cpus=1,  # actors are restarted and their tasks retried: Ray Data's default
        runtime_env=_fault_drill_env(),
    )
    reports = []
    for row in ds.iter_rows():
        reports.append(json.loads(row["report"]))
        if progress:
            progress("blocks", len(reports))
    reports.sort(key=lambda r: r["block"])
    if len(reports) != len(specs) or [r["block"] for r in reports] != list(range(len(specs))):
        raise DataPackError("ray: some blocks were not reported; nothing was written")
    errors = [r for r in reports if "error" in r]
    if errors:  # the first bad block in input order, as the local engine would report it
        raise DataPackError(errors[0]["error"])
    return reports


def _assemble(reports, specs, tmp: Path, manifest, num_bins: int, max_len: int) -> None:
    """Sum the blocks' counts into ``manifest``; move their shards into bucket order."""
    seen: dict[str, bool] = {}
    for r in reports:
        seen[r["path"]] = seen.get(r["path"], False) or r["seen"]
        for key in (
            "records",
            "skipped_records",
            "documents",
            "split_documents",
            "segments",
            "truncated_conversations",
            "dropped_conversations",
            "rows",
            "tokens",
            "label_tokens",
        ):
            setattr(manifest, key, getattr(manifest, key) + r[key])
        room = 20 - len(manifest.skipped_examples)
        manifest.skipped_examples += r["skipped_examples"][:room]
        for name, field in (
            ("tokens_per_category", manifest.tokens_per_category),
            ("rows_per_category", manifest.rows_per_category),
        ):
            for cat, value in r[name].items():
                field[cat] = field.get(cat, 0) + value
    for path in dict.fromkeys(s["path"] for s in specs):
        if not seen[path]:
            raise DataPackError(f"{path}: empty file (no records)")
    manifest.files = len(seen)
    if not manifest.documents:
        raise DataPackError("no documents to pack (every record was skipped or dropped)")
    manifest.tokens_per_category = dict(sorted(manifest.tokens_per_category.items()))
    manifest.rows_per_category = dict(sorted(manifest.rows_per_category.items()))
    manifest.fill_ratio = manifest.tokens / max(manifest.rows * max_len, 1)
    for bucket in range(num_bins):
        for r in reports:
            for shard, b in zip(r["shards"], r["buckets"], strict=True):
                if b == bucket:
                    name = f"shard-{len(manifest.shards):05d}"
                    (tmp / "blocks" / r["dir"] / shard).rename(tmp / name)
                    manifest.shards.append(name)
    shutil.rmtree(tmp / "blocks")
