"""A pipeline recipe (TOML): the whole method, from a base model to an evaluated result.

Paths may name a cached asset: ``asset:smollm2-135m`` or ``asset:people-daily/train.txt``.
Relative paths are relative to the recipe file. Example: ``recipes/demo.toml``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from llamaforge_cli.assets.errors import AssetError


class PipelineError(Exception):
    """A bad recipe or a failed stage."""

    user_facing = True


@dataclass(kw_only=True)
class VocabSettings:
    corpus: list[str]
    """Domain text for learning pieces."""
    word_list: str | None = None
    num_pieces: int = 8000
    max_corpus_chars: int | None = None
    pad_to: int = 64


@dataclass(kw_only=True)
class DataSettings:
    sources: list[str]
    """``NAME=PATHS[:WEIGHT]`` as for ``llamaforge data pack``."""
    max_length: int = 512
    num_bins: int = 4


@dataclass(kw_only=True)
class EvalSettings:
    text: dict[str, list[str]] = field(default_factory=dict)
    """Label → held-out text files (tokens/char, bits/char)."""
    benchmarks: dict[str, str] = field(default_factory=dict)
    """Kind → dir in the official layout."""
    shots: int = 2
    metric: str = "loglik"
    max_docs: int | None = None
    """Score only the first N held-out documents per label (keeps a CPU demo short)."""


@dataclass(kw_only=True)
class Recipe:
    path: Path
    out: Path
    base_model: str
    vocab: VocabSettings
    data: dict[str, DataSettings]
    train: dict
    """The trainer's recipe minus ``model`` / ``output_dir``; stage ``data`` names datasets."""
    eval: EvalSettings = field(default_factory=EvalSettings)
    chat_prompt: str = "What is the capital of France?"

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


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such recipe")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{path}: {exc}") from None
    try:
        out = Path(data["out"])
        recipe = Recipe(
            path=path.resolve(),
            out=out if out.is_absolute() else path.parent / out,
            base_model=data["base_model"],
            vocab=VocabSettings(**data["vocab"]),
            data={k: DataSettings(**v) for k, v in data["data"].items()},
            train=data["train"],
            eval=EvalSettings(**data.get("eval", {})),
            chat_prompt=data.get("chat_prompt", "What is the capital of France?"),
        )
    except KeyError as exc:
        raise PipelineError(f"{path}: missing {exc.args[0]!r}") from None
    except TypeError as exc:
        raise PipelineError(f"{path}: {exc}") from None
    for stage in recipe.train.get("stages", []):
        for name in stage.get("data", []):
            if name not in recipe.data:
                raise PipelineError(
                    f"{path}: train stage {stage.get('name')!r} uses dataset "
                    f"{name!r}, not defined under [data]"
                )
    return recipe
