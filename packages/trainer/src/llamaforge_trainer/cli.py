"""`llamaforge train CONFIG` (or `python -m llamaforge_trainer CONFIG`): run a training recipe
(TOML / YAML / JSON), locally or on N processes. This module needs nothing of the umbrella CLI:
torchrun starts it on every process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from llamaforge_trainer.config import TrainConfig
from llamaforge_trainer.errors import TrainError

if TYPE_CHECKING:
    from llamaforge_trainer.trainer import TrainResult

app = typer.Typer(
    help="Continual pre-training and SFT on ColossalAI's Booster.",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def main(argv: list[str] | None = None) -> int:
    """``python -m llamaforge_trainer``: this package\'s commands alone; a user error is one red
    line on stderr and exit code 2, never a traceback."""
    try:
        app(args=argv, prog_name="python -m llamaforge_trainer")
    except SystemExit as exc:  # typer ends every run this way, with the exit code
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except TrainError as exc:
        from rich.text import Text

        Console(stderr=True).print(Text("error: ", style="red") + Text(str(exc)), soft_wrap=True)
        return 2
    return 0


def _console(ctx: typer.Context) -> Console:
    return ctx.obj if isinstance(ctx.obj, Console) else Console()


@app.command()
def train(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Training recipe (.toml, .yaml).")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a setting: KEY=VALUE, dotted; a stage by index or name "
            "(stages.0.lr=1e-3, stages.full.lr=1e-3).",
        ),
    ] = None,
    nproc: Annotated[int, typer.Option(help="Processes on this machine (launches torchrun).")] = 1,
    verbose: Annotated[
        bool, typer.Option(help="Show third-party hints that are filtered by default.")
    ] = False,
) -> None:
    """Train the stages of CONFIG; resume from its latest checkpoint; export an HF dir."""
    from llamaforge_trainer.quiet import quiet_known_messages
    from llamaforge_trainer.recipe import load_config
    from llamaforge_trainer.startup import no_compile_pool

    quiet_known_messages(verbose)
    no_compile_pool()

    if nproc < 1:
        raise TrainError(f"--nproc: must be ≥ 1, got {nproc}")
    cfg = load_config(config, list(set_ or []))  # validate before launching anything
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(_torchrun(cfg, nproc, verbose))
    run(cfg, _console(ctx))


def _torchrun(cfg: TrainConfig, nproc: int, verbose: bool) -> int:
    """Start ``nproc`` copies of this trainer under torchrun, each reading the validated config
    (overrides applied) from ``output_dir/launch.json``."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    launch = out / "launch.json"
    launch.write_text(cfg.model_dump_json(indent=2) + "\n", encoding="utf-8")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "llamaforge_trainer"]
    return subprocess.run([*cmd, str(launch), *(["--verbose"] if verbose else [])]).returncode


def run(cfg: TrainConfig, console: Console) -> TrainResult:
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
    return result
