"""Atomic checkpoints through the Booster's checkpoint IO, newest N kept.

Layout: ``output_dir/checkpoints/step-00000123/`` with ``model/`` and ``optimizer/`` (Booster,
sharded), ``scheduler.pt``, ``rng-rank{r}.pt`` and ``state.json`` (stage, steps, sampler, counters).
Every rank writes into ``step-N.tmp``; after a barrier rank 0 renames it, so a directory without
``.tmp`` is always complete — a run killed mid-save resumes from the previous one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from llamaforge_trainer.errors import TrainError

_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.iterdir() if _NAME.match(p.name) and (p / "state.json").is_file())
    return done[-1] if done else None


def save_checkpoint(
    output_dir, global_step: int, booster, model, optimizer, scheduler, state: dict, keep_last: int
) -> Path:
    """Save everything needed to continue exactly; return the checkpoint dir."""
    rank = dist.get_rank()
    root = checkpoint_root(output_dir)
    final = root / f"step-{global_step:08d}"
    tmp = root / f"step-{global_step:08d}.tmp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("*.tmp"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    # torch format: safetensors refuses tied weights (embed_tokens is lm_head in many models)
    booster.save_model(model, str(tmp / "model"), shard=True, use_safetensors=False)
    # ColossalAI's sharded optimizer loading calls the accelerator's synchronize(), which its
    # CPU accelerator refuses; off CUDA (ddp: each rank holds the full state anyway) save whole.
    booster.save_optimizer(optimizer, str(tmp / "optimizer"), shard=torch.cuda.is_available())
    torch.save(
        {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        tmp / f"rng-rank{rank}.pt",
    )
    if rank == 0:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
    dist.barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        done = sorted(p for p in root.iterdir() if _NAME.match(p.name))
        for old in done[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_checkpoint(path: Path, booster, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, schedule and this rank's RNG; return the saved state."""
    rank = dist.get_rank()
    booster.load_model(model, str(path / "model"))
    booster.load_optimizer(optimizer, str(path / "optimizer"))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng_file = path / f"rng-rank{rank}.pt"
    if not rng_file.is_file():
        raise TrainError(f"{path}: saved by a run with another number of processes")
    rng = torch.load(rng_file, weights_only=False)
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((path / "state.json").read_text())


def check_writable(output_dir: str | Path) -> None:
    """Fail early, before any training, if checkpoints could not be written."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        # a probe of its own: every rank checks the same dir at the same moment
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TrainError(f"{out}: cannot write checkpoints there ({exc.strerror})") from None


def _weight_files(model_dir: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The weight files of a model dir: those its ``*.index.json`` names, else every file
    with one of ``suffixes``."""
    indexes = sorted(model_dir.glob("*.index.json"))
    index = next((i for i in indexes if any(f"{s}." in i.name for s in suffixes)), None)
    if index is not None:
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / n for n in names]
    return [p for p in sorted(model_dir.iterdir()) if p.suffix in suffixes]


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model_weights(model_dir: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """The full state dict of a Booster-saved model dir (sharded or not, torch or
    safetensors), keys with ``prefix`` removed. ColossalAI gathers tensor-parallel shards and
    removes its vocabulary padding when it saves, so this holds whole tensors whatever the
    plugin."""
    model_dir = Path(model_dir)
    files = _weight_files(model_dir, (".bin", ".safetensors"))
    if not files:
        raise TrainError(f"{model_dir}: no model weights in this checkpoint")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update({k.removeprefix(prefix): v for k, v in _read_weights(path).items()})
    return state


def load_hf_weights(model, model_dir: Path, names: list[str], prefix: str = "causal_lm.") -> None:
    """Load an HF safetensors dir into a boosted (sharded / chunked) model, one file at a
    time: each plugin's modules cut their own shard from the whole tensors. ``names``: the
    state-dict keys of the module before boosting; every one must be filled (a tied output
    projection excepted) and nothing else may be in the files."""
    from colossalai.zero import GeminiDDP

    files = _weight_files(Path(model_dir), (".safetensors",))
    if not files:
        raise TrainError(f"{model_dir}: no safetensors weights (model.safetensors)")
    target = model if isinstance(model, GeminiDDP) else model.unwrap()
    tied = getattr(model.unwrap().base().config, "tie_word_embeddings", False)
    expected, loaded = set(names), set()
    head, embed = prefix + "lm_head.weight", prefix + "model.embed_tokens.weight"
    for path in files:
        part = {prefix + k: v for k, v in _read_weights(path).items()}
        if tied and embed in part and head in expected and head not in part:
            # one tensor in the file; a pipeline's last stage holds its own copy of it
            # (ColossalAI keeps the two in step as shared parameters)
            part[head] = part[embed]
        unknown = sorted(set(part) - expected)
        if unknown:
            raise TrainError(f"{path}: weights the model does not have: {unknown[:5]}")
        target.load_state_dict(part, strict=False)
        loaded |= set(part)
    missing = sorted(expected - loaded)
    if missing:
        raise TrainError(f"{model_dir}: weights missing for {missing[:5]}")
