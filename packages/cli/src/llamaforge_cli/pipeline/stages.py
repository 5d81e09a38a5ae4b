"""The pipeline's stages: what each reads, which package API it calls, where it writes.

Stages talk only through their output dirs (the documented on-disk formats); each one calls the
typed Python API of the package that owns the work, the same functions the package's own
command calls. The packages are imported when their stage runs, so planning needs none of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from llamaforge_cli.pipeline.recipe import Recipe


@dataclass
class Stage:
    name: str
    inputs: Callable[[], list[Path]]
    """Files / dirs whose content decides whether the stage must run again."""
    settings: Callable[[], dict]
    """Recipe settings that decide it too."""
    run: Callable[[Path], None]
    """Runs the stage into the dir it is given (a fresh one on a rerun: the runner moves it
    into place when the stage finishes). Other stages' outputs are read from ``Layout``."""


@dataclass(frozen=True)
class Layout:
    """Where each finished stage's output lives under the recipe's ``out`` (a stage's dir,
    then the name it writes there)."""

    out: Path

    @property
    def pieces(self) -> Path:
        return self.out / "learn-vocab" / "pieces.jsonl"

    @property
    def tokenizer(self) -> Path:
        return self.out / "expand-vocab" / "tokenizer"

    @property
    def model(self) -> Path:
        return self.out / "init-model" / "model"

    @property
    def packed(self) -> Path:
        return self.out / "pack-data"

    @property
    def run_dir(self) -> Path:
        return self.out / "train" / "run"


def _sources(recipe: Recipe, specs: list[str]):
    """``NAME=PATHS[:WEIGHT]`` specs parsed by data-pack's own parser, paths resolved against
    the recipe (assets, relative paths)."""
    from llamaforge_datapack import Source

    parsed = [Source.parse(spec, i) for i, spec in enumerate(specs)]
    return [
        Source(name=s.name, inputs=[str(recipe.resolve(p)) for p in s.inputs], weight=s.weight)
        for s in parsed
    ]


def _text_files(recipe: Recipe) -> dict[str, list[Path]]:
    return {label: [recipe.resolve(f) for f in files] for label, files in recipe.eval.text.items()}


