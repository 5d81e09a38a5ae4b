"""The one rich console of a command: the umbrella's (set on the Typer context), else a new one."""

from __future__ import annotations

import typer
from rich.console import Console


def console_of(ctx: typer.Context) -> Console:
    """The console the umbrella put on ``ctx`` (sub-apps run alone get their own)."""
    return ctx.obj if isinstance(ctx.obj, Console) else Console()
