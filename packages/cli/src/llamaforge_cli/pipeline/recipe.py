"""A pipeline recipe (TOML): the whole method, from a base model to an evaluated result.

Paths may name a cached asset: ``asset:smollm2-135m`` or ``asset:people-daily/train.txt``.
Relative paths are relative to the recipe file. Example: ``recipes/demo.toml``.

The recipe is a typed model: a value of the wrong type or an unknown key is reported with its
field path (``data.mix.max_length: Input should be a valid integer``) before any stage runs,
and ``[train]`` is validated whole by the trainer's own config model.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llamaforge_cli.assets.errors import AssetError

PositiveInt = Annotated[int, Field(ge=1)]


class PipelineError(Exception):
    """A bad recipe or a failed stage."""

    user_facing = True


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, validate_default=True, use_attribute_docstrings=True
    )


class VocabSettings(_Section):
    """``[vocab]``: learning and adding the new pieces."""

    corpus: Annotated[list[str], Field(min_length=1)]
    """Domain text for learning pieces."""
    word_list: str | None = None
    """Word list ('word freq pos' lines): multi-character pieces must be parts of its words."""
    num_pieces: PositiveInt = 8000
    """How many pieces to learn and add."""
    max_corpus_chars: PositiveInt | None = None
    """Read at most this much of the corpus."""
    pad_to: PositiveInt = 64
    """Pad the vocabulary to a multiple of this."""
    init: Literal["mean", "noisy-mean", "freq-out"] = "mean"
    """How the new rows start (``llamaforge vocab init-model --method``): ``freq-out`` also
    gives each new output row its piece's frequency logit, counted on ``corpus``."""


class DataSettings(_Section):
    """``[data.NAME]``: one packed dataset."""

    sources: Annotated[list[str], Field(min_length=1)]
    """``NAME=PATHS[:WEIGHT]`` as for ``llamaforge data pack``."""
    max_length: PositiveInt = 512
    """Tokens per packed row."""
    num_bins: PositiveInt = 4
    """Category bins for bucket ordering."""
    bos: bool | None = None
    """Start each text document with the tokenizer's BOS (``llamaforge data pack --bos``);
    None: as the tokenizer does (SmolLM2's adds none, LLaMA's adds ``<s>``). Eval scores every
    document after BOS, its first token included; without one in training, packing (which
    keeps documents apart) never makes a document's first token a target."""


class EvalSettings(_Section):
    """``[eval]``: what the base model and the result are measured on."""

    text: dict[str, list[str]] = Field(default_factory=dict)
    """Label → held-out text files (tokens/char, bits/char)."""
    benchmarks: dict[str, str] = Field(default_factory=dict)
    """Kind → dir in the official layout."""
    shots: Annotated[int, Field(ge=0)] = 2
    """Few-shot examples per question (trimmed to fit)."""
    metric: Literal["first-token", "loglik", "agieval-combined"] = "loglik"
    """How a multiple-choice answer is picked."""
    max_docs: PositiveInt | dict[str, PositiveInt] | None = None
    """Score only the first N held-out documents per label (keeps a CPU demo short): one N for
    every label, or label → N (``{ zh = 200, en = 60 }``; a label left out: all)."""
    device: str = "auto"
    """Where every model of the run is evaluated: auto (the GPU when there is one), cpu,
    cuda or cuda:N — one device for all, so they compare."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """One precision for every model evaluated (auto: the base model's bf16 / fp16 where the
    device computes it natively, else float32)."""
    target: str | None = None
    """The ``text`` label of the target language (default: the first label); the other labels
    are the languages to keep."""
    generation_prompts: PositiveInt = 16
    """Greedy generation speed: how many prompts, each the start of a held-out document of
    the target language."""
    generation_batch: PositiveInt = 16
    """How many of the prompts are generated together (1: one stream at a time, as a single
    user sees it; more: a larger sample of text for the same time, as a server batches)."""
    generation_tokens: PositiveInt = 64
    """Tokens generated per prompt (every model generates exactly this many)."""
    generation_rounds: PositiveInt = 3
    """Rounds of the timing: each round times every model once, in turn, and each model keeps
    its fastest, so a busy minute on a shared machine slows one round of every model rather
    than one model."""

    @model_validator(mode="after")
    def _max_docs_labels(self) -> EvalSettings:
        if isinstance(self.max_docs, dict):
            unknown = [label for label in self.max_docs if label not in self.text]
            if unknown:
                raise ValueError(
                    f"max_docs: no text labelled {', '.join(map(repr, unknown))} "
                    f"(text: {', '.join(self.text) or 'none'})"
                )
        return self

    def target_label(self) -> str | None:
        """The target language's label, or None without held-out text."""
        return self.target or next(iter(self.text), None)


