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

from llamaforge_cli.pipeline.evaluation import text_files
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
    def replay(self) -> Path:
        return self.out / "chat-replay" / "replay.jsonl"

    @property
    def packed(self) -> Path:
        return self.out / "pack-data"

    @property
    def control_packed(self) -> Path:
        """The same datasets packed with the base tokenizer, for the control arm."""
        return self.out / "pack-data" / "control"

    @property
    def run_dir(self) -> Path:
        return self.out / "train" / "run"

    @property
    def control_run(self) -> Path:
        return self.out / "train-control" / "run"


def _sources(recipe: Recipe, specs: list[str]):
    """``NAME=PATHS[:WEIGHT]`` specs parsed by data-pack's own parser, paths resolved against
    the recipe (assets, relative paths)."""
    from llamaforge_datapack import Source

    parsed = [Source.parse(spec, i) for i, spec in enumerate(specs)]
    return [
        Source(name=s.name, inputs=[str(recipe.resolve(p)) for p in s.inputs], weight=s.weight)
        for s in parsed
    ]


def _characters(sources) -> float:
    """Characters of text in ``sources`` as packed: each source's documents counted ``weight``
    times — a text file's non-empty lines (line breaks not counted), a jsonl file's text
    fields and message contents."""
    total = 0.0
    for source in sources:
        chars = 0
        for name in source.inputs:
            with open(name, encoding="utf-8") as fh:
                if not name.endswith(".jsonl"):
                    chars += sum(len(line.rstrip("\n")) for line in fh)
                    continue
                for line in fh:
                    if line.strip():
                        chars += _record_characters(json.loads(line))
        total += source.weight * chars
    return total


