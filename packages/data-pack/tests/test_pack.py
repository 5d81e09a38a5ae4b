"""Packing real corpora: no token lost, labels and boundaries right, dense, deterministic."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from llamaforge_datapack import (
    PackConfig,
    Source,
    TokenizeConfig,
    collate_packed,
    load_packed,
    pack,
    position_ids_from_lengths,
    read_records,
)
from llamaforge_datapack.tokenize import IGNORE, encode_records


def _sources(corpora, en_weight=1.0):
    return [
        Source(name="zh", inputs=[str(corpora["zh"])]),
        Source(name="reviews", inputs=[str(corpora["reviews"])]),
        Source(name="en", inputs=[str(corpora["en"])], weight=en_weight),
        Source(name="sft", inputs=[str(corpora["sft"])]),
    ]


@pytest.fixture(scope="module")
def packed(asset, corpora, tmp_path_factory):
    tok = TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), max_length=1024)
    out = tmp_path_factory.mktemp("packed") / "out"
    manifest = pack(_sources(corpora), tok, PackConfig(out_dir=out, num_bins=4, shard_rows=64))
    data, _ = load_packed([out])
    return {"out": out, "manifest": manifest, "data": data, "tok": tok}


def _segments(data):
    for row in data:
        ids, labels, start = row["input_ids"], row["labels"], 0
        for n in row["lengths"]:
            yield tuple(ids[start : start + n]), tuple(labels[start : start + n])
            start += n


def _expected(corpora, tok):
    """Every input document tokenised on its own, split into max_length chunks."""
    records = []
    for name in ("zh", "reviews", "en", "sft"):
        records += list(read_records([corpora[name]], default_category=name))
    out = []
    for doc in encode_records(records, tok):
        for s in range(0, len(doc.input_ids), tok.max_length):
            out.append(
                (
                    tuple(doc.input_ids[s : s + tok.max_length].tolist()),
                    tuple(doc.labels[s : s + tok.max_length].tolist()),
                )
            )
    return out


def test_every_token_appears_exactly_once(packed, corpora):
    got = Counter(ids for ids, _ in _segments(packed["data"]))
    want = Counter(ids for ids, _ in _expected(corpora, packed["tok"]))
    assert got == want
    m = packed["manifest"]
    assert sum(len(row["input_ids"]) for row in packed["data"]) == m.tokens
    assert m.rows == len(packed["data"]) and m.skipped_records == 0


def test_labels_equal_ids_except_masked_spans(packed, corpora):
    expected = dict(_expected(corpora, packed["tok"]))
    seen_masked = 0
    for ids, labels in _segments(packed["data"]):
        assert labels == expected[ids]
        assert all(lab in (IGNORE, tok) for lab, tok in zip(labels, ids, strict=True))
        seen_masked += IGNORE in labels
    assert seen_masked > 300  # en source spans and SFT user turns are masked


def test_rows_fit_and_positions_restart(packed):
    batch = collate_packed([packed["data"][i] for i in range(4)])
    for row, pos in zip(range(4), batch["position_ids"], strict=True):
        lengths = packed["data"][row]["lengths"]
        n = sum(lengths)
        assert n <= 1024
        assert pos[:n].tolist() == position_ids_from_lengths(lengths).tolist()
        starts = np.cumsum([0, *lengths[:-1]])
        assert all(pos[s] == 0 for s in starts)
    cu = batch["cu_seqlens"].tolist()
    assert cu[0] == 0 and cu[-1] == batch["input_ids"].numel()
    flat = collate_packed([packed["data"][i] for i in range(4)], flat=True)
    assert flat["input_ids"].shape[0] == 1
    assert (flat["labels"] != -100).sum() == (batch["labels"] != -100).sum()
    eos = 2  # <|im_end|>: documents end with a real EOS, kept and learned
    assert (flat["input_ids"] == eos).sum() >= len(flat["cu_seqlens"]) - 1
    # SmolLM2's tokenizer adds no BOS, and the manifest says what was done
    assert packed["manifest"].bos is False and packed["manifest"].eos is True


def test_fill_ratio_on_a_realistic_mix(packed):
    assert packed["manifest"].fill_ratio >= 0.99


def test_buckets_interleave_categories(packed):
    data = packed["data"]
    buckets = data["bucket"]
    assert buckets == sorted(buckets) and set(buckets) == {0, 1, 2, 3}
    cats = packed["manifest"].rows_per_category
    for k in range(4):
        in_bucket = {c for c, b in zip(data["category"], buckets, strict=True) if b == k}
        assert in_bucket == {c for c, n in cats.items() if n >= 4}


def test_same_seed_gives_byte_identical_output(packed, corpora, tmp_path):
    again = tmp_path / "again"
    pack(_sources(corpora), packed["tok"], PackConfig(out_dir=again, num_bins=4, shard_rows=64))
    files = sorted(p.relative_to(packed["out"]) for p in packed["out"].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (packed["out"] / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_weights_repeat_and_subsample(packed, corpora, tmp_path):
    m = pack(_sources(corpora, en_weight=2.0), packed["tok"], PackConfig(out_dir=tmp_path / "x"))
    assert m.tokens_per_category["en"] == 2 * packed["manifest"].tokens_per_category["en"]
    half = pack(_sources(corpora, en_weight=0.5), packed["tok"], PackConfig(out_dir=tmp_path / "y"))
    ratio = half.tokens_per_category["en"] / packed["manifest"].tokens_per_category["en"]
    assert 0.35 < ratio < 0.65
    assert half.tokens_per_category["zh"] == packed["manifest"].tokens_per_category["zh"]


def test_long_documents_are_split_not_lost(asset, corpora, tmp_path):
    tok = TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), max_length=64)
    m = pack(
        [Source(name="zh", inputs=[str(corpora["zh"])])], tok, PackConfig(out_dir=tmp_path / "o")
    )
    assert m.split_documents > 500
    data, _ = load_packed([tmp_path / "o"])
    assert sum(len(r["input_ids"]) for r in data) == m.tokens
    assert max(len(r["input_ids"]) for r in data) == 64


@pytest.mark.slow
def test_multiprocess_tokenisation_gives_the_same_rows(packed, corpora, tmp_path):
    out = tmp_path / "mp"
    pack(
        _sources(corpora),
        packed["tok"],
        PackConfig(out_dir=out, num_bins=4, shard_rows=64, num_proc=2),
    )
    data, _ = load_packed([out])
    assert data["input_ids"] == packed["data"]["input_ids"]