def build_stages(recipe: Recipe, console: Console | None = None) -> list[Stage]:
    """The stages of ``recipe`` in order; ``console`` shows their progress."""
    console = console or Console(quiet=True)
    at = Layout(recipe.out)
    v = recipe.vocab

    def base() -> Path:  # resolved when a stage runs (an asset may be fetched then)
        return recipe.resolve(recipe.base_model)

    def learn(folder: Path) -> None:
        from llamaforge_tokenizer import LearnConfig, learn_pieces, write_pieces

        config = LearnConfig(
            num_pieces=v.num_pieces,
            word_list=recipe.resolve(v.word_list) if v.word_list else None,
            max_corpus_chars=v.max_corpus_chars,
        )
        with console.status("learning pieces") as status:
            result = learn_pieces(
                base(),
                [recipe.resolve(c) for c in v.corpus],
                config,
                progress=lambda n: status.update(f"learning pieces: {n:,} / {v.num_pieces:,}"),
            )
        write_pieces(folder / at.pieces.name, [c.to_dict() for c in result.candidates])
        console.print(f"learned {len(result.candidates):,} pieces")

    def expand(folder: Path) -> None:
        from llamaforge_tokenizer import expand_tokenizer

        # overwrite: a resumed stage may find its own output of the crashed run (the
        # package replaces only dirs it made)
        out = folder / at.tokenizer.name
        report = expand_tokenizer(base(), at.pieces, out, pad_to=v.pad_to, overwrite=True)
        console.print(f"{report.kind} tokenizer: {report.new_size:,} tokens")

    def init(folder: Path) -> None:
        from llamaforge_tokenizer import init_model

        with console.status("initialising embeddings"):
            report = init_model(base(), at.tokenizer, folder / at.model.name, overwrite=True)
        console.print(f"model: {report.old_rows:,} → {report.new_rows:,} rows")

    def pack(folder: Path) -> None:
        import llamaforge_datapack as datapack  # (`pack` is also a submodule's name)
        from llamaforge_datapack import PackConfig, TokenizeConfig

        for name, ds in recipe.data.items():
            with console.status(f"packing {name}") as status:
                manifest = datapack.pack(
                    _sources(recipe, ds.sources),
                    TokenizeConfig(tokenizer_dir=at.tokenizer, max_length=ds.max_length),
                    PackConfig(out_dir=folder / name, num_bins=ds.num_bins, overwrite=True),
                    progress=lambda stage, n, name=name, status=status: status.update(
                        f"packing {name}: {stage} {n:,}"
                    ),
                )
            console.print(
                f"{name}: {manifest.tokens:,} tokens in {manifest.rows:,} rows "
                f"({manifest.fill_ratio:.1%} full)"
            )

    def train(folder: Path) -> None:
        from llamaforge_trainer import train as run_training

        config = recipe.train_config(at.model, folder / at.run_dir.name, at.packed)
        # the settings as run (paths of this run's dir left out: the dir may be moved)
        saved = config.model_dump_json(indent=2, exclude={"output_dir"})
        (folder / "config.json").write_text(saved + "\n")
        run_training(config, console=console)

    def evaluate(folder: Path) -> None:
        from llamaforge_eval import evaluate_model, resolve_device, resolve_dtype, write_results
        from llamaforge_tokenizer import measure, plot_compression

        e = recipe.eval
        texts = _text_files(recipe)
        benchmarks = {kind: recipe.resolve(d) for kind, d in e.benchmarks.items()}
        # one device and one precision for every model, decided from the base model
        device = resolve_device(e.device)
        dtype = resolve_dtype(e.dtype, base(), device)
        for label, model in (("base", base()), ("result", at.run_dir / "export")):
            with console.status(f"evaluating {label}") as status:
                results = evaluate_model(
                    model,
                    benchmarks=benchmarks,
                    texts=texts,
                    shots=e.shots,
                    metric=e.metric,
                    max_docs=e.max_docs,
                    device=device,
                    dtype=dtype,
                    on_status=lambda m, label=label, status=status: status.update(f"{label}: {m}"),
                )
            write_results(folder / f"{label}.json", results)
        rows = measure({"old": base(), "new": at.tokenizer}, texts)
        plot_compression(rows, folder / "compression.png")
        (folder / "compression.json").write_text(json.dumps([r.to_dict() for r in rows], indent=2))

    def report(folder: Path) -> None:
        from llamaforge_cli.pipeline.report import write_report

        write_report(recipe, folder)

    def learn_inputs() -> list[Path]:
        files = [base() / "tokenizer.json", base() / "tokenizer.model"]
        files += [recipe.resolve(c) for c in v.corpus]
        return files + ([recipe.resolve(v.word_list)] if v.word_list else [])

    def pack_inputs() -> list[Path]:
        sources = [s for ds in recipe.data.values() for s in _sources(recipe, ds.sources)]
        return [at.tokenizer, *[Path(p) for s in sources for p in s.inputs]]

    def eval_inputs() -> list[Path]:
        texts = [f for files in _text_files(recipe).values() for f in files]
        return [base(), at.run_dir / "export", at.tokenizer, *texts]

    return [
        Stage(
            "learn-vocab",
            learn_inputs,
            lambda: {"base": recipe.base_model, **v.model_dump()},
            learn,
        ),
        Stage("expand-vocab", lambda: [at.pieces], lambda: {"pad_to": v.pad_to}, expand),
        Stage("init-model", lambda: [base(), at.tokenizer], dict, init),
        Stage(
            "pack-data",
            pack_inputs,
            lambda: {k: ds.model_dump() for k, ds in recipe.data.items()},
            pack,
        ),
        Stage("train", lambda: [at.model, at.packed], lambda: recipe.train, train),
        Stage("eval", eval_inputs, recipe.eval.model_dump, evaluate),
        Stage(
            "report",
            lambda: [recipe.out / "eval", at.run_dir / "metrics.jsonl"],
            lambda: {"chat_prompt": recipe.chat_prompt},
            report,
        ),
    ]
