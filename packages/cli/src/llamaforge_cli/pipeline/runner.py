"""Run a recipe's stages in order, skipping the ones whose inputs and settings are unchanged.

Each stage's dir holds ``STAGE.json``: the hash of its inputs (file contents and settings), and
whether it finished. A stage runs again when that hash changes (its old output is removed first)
or when it did not finish — a crash inside ``train`` resumes from the trainer's checkpoints,
since its output dir is kept for the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from llamaforge_cli.pipeline.recipe import PipelineError, Recipe
from llamaforge_cli.pipeline.stages import build_stages

MARKER = "STAGE.json"
# Not part of a stage's output identity: bookkeeping, and logs that carry timings.
_SKIP = {MARKER, "tensorboard", "checkpoints", "metrics.jsonl"}


def hash_paths(paths: list[Path]) -> str:
    """Content hash of files and dirs (names and bytes; missing paths hash as missing)."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(str(path.name).encode() + b"\0")
        if path.is_file():
            _hash_file(digest, path)
        elif path.is_dir():
            for f in sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not (set(p.relative_to(path).parts) & _SKIP)
            ):
                digest.update(str(f.relative_to(path)).encode() + b"\0")
                _hash_file(digest, f)
        else:
            digest.update(b"<missing>")
    return digest.hexdigest()


def _hash_file(digest, path: Path) -> None:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)


@dataclass
class PlanRow:
    stage: str
    action: str  # "run", "skip", "resume", "rerun (changed)"
    reason: str


def _state(folder: Path) -> dict:
    path = folder / MARKER
    return json.loads(path.read_text()) if path.is_file() else {}


def _key(stage, upstream: str) -> str:
    settings = json.dumps(stage.settings(), sort_keys=True, default=str)
    return hashlib.sha256(
        f"{stage.name}\0{settings}\0{upstream}\0".encode() + hash_paths(stage.inputs()).encode()
    ).hexdigest()


def plan(recipe: Recipe, start: str | None = None) -> list[PlanRow]:
    """What a run would do, without running anything (inputs of later stages that don't exist
    yet count as changed)."""
    rows, forced = [], False
    names = [s.name for s in build_stages(recipe)]
    if start and start not in names:
        raise PipelineError(f"unknown stage {start!r}; stages: {', '.join(names)}")
    upstream = ""
    for stage in build_stages(recipe):
        folder = recipe.out / stage.name
        state = _state(folder)
        forced = forced or stage.name == start
        key = _key(stage, upstream)
        if forced:
            rows.append(PlanRow(stage.name, "run", "--from"))
        elif not state:
            rows.append(PlanRow(stage.name, "run", "never run"))
        elif state.get("input_hash") != key:
            rows.append(PlanRow(stage.name, "rerun (changed)", "inputs or settings changed"))
            forced = True
        elif not state.get("done"):
            rows.append(PlanRow(stage.name, "resume", "did not finish"))
            forced = True
        else:
            rows.append(PlanRow(stage.name, "skip", "unchanged"))
        if rows[-1].action != "skip":
            forced = True  # its output may change: what follows runs (a real run may skip it)
        upstream = state.get("output_hash", "")
    return rows


def run(
    recipe: Recipe,
    *,
    start: str | None = None,
    on_stage: Callable[[str, str], None] | None = None,
    console: Console | None = None,
) -> list[PlanRow]:
    """Run the recipe; returns what was done per stage. ``console`` shows each stage's
    progress."""
    stages = build_stages(recipe, console)
    names = [s.name for s in stages]
    if start and start not in names:
        raise PipelineError(f"unknown stage {start!r}; stages: {', '.join(names)}")
    done, forced, upstream = [], False, ""
    recipe.out.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        folder = recipe.out / stage.name
        state = _state(folder)
        forced = forced or stage.name == start
        key = _key(stage, upstream)
        if not forced and state.get("input_hash") == key and state.get("done"):
            done.append(PlanRow(stage.name, "skip", "unchanged"))
            upstream = state["output_hash"]
            continue
        if state.get("input_hash") == key and not forced:
            action = "resume"
        else:
            action = "run" if not state else "rerun (changed)"
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text(json.dumps({"input_hash": key, "done": False}))
        if on_stage:
            on_stage(stage.name, action)
        start_t = time.perf_counter()
        stage.run(folder)
        output_hash = hash_paths([folder])
        (folder / MARKER).write_text(
            json.dumps(
                {
                    "input_hash": key,
                    "done": True,
                    "output_hash": output_hash,
                    "seconds": round(time.perf_counter() - start_t, 1),
                }
            )
        )
        done.append(PlanRow(stage.name, action, f"{time.perf_counter() - start_t:.0f} s"))
        upstream = output_hash  # a stage whose new output is identical leaves the rest alone
    return done
