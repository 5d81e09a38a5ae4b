"""`llamaforge vocab ...` end to end through the umbrella CLI, and the compression report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llamaforge_cli.main import main
from llamaforge_tokenizer import measure, plot_compression


def test_learn_expand_report_on_the_cli(asset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    base = asset("llama2-tokenizer")
    zh = asset("people-daily")
    pieces, out = tmp_path / "pieces.jsonl", tmp_path / "tok"
    assert (
        main(
            [
                "vocab",
                "learn",
                str(base),
                str(zh / "train.txt"),
                "-o",
                str(pieces),
                "--num-pieces",
                "500",
                "--max-corpus-chars",
                "100000",
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in pieces.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 500 and {"piece", "saving", "count", "kind"} <= set(rows[0])
    assert main(["vocab", "expand", str(base), str(pieces), "-o", str(out)]) == 0
    report = json.loads((out / "expansion_report.json").read_text())
    assert report["added"] == 500 and report["new_size"] % 64 == 0
    png, js = tmp_path / "c.png", tmp_path / "c.json"
    assert (
        main(
            [
                "vocab",
                "report",
                "--old",
                str(base),
                "--new",
                str(out),
                "--text",
                f"zh={zh / 'heldout.txt'}",
                "--text",
                f"en={asset('botchan') / 'heldout.txt'}",
                "--plot",
                str(png),
                "--json",
                str(js),
            ]
        )
        == 0
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "tokens/char" in table and "zh" in table and "en" in table
    data = {(r["tokenizer"], r["label"]): r for r in json.loads(js.read_text())}
    assert data[("new", "zh")]["tokens"] < data[("old", "zh")]["tokens"]
    assert data[("new", "en")]["tokens"] == data[("old", "en")]["tokens"]
    # The output dir exists now: a second expand is refused with one clear line.
    assert main(["vocab", "expand", str(base), str(pieces), "-o", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys, asset, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"piece": "好"}\n{"piece": ""}\n', encoding="utf-8")
    assert (
        main(
            ["vocab", "expand", str(asset("llama2-tokenizer")), str(bad), "-o", str(tmp_path / "o")]
        )
        == 2
    )
    out = capsys.readouterr().err
    assert "p.jsonl:2: field 'piece': piece is empty" in out and "Traceback" not in out
    assert main(["vocab", "expand", str(tmp_path), str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "neither tokenizer.model nor tokenizer.json" in capsys.readouterr().err
    assert (
        main(
            [
                "vocab",
                "init-model",
                str(tmp_path),
                str(tmp_path),
                "-o",
                str(tmp_path / "m"),
                "--method",
                "zeros",
            ]
        )
        == 2
    )
    assert "unknown method 'zeros'" in capsys.readouterr().err


def test_measure_counts_per_label(asset):
    rows = measure(
        {"llama2": asset("llama2-tokenizer"), "smollm2": asset("smollm2-135m")},
        {"zh": [asset("people-daily") / "heldout.txt"], "en": [asset("lee-news") / "heldout.txt"]},
        max_chars=20000,
    )
    assert len(rows) == 4
    by = {(r.tokenizer, r.label): r for r in rows}
    # LLaMA-2 spells most Chinese characters in bytes: more than one token per character.
    assert by[("llama2", "zh")].tokens_per_char > 1.0 > by[("llama2", "en")].tokens_per_char
    assert all(
        r.characters <= 20000 and r.tokens_per_byte < r.tokens_per_char
        for r in rows
        if r.label == "zh"
    )


def _bar_heights(image, color) -> list[int]:
    """Pixel heights of the bars drawn in ``color``, left to right: in each run of columns
    that stands on the x axis, the unbroken stretch of that colour up from the axis (the
    legend's patch floats above it)."""
    import numpy as np

    mask = abs(image[:, :, :3] - color).max(axis=2) < 0.02
    axis = int(np.flatnonzero(mask.any(axis=1)).max())
    up = mask[: axis + 1][::-1]  # row 0 is the axis
    from_axis = np.where(up.all(axis=0), len(up), up.argmin(axis=0))
    columns = np.flatnonzero(from_axis > 0)
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    return [int(from_axis[run].max()) for run in runs if len(run)]


def test_plot_shows_the_measured_values(tmp_path, asset, llama2_expanded):
    """The bars' pixel heights are in the ratios of the tokens per character they show."""
    import matplotlib.image
    from matplotlib.colors import to_rgb

    texts = {
        "en": [asset("botchan") / "heldout.txt"],
        "zh": [asset("people-daily") / "heldout.txt"],
    }
    tokenizers = {"old": llama2_expanded["base"], "new": llama2_expanded["new"]}
    rows = measure(tokenizers, texts, max_chars=20000)
    path = plot_compression(rows, tmp_path / "sub" / "p.png")
    image = matplotlib.image.imread(path)
    value = {(r.tokenizer, r.label): r.tokens_per_char for r in rows}
    for name, color in (("old", "C0"), ("new", "C1")):
        heights = _bar_heights(image, to_rgb(color))
        assert len(heights) == 2, (name, heights)  # one bar per label
        expected = value[(name, "zh")] / value[(name, "en")]
        assert heights[1] / heights[0] == pytest.approx(expected, rel=0.03)


def test_importing_the_package_does_not_import_torch():
    code = (
        "import sys, llamaforge_tokenizer, llamaforge_tokenizer.cli, "
        "llamaforge_tokenizer.learn, llamaforge_tokenizer.spm, llamaforge_tokenizer.bpe; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