class ControlSettings(_Section):
    """``[control]``: the control arm — the *unexpanded* base model trained on the same text
    with the same training compute, so the report can say whether expanding paid off.

    Equal compute is equal training FLOPs, 6 · (parameters in matrix products: all but the
    input embedding, the output layer included) · tokens: the input lookup costs nothing and
    the expanded model's larger output layer costs more per token, so the control trains on
    slightly more tokens — and, its tokenizer being longer on the target language, on less
    text. It trains the whole model in one stage on the datasets the ``[train]`` stages read,
    packed with the base tokenizer, with the optimizer settings of the stage named by
    ``like``."""

    like: str | None = None
    """The ``[[train.stages]]`` entry whose lr, batch and schedule the control uses (default:
    the last stage, the whole-model one)."""
    lr: Annotated[float, Field(gt=0)] | None = None
    """Learning rate of the control (default: that of ``like``)."""


class ChatReplaySettings(_Section):
    """``[chat_replay]``: keep the instruction model's chat while training on raw text — the
    base model's own greedy answers to ``prompts`` (a text file, one prompt per line),
    generated by the pipeline and packed into every dataset (both arms) as chat records."""

    prompts: str
    """The prompts file (relative to the recipe, or an asset)."""
    max_new_tokens: PositiveInt = 64
    """Longest answer, in tokens."""
    weight: Annotated[float, Field(gt=0)] = 1.0
    """How many times each conversation is packed into each dataset (its share of the mix)."""
    batch: PositiveInt = 16
    """Prompts answered together (left-padded). In float32 each answer is what it is alone;
    in bf16, greedy answers move with the batch shape, as they do on a GPU."""


class Recipe(_Section):
    """A whole pipeline run."""

    path: Path
    """The recipe file (relative paths inside it are relative to its dir)."""
    overrides: list[str] = Field(default_factory=list)
    """``KEY=VALUE`` settings given on the command line (``--set``), applied over the file."""
    out: Path
    """Where every stage writes its dir."""
    base_model: str
    """HF model dir (or ``asset:NAME``) to bridge."""
    vocab: VocabSettings
    data: dict[str, DataSettings]
    train: dict[str, Any]
    """The trainer's recipe minus ``model`` / ``output_dir``; stage ``data`` names datasets."""
    control: ControlSettings | None = None
    """Train a control arm (see :class:`ControlSettings`); absent: no control."""
    chat_replay: ChatReplaySettings | None = None
    """Mix the base model's chat answers into the data (see :class:`ChatReplaySettings`)."""
    eval: EvalSettings = Field(default_factory=EvalSettings)
    chat_prompt: str = "What is the capital of France?"
    """Asked, in the base model's chat format, of every model in the report (and of the result
    served on localhost)."""
    chat_expect: str | None = None
    """A word the result's answer to ``chat_prompt`` must still contain (a target of the
    report; e.g. ``Paris``)."""
    chat_prompt_target: str | None = None
    """A question in the target language, asked the same way (e.g. ``中国的首都是哪座城市？``)."""

    def resolve(self, value: str) -> Path:
        """A path from the recipe: ``asset:NAME[/rel]`` or relative to the recipe file."""
        if value.startswith("asset:"):
            from llamaforge_cli.assets import ensure_asset

            name, _, rel = value[len("asset:") :].partition("/")
            try:
                root = ensure_asset(name)
            except AssetError as exc:
                raise PipelineError(f"{self.path}: {exc}") from None
            return root / rel if rel else root
        path = Path(value)
        return path if path.is_absolute() else (self.path.parent / path)

    def train_config(self, model: Path, output_dir: Path, packed: Path, train: dict | None = None):
        """``[train]`` (or ``train``, a dict of the same shape) as the trainer's typed config:
        ``model`` and ``output_dir`` set, each stage's dataset names turned into the packed
        dirs under ``packed``."""
        from llamaforge_trainer import TrainConfig, TrainError

        data = dict(self.train if train is None else train)
        data.update(model=str(model), output_dir=str(output_dir))
        if isinstance(data.get("stages"), list):
            data["stages"] = [
                {**st, "data": [str(packed / n) for n in st.get("data", [])]}
                if isinstance(st, dict) and isinstance(st.get("data"), list)
                else st
                for st in data["stages"]
            ]
        try:
            return TrainConfig(**data)
        except TrainError as exc:  # its lines name fields from [train] down: say so
            head, *problems = str(exc).splitlines()
            lines = [f"  train.{p.strip()}" for p in problems]
            raise PipelineError("\n".join([f"{self.path}: invalid recipe:", *lines])) from None


