"""Run a recipe's stages in order, skipping the ones whose inputs and settings are unchanged.

Each stage's dir holds ``STAGE.json``: the hash of its inputs (file contents and settings),
whether it finished, and the hash of what it wrote. A stage is skipped only when its inputs are
unchanged and its output still hashes the same (a truncated shard or a deleted export makes it
run again). A stage that runs again over a finished result writes into ``.NAME.next`` and
replaces the old dir only when it has finished, so a failure leaves the previous result whole.
A stage that did not finish resumes — a crash inside ``train`` continues from the trainer's
checkpoints. Dirs the pipeline did not make (no ``STAGE.json``) are never deleted.
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

from llamaforge_cli.pipeline.preflight import check_inputs
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


def _key(stage) -> str:
    """The stage's identity: its name, settings and the contents of what it reads (earlier
    stages' outputs among them) — not the order of stages: a stage that does not read what
    changed is skipped (the control arm does not train again when the expanded arm changes)."""
    settings = json.dumps(stage.settings(), sort_keys=True, default=str)
    return hashlib.sha256(
        f"{stage.name}\0{settings}\0".encode() + hash_paths(stage.inputs()).encode()
    ).hexdigest()


def _decide(stage, folder: Path, key: str, forced: bool) -> tuple[str, str]:
    """(action, reason) for one stage: skip only when its inputs and settings are unchanged,
    it finished, and what is on disk still hashes to what it wrote."""
    state = _state(folder)
    if forced:
        return ("rerun (--from)" if state else "run"), "--from"
    if not state:
        return "run", "never run"
    if state.get("input_hash") != key:
        return "rerun (changed)", "inputs or settings changed"
    if not state.get("done"):
        return "resume", "did not finish"
    if hash_paths([folder]) != state.get("output_hash"):
        return "rerun (output changed)", "its output on disk changed since it was written"
    return "skip", "unchanged"


def _check_owned(recipe: Recipe, stages) -> None:
    """A stage dir, or its replacement-in-progress, that the pipeline did not make is never
    deleted or written over: stop before the first stage."""
    for stage in stages:
        for folder in (recipe.out / stage.name, recipe.out / f".{stage.name}.next"):
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise PipelineError(f"{folder} is not a directory; move it out of the way")
            if folder.is_dir() and not (folder / MARKER).is_file() and any(folder.iterdir()):
                raise PipelineError(
                    f"{folder} exists and was not made by the pipeline (no {MARKER}); move it "
                    "out of the way or choose another 'out'"
                )


def plan(recipe: Recipe, start: str | None = None) -> list[PlanRow]:
    """What a run would do, without running anything (inputs of later stages that don't exist
    yet count as changed)."""
    stages = build_stages(recipe)
    _check_start(stages, start)
    check_inputs(recipe)
    rows, forced, upstream_runs = [], False, False
    for stage in stages:
        folder = recipe.out / stage.name
        forced = forced or stage.name == start
        action, reason = _decide(stage, folder, _key(stage), forced)
        if upstream_runs and not forced:
            action, reason = "run", "an earlier stage runs (a real run may skip it)"
        rows.append(PlanRow(stage.name, action, reason))
        upstream_runs = upstream_runs or action != "skip"  # its output may change
    return rows


def _check_start(stages, start: str | None) -> None:
    names = [s.name for s in stages]
    if start and start not in names:
        raise PipelineError(f"unknown stage {start!r}; stages: {', '.join(names)}")


def _work_dir(recipe: Recipe, name: str, key: str) -> tuple[Path, str]:
    """Where a (re)run writes: ``.NAME.next`` beside the stage's dir, so the previous result
    stays whole until the new one is complete; one left by a crashed run with the same inputs
    is resumed."""
    work = recipe.out / f".{name}.next"
    state = _state(work)
    if state.get("input_hash") == key and not state.get("done"):
        return work, "resume"
    if work.exists():
        shutil.rmtree(work)  # ours (checked by _check_owned): a crashed run of other inputs
    work.mkdir(parents=True)
    return work, ""


def _replace(folder: Path, work: Path) -> None:
    """Put a finished ``work`` dir in place of ``folder``, removing the old one only then."""
    old = folder.with_name(f".{folder.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        folder.rename(old)
    work.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def run(
    recipe: Recipe,
    *,
    start: str | None = None,
    on_stage: Callable[[str, str], None] | None = None,
    console: Console | None = None,
) -> list[PlanRow]:
    """Run the recipe; returns what was done per stage. ``console`` shows each stage's
    progress. A stage that runs again writes beside its previous result and replaces it only
    once it has finished."""
    stages = build_stages(recipe, console)
    _check_start(stages, start)
    check_inputs(recipe)
    _check_owned(recipe, stages)
    done, forced = [], False
    recipe.out.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        folder = recipe.out / stage.name
        forced = forced or stage.name == start
        key = _key(stage)
        action, _ = _decide(stage, folder, key, forced)
        if action == "skip":
            done.append(PlanRow(stage.name, "skip", "unchanged"))
            continue
        work = folder
        if action != "resume" and _state(folder).get("done"):
            work, resumed = _work_dir(recipe, stage.name, key)  # keep the good result until then
            action = resumed or action
        elif action != "resume" and folder.exists():
            shutil.rmtree(folder)  # ours (checked above), and holding no finished result
        work.mkdir(parents=True, exist_ok=True)
        (work / MARKER).write_text(json.dumps({"input_hash": key, "done": False}))
        if on_stage:
            on_stage(stage.name, action)
        start_t = time.perf_counter()
        stage.run(work)
        if work != folder:
            _replace(folder, work)
        output_hash = hash_paths([folder])
        seconds = round(time.perf_counter() - start_t, 1)
        (folder / MARKER).write_text(
            json.dumps(
                {"input_hash": key, "done": True, "output_hash": output_hash, "seconds": seconds}
            )
        )
        done.append(PlanRow(stage.name, action, f"{seconds:.0f} s"))
    return done
