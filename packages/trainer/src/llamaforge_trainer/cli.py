"""`llamaforge train CONFIG`: run a training recipe (TOML / YAML), locally or on N processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Continual pre-training and SFT on ColossalAI's Booster.")


def _console(ctx: typer.Context) -> Console:
    return ctx.obj if isinstance(ctx.obj, Console) else Console()


@app.command()
def train(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Training recipe (.toml, .yaml).")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting: KEY=VALUE, dotted (stages.0.lr=1e-3)."),
    ] = None,
    nproc: Annotated[int, typer.Option(help="Processes on this machine (launches torchrun).")] = 1,
) -> None:
    """Train the stages of CONFIG; resume from its latest checkpoint; export an HF dir."""
    from llamaforge_trainer.config import load_config

    overrides = list(set_ or [])
    cfg = load_config(config, overrides)  # validate before launching anything
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(_torchrun(config, overrides, nproc))
    run(cfg, _console(ctx))


def _torchrun(config: Path, overrides: list[str], nproc: int) -> int:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    cmd = [
        torchrun,
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "llamaforge_trainer",
        str(config),
    ]
    for item in overrides:
        cmd += ["--set", item]
    return subprocess.run(cmd).returncode


def run(cfg, console: Console) -> None:
    """Train with a rich progress bar on rank 0."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from llamaforge_trainer.trainer import Trainer

    rank = int(os.environ.get("RANK", "0"))
    total = sum(s.steps for s in cfg.stages)
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        "{task.fields[info]}",
        console=console,
        disable=rank != 0,
    )
    with progress:
        task = progress.add_task("training", total=total, info="")

        def on_step(row: dict) -> None:
            progress.update(
                task,
                completed=row["global_step"],
                description=f"{row['stage']}",
                info=f"loss {row['loss']:.4f}  lr {row['lr']:.2e}  "
                f"{row['tokens_per_s']:,.0f} tok/s  MFU {row['mfu']:.1%}",
            )

        trainer = Trainer(cfg, on_step=on_step)
        result = trainer.train()
    if rank == 0:
        console.print(
            f"done: {result.global_step} steps, {result.skipped_steps} skipped; "
            f"optimizer {result.optimizer}; MFU peak from {result.peak_source}"
        )
        if result.export_dir:
            console.print(f"exported → {result.export_dir}")
        console.print(f"loss curve → {Path(cfg.output_dir) / 'loss.png'}")