def load_recipe(
    path: str | Path, overrides: Sequence[str] = (), out: str | Path | None = None
) -> Recipe:
    """Read and validate a recipe: every problem is reported at once, each with its field
    path, before anything runs.

    ``overrides`` are ``KEY=VALUE`` strings applied over the file before validation, as if
    written in it, read as the trainer reads its own ``--set``
    (``llamaforge_trainer.apply_override``: a stage by its ``name`` or index; the value JSON
    or TOML, else a string). ``out`` replaces the recipe's ``out`` (relative to the current
    directory, not to the recipe)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such recipe")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: {exc}") from None
    from llamaforge_trainer import TrainError, apply_override

    for item in overrides:
        try:
            apply_override(data, item)
        except TrainError as exc:
            raise PipelineError(str(exc)) from None
    for key in ("path", "overrides"):
        if key in data:
            raise PipelineError(
                f"{path}: {key}: set by the pipeline (the recipe file, --set); remove it"
            )
    if out is not None:
        data["out"] = Path(out).resolve()
    elif isinstance(data.get("out"), str):
        data["out"] = (
            Path(data["out"]) if Path(data["out"]).is_absolute() else path.parent / data["out"]
        )
    try:
        recipe = Recipe.model_validate(
            {**data, "path": path.resolve(), "overrides": list(overrides)}
        )
    except ValidationError as exc:
        raise PipelineError(f"{path}: invalid recipe:\n  " + "\n  ".join(_describe(exc))) from None
    for key in ("model", "output_dir"):
        if key in recipe.train:
            raise PipelineError(
                f"{path}: train.{key}: set by the pipeline (init-model's output and train/run); "
                "remove it"
            )
    stages = recipe.train.get("stages")
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        names = stage.get("data") if isinstance(stage, dict) else None
        for name in names if isinstance(names, list) else []:
            if name not in recipe.data:
                raise PipelineError(
                    f"{path}: train.stages.{i}.data: dataset {name!r} is not defined under "
                    f"[data] (defined: {', '.join(recipe.data) or 'none'})"
                )
    recipe.train_config(recipe.out / "init-model" / "model", recipe.out / "train" / "run", Path())
    if recipe.eval.target is not None and recipe.eval.target not in recipe.eval.text:
        raise PipelineError(
            f"{path}: eval.target: {recipe.eval.target!r} is not a label of eval.text "
            f"(labels: {', '.join(recipe.eval.text) or 'none'})"
        )
    if recipe.control is not None:
        names = [st.get("name") for st in stages if isinstance(st, dict)]
        if recipe.control.like is not None and recipe.control.like not in names:
            raise PipelineError(
                f"{path}: control.like: no train stage named {recipe.control.like!r} "
                f"(stages: {', '.join(map(str, names))})"
            )
    return recipe


def _describe(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            known = _known_keys(item["loc"][:-1])
            hint = difflib.get_close_matches(str(item["loc"][-1]), known, 1)
            lines.append(f"{where}: unknown key" + (f" (did you mean {hint[0]}?)" if hint else ""))
        elif item["type"] == "missing":
            lines.append(f"{where}: missing")
        else:
            lines.append(f"{where}: {item['msg']} (got {item['input']!r})")
    return lines


def _known_keys(loc: tuple) -> list[str]:
    """Keys allowed at ``loc``: the recipe's top level or one of its sections."""
    sections = {"vocab": VocabSettings, "eval": EvalSettings, "control": ControlSettings}
    if not loc:
        return [k for k in Recipe.model_fields if k not in ("path", "overrides")]
    if loc[0] in sections and len(loc) == 1:
        return list(sections[loc[0]].model_fields)
    if loc[0] == "data" and len(loc) == 2:
        return list(DataSettings.model_fields)
    return []
