"""The pipeline's stages: what each reads, what it runs (the `llamaforge` commands), where it
writes. Stages talk only through their output dirs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from llamaforge_cli.pipeline.recipe import PipelineError, Recipe


@dataclass
class Stage:
    name: str
    inputs: Callable[[], list[Path]]
    """Files / dirs whose content decides whether the stage must run again."""
    settings: Callable[[], dict]
    """Recipe settings that decide it too."""
    run: Callable[[Path], None]
    """Runs the stage into its output dir."""


def _llamaforge(args: list[str]) -> None:
    from llamaforge_cli.main import main

    code = main([str(a) for a in args])
    if code != 0:
        raise PipelineError(f"`llamaforge {' '.join(map(str, args[:2]))}` failed (exit {code})")


def build_stages(recipe: Recipe) -> list[Stage]:
    out = recipe.out

    def base() -> Path:  # resolved when a stage runs (an asset may be fetched then)
        return recipe.resolve(recipe.base_model)

    pieces = out / "learn-vocab" / "pieces.jsonl"
    tokenizer = out / "expand-vocab" / "tokenizer"
    model = out / "init-model" / "model"
    run_dir = out / "train" / "run"
    v = recipe.vocab

    def learn(d: Path) -> None:
        args = [
            "vocab",
            "learn",
            base(),
            *[recipe.resolve(c) for c in v.corpus],
            "-o",
            pieces,
            "--num-pieces",
            v.num_pieces,
        ]
        if v.word_list:
            args += ["--word-list", recipe.resolve(v.word_list)]
        if v.max_corpus_chars:
            args += ["--max-corpus-chars", v.max_corpus_chars]
        _llamaforge(args)

    def expand(d: Path) -> None:
        _llamaforge(
            [
                "vocab",
                "expand",
                base(),
                pieces,
                "-o",
                tokenizer,
                "--pad-to",
                v.pad_to,
                "--overwrite",
            ]
        )

    def init(d: Path) -> None:
        _llamaforge(["vocab", "init-model", base(), tokenizer, "-o", model, "--overwrite"])

    def source_paths(spec: str) -> str:
        name, files, weight = _split_source(spec)
        resolved = ",".join(str(recipe.resolve(f)) for f in files)
        return f"{name}={resolved}" + (f":{weight}" if weight else "")

    def pack(d: Path) -> None:
        for name, ds in recipe.data.items():
            _llamaforge(
                [
                    "data",
                    "pack",
                    *[source_paths(s) for s in ds.sources],
                    "-t",
                    tokenizer,
                    "-o",
                    d / name,
                    "--max-length",
                    ds.max_length,
                    "--num-bins",
                    ds.num_bins,
                    "--overwrite",
                ]
            )

    def train(d: Path) -> None:
        cfg = dict(recipe.train)
        stages = []
        for st in cfg.get("stages", []):
            stages.append({**st, "data": [str(out / "pack-data" / n) for n in st["data"]]})
        toml = d / "train.toml"
        toml.write_text(
            _to_toml({**cfg, "model": str(model), "output_dir": str(run_dir), "stages": stages})
        )
        _llamaforge(["train", toml])

    def evaluate(d: Path) -> None:
        e = recipe.eval
        common = []
        for label, files in e.text.items():
            common += [a for f in files for a in ("--text", f"{label}={recipe.resolve(f)}")]
        for kind, folder in e.benchmarks.items():
            common += ["--bench", f"{kind}={recipe.resolve(folder)}"]
        common += ["--shots", e.shots, "--metric", e.metric]
        if e.max_docs:
            common += ["--max-docs", e.max_docs]
        _llamaforge(["eval", "run", base(), *common, "-o", d / "base.json"])
        _llamaforge(["eval", "run", run_dir / "export", *common, "-o", d / "result.json"])
        texts = [
            a
            for label, files in e.text.items()
            for f in files
            for a in ("--text", f"{label}={recipe.resolve(f)}")
        ]
        _llamaforge(
            [
                "vocab",
                "report",
                "--old",
                base(),
                "--new",
                tokenizer,
                *texts,
                "--plot",
                d / "compression.png",
                "--json",
                d / "compression.json",
            ]
        )

    def report(d: Path) -> None:
        from llamaforge_cli.pipeline.report import write_report

        write_report(recipe, d)

    settings = {
        "learn-vocab": lambda: {"base": recipe.base_model, **asdict(v)},
        "expand-vocab": lambda: {"pad_to": v.pad_to},
        "init-model": lambda: {},
        "pack-data": lambda: {k: asdict(ds) for k, ds in recipe.data.items()},
        "train": lambda: recipe.train,
        "eval": lambda: asdict(recipe.eval),
        "report": lambda: {"chat_prompt": recipe.chat_prompt},
    }

    def text_inputs() -> list[Path]:
        return [recipe.resolve(f) for fs in recipe.eval.text.values() for f in fs]

    return [
        Stage(
            "learn-vocab",
            lambda: (
                [
                    base() / "tokenizer.json",
                    base() / "tokenizer.model",
                    *[recipe.resolve(c) for c in v.corpus],
                ]
                + ([recipe.resolve(v.word_list)] if v.word_list else [])
            ),
            settings["learn-vocab"],
            learn,
        ),
        Stage("expand-vocab", lambda: [pieces], settings["expand-vocab"], expand),
        Stage("init-model", lambda: [base(), tokenizer], settings["init-model"], init),
        Stage(
            "pack-data",
            lambda: [
                tokenizer,
                *[
                    recipe.resolve(f)
                    for ds in recipe.data.values()
                    for s in ds.sources
                    for f in _split_source(s)[1]
                ],
            ],
            settings["pack-data"],
            pack,
        ),
        Stage("train", lambda: [model, out / "pack-data"], settings["train"], train),
        Stage(
            "eval",
            lambda: [base(), run_dir / "export", tokenizer, *text_inputs()],
            settings["eval"],
            evaluate,
        ),
        Stage(
            "report", lambda: [out / "eval", run_dir / "metrics.jsonl"], settings["report"], report
        ),
    ]


def _split_source(spec: str) -> tuple[str, list[str], str]:
    """``NAME=A,B[:WEIGHT]`` → (name, [A, B], weight or "")."""
    name, sep, rest = spec.partition("=")
    if not sep:
        name, rest = "", spec
    head, colon, tail = rest.rpartition(":")
    try:
        float(tail)
        files, weight = head, tail
    except ValueError:
        files, weight = rest, ""
    if not colon:
        files, weight = rest, ""
    return name, files.split(","), weight


def _to_toml(data: dict) -> str:
    """The trainer recipe as TOML (scalars, lists, one array of tables: stages)."""
    lines = []
    for key, value in data.items():
        if key != "stages" and not isinstance(value, dict):
            lines.append(f"{key} = {json.dumps(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {json.dumps(x)}" for k, x in value.items()]
    for stage in data.get("stages", []):
        lines.append("[[stages]]")
        lines += [f"{k} = {json.dumps(x)}" for k, x in stage.items()]
    return "\n".join(lines) + "\n"
