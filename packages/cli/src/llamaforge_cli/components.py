"""The llamaforge components the umbrella knows about, and discovery of the installed ones.

A component is a distribution that registers a Typer app under the entry-point group
``llamaforge.commands``. The table below only serves to tell a user how to install a component
that is missing; what is mounted is decided by the entry points alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

ENTRY_POINT_GROUP = "llamaforge.commands"


@dataclass(frozen=True, kw_only=True)
class Component:
    """One llamaforge component as the umbrella presents it."""

    command: str
    """The sub-command name under `llamaforge`."""
    distribution: str
    """The distribution that provides it."""
    path: str
    """Its folder in the llamaforge repository."""
    summary: str
    """One line for help texts."""

    def install_hint(self) -> str:
        """How to install this component, from a checkout or from an index."""
        return f"pip install ./{self.path}  (or: pip install {self.distribution})"


COMPONENTS: dict[str, Component] = {
    c.command: c
    for c in (
        Component(
            command="vocab",
            distribution="llamaforge-tokenizer",
            path="packages/tokenizer-expand",
            summary="Expand a tokenizer's vocabulary and a model's embeddings.",
        ),
        Component(
            command="data",
            distribution="llamaforge-datapack",
            path="packages/data-pack",
            summary="Tokenise and pack pretraining / SFT data.",
        ),
        Component(
            command="train",
            distribution="llamaforge-trainer",
            path="packages/trainer",
            summary="Continual pre-training and SFT on ColossalAI.",
        ),
        Component(
            command="eval",
            distribution="llamaforge-eval",
            path="packages/eval",
            summary="Benchmarks, compression and bits per character.",
        ),
        Component(
            command="serve",
            distribution="llamaforge-serve",
            path="packages/serve",
            summary="OpenAI-compatible inference server.",
        ),
    )
}


def installed_commands() -> dict[str, metadata.EntryPoint]:
    """Entry points of the installed components, by command name (not yet loaded)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found
