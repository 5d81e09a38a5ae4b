"""The Ray engine on a local Ray instance: the same documents as the local engine, the same
bytes on every run, a bad record as one line, a killed worker retried."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from llamaforge_datapack import DataPackError, load_packed  # noqa: E402
from llamaforge_datapack.pack import PackConfig, Source, pack  # noqa: E402
from llamaforge_datapack.ray_engine import FAULT_ENV  # noqa: E402
from llamaforge_datapack.tokenize import TokenizeConfig  # noqa: E402

pytestmark = pytest.mark.slow  # a local Ray instance takes seconds to start

COUNTS = (
    "files",
    "records",
    "skipped_records",
    "documents",
    "split_documents",
    "truncated_conversations",
    "dropped_conversations",
    "tokens",
    "label_tokens",
    "tokens_per_category",
)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(corpora, asset, tmp_path_factory):
    """Real text as users bring it: People's Daily lines (long and short), a jsonl with
    multi-line fields and odd whitespace, SFT conversations, English at weight 0.5."""
    work = tmp_path_factory.mktemp("ray-inputs")
    odd = work / "odd.jsonl"
    zh = (asset("people-daily") / "train.txt").read_text(encoding="utf-8").splitlines()
    with odd.open("w", encoding="utf-8") as fh:
        for k, line in enumerate(zh[2000:2600]):
            text = line if k % 3 else f"  {line[:40]}\n\n{line[40:]}\t \u3000"
            fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            if k % 97 == 0:
                fh.write("\n")  # blank lines between records
    return [
        Source.parse(f"zh={corpora['zh']},{odd}"),
        Source.parse(f"en={corpora['en']}:0.5"),
        Source.parse(f"sft={corpora['sft']}:2"),
    ]


def _pack(asset, inputs, out: Path, **kw) -> object:
    tok = TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), max_length=512)
    cfg = dict(out_dir=out, num_bins=3, seed=7, shard_rows=200, block_records=1000)
    return pack(inputs, tok, PackConfig(**{**cfg, **kw}))


def _segments(folder: Path) -> list[bytes]:
    """Every segment (a document, or a piece of a long one) of every row, as sorted digests."""
    data, _ = load_packed([folder])
    out = []
    for row in data:
        ids = np.asarray(row["input_ids"], np.int32)
        labels = np.asarray(row["labels"], np.int32)
        at = 0
        for n in row["lengths"]:
            blob = ids[at : at + n].tobytes() + labels[at : at + n].tobytes()
            out.append(hashlib.sha256(blob).digest())
            at += n
        assert at == len(ids)
    return sorted(out)


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def both(local_ray, asset, inputs, tmp_path_factory):
    work = tmp_path_factory.mktemp("ray-out")
    local = _pack(asset, inputs, work / "local")
    first = _pack(asset, inputs, work / "ray-1", engine="ray", num_proc=2)
    return {"work": work, "local": local, "ray": first}


def test_ray_output_holds_exactly_the_local_engines_documents(both):
    local, ray_m = both["local"], both["ray"]
    for key in COUNTS:
        assert getattr(ray_m, key) == getattr(local, key), key
    assert ray_m.documents > 2000 and ray_m.split_documents > 0
    assert _segments(both["work"] / "ray-1") == _segments(both["work"] / "local")
    assert abs(ray_m.fill_ratio - local.fill_ratio) < 0.005, (ray_m.fill_ratio, local.fill_ratio)
    # bucket order, and the shards listed are exactly those written
    data, _ = load_packed([both["work"] / "ray-1"])
    buckets = np.asarray(data["bucket"])
    assert (np.diff(buckets) >= 0).all() and set(buckets.tolist()) == {0, 1, 2}
    assert len(data) == ray_m.rows == sum(ray_m.rows_per_category.values())
    on_disk = sorted(p.name for p in (both["work"] / "ray-1").glob("shard-*"))
    assert on_disk == ray_m.shards


def test_two_ray_runs_are_identical_whatever_the_worker_count(both, asset, inputs):
    second = both["work"] / "ray-2"
    _pack(asset, inputs, second, engine="ray", num_proc=1)
    assert _tree(second) == _tree(both["work"] / "ray-1")


def test_a_killed_worker_is_retried_and_nothing_is_lost_or_doubled(
    both, asset, inputs, monkeypatch, tmp_path
):
    marker = tmp_path / "died"
    monkeypatch.setenv(FAULT_ENV, f"3:{marker}")
    _pack(asset, inputs, tmp_path / "out", engine="ray", num_proc=2)
    assert marker.is_file()  # the worker on block 3 did die half-way through
    assert _tree(tmp_path / "out") == _tree(both["work"] / "ray-1")


def test_a_bad_record_is_one_line_from_the_worker(local_ray, asset, inputs, tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = [json.dumps({"text": f"第{k}行。"}, ensure_ascii=False) for k in range(600)]
    lines[412] = json.dumps({"source": "only a source"})
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataPackError) as err:
        _pack(asset, [*inputs, Source.parse(f"bad={bad}")], tmp_path / "out", engine="ray")
    assert str(err.value) == f"{bad}:413: missing field 'target'"
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))  # an interrupted run leaves no work dir
    # skipped and counted instead, with the same line
    m = _pack(asset, [Source.parse(f"bad={bad}")], tmp_path / "ok", engine="ray", on_error="skip")
    assert m.skipped_records == 1 and m.records == 599
    assert m.skipped_examples == [f"{bad}:413: missing field 'target'"]


def test_cli_engine_ray_error_is_one_line(asset, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "好"}\n{"text": 3}\n', encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llamaforge_datapack",
            "pack",
            f"x={bad}",
            "-t",
            str(asset("smollm2-135m")),
            "-o",
            str(tmp_path / "out"),
            "--engine",
            "ray",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}:2: field 'text' must be a string, got int"]
    assert "Traceback" not in proc.stderr