def _record_characters(record: dict) -> int:
    turns = record.get("messages", [])
    text = [record.get(k, "") for k in ("text", "source", "target")]
    return sum(len(t) for t in text) + sum(len(m.get("content", "")) for m in turns)


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
        console.print(result.summary())

    def expand(folder: Path) -> None:
        from llamaforge_tokenizer import expand_tokenizer

        # overwrite: a resumed stage may find its own output of the crashed run (the
        # package replaces only dirs it made)
        out = folder / at.tokenizer.name
        report = expand_tokenizer(base(), at.pieces, out, pad_to=v.pad_to, overwrite=True)
        console.print(f"{report.kind} tokenizer: {report.new_size:,} tokens")

    def init(folder: Path) -> None:
        from llamaforge_tokenizer import InitConfig, init_model

        config = InitConfig(method=v.init, corpus=init_corpus())
        out = folder / at.model.name
        with console.status(f"initialising embeddings ({v.init})"):
            report = init_model(base(), at.tokenizer, out, config, overwrite=True)
        console.print(f"model: {report.old_rows:,} → {report.new_rows:,} rows ({v.init})")

    def chat_replay(folder: Path) -> None:
        from llamaforge_cli.pipeline.replay import read_prompts, write_replay

        r = recipe.chat_replay
        prompts = read_prompts(recipe.resolve(r.prompts))
        with console.status("chat replay: answering") as status:
            counts = write_replay(
                base(),
                prompts,
                folder / at.replay.name,
                max_new_tokens=r.max_new_tokens,
                batch_size=r.batch,
                device=recipe.eval.device,
                dtype=recipe.eval.dtype,
                on_answer=lambda k: status.update(f"chat replay: {k} / {len(prompts)} answers"),
            )
        (folder / "replay.json").write_text(json.dumps(counts, indent=2) + "\n")
        console.print(
            f"chat replay: {counts['answers']} answers by the base model "
            f"({counts['stopped_at_limit']} stopped at {r.max_new_tokens} tokens)"
        )

    def data_sources(ds):
        """A dataset's sources, the chat replay added when the recipe has one."""
        from llamaforge_datapack import Source

        sources = _sources(recipe, ds.sources)
        if recipe.chat_replay is not None:
            weight = recipe.chat_replay.weight
            sources.append(Source(name="chat-replay", inputs=[str(at.replay)], weight=weight))
        return sources

    def pack(folder: Path) -> None:
        import llamaforge_datapack as datapack  # (`pack` is also a submodule's name)
        from llamaforge_datapack import PackConfig, TokenizeConfig

        # chat records in the tokenizer's own chat template (what its model answers in)
        template = "tokenizer" if recipe.chat_replay is not None else "chatml"

        # the control arm reads the same text packed with the base tokenizer
        targets = [("", at.tokenizer, folder)]
        if recipe.control is not None:
            targets.append(("control ", base(), folder / at.control_packed.name))
        counts: dict[str, dict] = {}
        for name, ds in recipe.data.items():
            sources = data_sources(ds)
            counts[name] = {"characters": _characters(sources)}
            for label, tokenizer, parent in targets:
                with console.status(f"packing {label}{name}") as status:
                    manifest = datapack.pack(
                        sources,
                        TokenizeConfig(
                            tokenizer_dir=tokenizer,
                            max_length=ds.max_length,
                            template=template,
                            add_bos=ds.bos,
                        ),
                        PackConfig(out_dir=parent / name, num_bins=ds.num_bins, overwrite=True),
                        progress=lambda stage, n, what=f"{label}{name}", status=status: (
                            status.update(f"packing {what}: {stage} {n:,}")
                        ),
                    )
                counts[name]["control_tokens" if label else "tokens"] = manifest.tokens
                console.print(
                    f"{label}{name}: {manifest.tokens:,} tokens in {manifest.rows:,} rows "
                    f"({manifest.fill_ratio:.1%} full)"
                )
        # characters of text per dataset, for the loss per character of each arm
        (folder / "characters.json").write_text(json.dumps(counts, indent=2) + "\n")

    def train(folder: Path) -> None:
        from llamaforge_trainer import train as run_training

        config = recipe.train_config(at.model, folder / at.run_dir.name, at.packed)
        # the settings as run (paths of this run's dir left out: the dir may be moved)
        saved = config.model_dump_json(indent=2, exclude={"output_dir"})
        (folder / "config.json").write_text(saved + "\n")
        run_training(config, console=console)

    def control(folder: Path) -> None:
        from llamaforge_cli.pipeline.control import control_train
        from llamaforge_trainer import train as run_training

        train, plan = control_train(recipe, at.model, base())
        config = recipe.train_config(base(), folder / at.control_run.name, at.control_packed, train)
        (folder / "config.json").write_text(
            config.model_dump_json(indent=2, exclude={"output_dir"}) + "\n"
        )
        (folder / "compute.json").write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
        console.print(
            f"control: {plan.control_steps} steps, {plan.control_tokens:,} tokens "
            f"(expanded: {plan.expanded_tokens:,}) — {plan.control_flops:.3g} vs "
            f"{plan.expanded_flops:.3g} training FLOPs"
        )
        run_training(config, console=console)

    def control_settings() -> dict:
        """The control's settings and its compute plan: the plan reads the expanded model's
        size (a larger vocabulary costs more per token), not its weights — a new
        initialisation does not retrain the control, a new vocabulary size does."""
        from llamaforge_cli.pipeline.control import control_train

        settings = {"control": recipe.control.model_dump(), "train": recipe.train}
        if (at.model / "config.json").is_file():
            settings["plan"] = control_train(recipe, at.model, base())[1].to_dict()
        return settings

    def models() -> list[tuple[str, Path]]:
        arms = [("base", base())]
        if recipe.control is not None:
            arms.append(("control", at.control_run / "export"))
        return [*arms, ("result", at.run_dir / "export")]

    def evaluate(folder: Path) -> None:
        from llamaforge_cli.pipeline.evaluation import evaluate_arms

        evaluate_arms(recipe, dict(models()), at.tokenizer, folder, console)

    def report(folder: Path) -> None:
        from llamaforge_cli.pipeline.report import write_report

        write_report(recipe, folder)

    def corpus() -> list[Path]:
        return [recipe.resolve(c) for c in v.corpus]

    def init_corpus() -> list[Path]:
        """What init-model reads of the corpus: all of it for freq-out, nothing otherwise."""
        return corpus() if v.init == "freq-out" else []

    def learn_inputs() -> list[Path]:
        files = [base() / "tokenizer.json", base() / "tokenizer.model"]
        files += corpus()
        return files + ([recipe.resolve(v.word_list)] if v.word_list else [])

    def pack_inputs() -> list[Path]:
        sources = [s for ds in recipe.data.values() for s in data_sources(ds)]
        return [at.tokenizer, *dict.fromkeys(Path(p) for s in sources for p in s.inputs)]

    def eval_inputs() -> list[Path]:
        texts = [f for files in text_files(recipe).values() for f in files]
        return [*(m for _, m in models()), at.tokenizer, *texts]

    def eval_settings() -> dict:
        return {
            **recipe.eval.model_dump(),
            "chat": [recipe.chat_prompt, recipe.chat_prompt_target],
        }

    return [
        # first: it depends on the base model and the prompts only
        *(
            [
                Stage(
                    "chat-replay",
                    lambda: [base(), recipe.resolve(recipe.chat_replay.prompts)],
                    lambda: {
                        **recipe.chat_replay.model_dump(exclude={"weight"}),
                        "device": recipe.eval.device,
                        "dtype": recipe.eval.dtype,
                    },
                    chat_replay,
                )
            ]
            if recipe.chat_replay is not None
            else []
        ),
        Stage(
            "learn-vocab",
            learn_inputs,
            lambda: {"base": recipe.base_model, **v.model_dump(exclude={"init"})},
            learn,
        ),
        Stage("expand-vocab", lambda: [at.pieces], lambda: {"pad_to": v.pad_to}, expand),
        Stage(
            "init-model",
            lambda: [base(), at.tokenizer, *init_corpus()],
            lambda: {"init": v.init},
            init,
        ),
        Stage(
            "pack-data",
            pack_inputs,
            lambda: {
                **{k: ds.model_dump() for k, ds in recipe.data.items()},
                "control": recipe.control is not None,
                **(
                    {"chat_replay": recipe.chat_replay.weight}
                    if recipe.chat_replay is not None
                    else {}
                ),
            },
            pack,
        ),
        Stage("train", lambda: [at.model, at.packed], lambda: recipe.train, train),
        *(
            [
                Stage(
                    "train-control",
                    lambda: [base(), at.control_packed],
                    control_settings,
                    control,
                )
            ]
            if recipe.control is not None
            else []
        ),
        Stage("eval", eval_inputs, eval_settings, evaluate),
        Stage(
            "report",
            lambda: [
                recipe.out / "eval",
                at.run_dir / "metrics.jsonl",
                at.control_run / "metrics.jsonl",
                at.packed / "characters.json",
            ],
            lambda: {"chat_prompt": recipe.chat_prompt, "overrides": recipe.overrides},
            report,
        ),
    ]
