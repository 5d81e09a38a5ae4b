"""`llamaforge data pack / inspect` through the umbrella CLI."""

from __future__ import annotations

from llamaforge_cli.main import main
from llamaforge_datapack import Source, load_packed


def test_parse_source_specs():
    s = Source.parse("zh=a.jsonl,b/*.jsonl:0.5", 0)
    assert (s.name, s.inputs, s.weight) == ("zh", ["a.jsonl", "b/*.jsonl"], 0.5)
    s = Source.parse("data/x.jsonl", 3)
    assert (s.name, s.inputs, s.weight) == ("source3", ["data/x.jsonl"], 1.0)
    s = Source.parse("en=notes:v2.txt", 0)  # a tail that is no number is part of the path
    assert (s.name, s.inputs, s.weight) == ("en", ["notes:v2.txt"], 1.0)


def test_pack_and_inspect(asset, corpora, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    out = tmp_path / "packed"
    code = main(
        [
            "data",
            "pack",
            f"zh={corpora['zh']}",
            f"en={corpora['en']}:0.5",
            "-t",
            str(asset("smollm2-135m")),
            "-o",
            str(out),
            "--max-length",
            "512",
            "--num-bins",
            "2",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "fill ratio" in text and "tokens: zh" in text
    data, (manifest,) = load_packed([out])
    assert manifest.sources == {"zh": 1.0, "en": 0.5} and len(data) == manifest.rows
    assert main(["data", "inspect", str(out)]) == 0
    assert "rows × max_length" in capsys.readouterr().out
    assert (
        main(
            [
                "data",
                "pack",
                f"zh={corpora['zh']}",
                "-t",
                str(asset("smollm2-135m")),
                "-o",
                str(out),
            ]
        )
        == 2
    )
    assert "already exists" in capsys.readouterr().err


def test_bad_input_is_one_line(asset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n')
    args = ["data", "pack", str(bad), "-t", str(asset("smollm2-135m")), "-o", str(tmp_path / "o")]
    assert main(args) == 2
    out = capsys.readouterr().err
    assert "bad.jsonl:2: field 'text' must be a string" in out and "Traceback" not in out
    assert main([*args, "--on-error", "skip"]) == 0
    assert "skipped records" in capsys.readouterr().out
    assert main(["data", "pack", str(bad), "-t", str(tmp_path), "-o", str(tmp_path / "p")]) == 2
    assert "not a tokenizer dir" in capsys.readouterr().err
