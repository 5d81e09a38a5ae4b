"""The control arm: the unexpanded base model trained on the same text with the same compute.

Equal compute means equal training FLOPs: 6 · N · tokens, where N counts the parameters that
take part in a matrix product per token (the trainer's ``matmul_parameters_of``: all but the
input embedding, the output layer included). The expanded model's output layer is larger, so
each of its tokens costs more; the control gets as many steps as make its planned FLOPs equal
to the expanded run's (rounded to whole steps, so within half a step).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from llamaforge_cli.pipeline.recipe import PipelineError, Recipe

FLOPS_PER_PARAMETER_TOKEN = 6


@dataclass
class ComputePlan:
    """How the control's step count follows from the expanded run."""

    expanded_parameters: int
    control_parameters: int
    expanded_tokens: int
    control_tokens: int
    control_steps: int

    @property
    def expanded_flops(self) -> float:
        return FLOPS_PER_PARAMETER_TOKEN * self.expanded_parameters * self.expanded_tokens

    @property
    def control_flops(self) -> float:
        return FLOPS_PER_PARAMETER_TOKEN * self.control_parameters * self.control_tokens

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "expanded_flops": self.expanded_flops,
            "control_flops": self.control_flops,
        }


def _stage_tokens(recipe: Recipe, stage: dict) -> int:
    """Tokens one stage trains on: steps × rows a step × the rows' length (the longest of
    its datasets)."""
    length = max(recipe.data[name].max_length for name in stage["data"])
    return (
        int(stage["steps"])
        * int(stage.get("micro_batch_size", 1))
        * int(stage.get("grad_accum", 1))
        * length
    )


def control_datasets(recipe: Recipe) -> list[str]:
    """The datasets the ``[train]`` stages read, each once, in order of first use."""
    return list(dict.fromkeys(n for st in recipe.train["stages"] for n in st["data"]))


def control_train(
    recipe: Recipe, expanded_model: Path, base_model: Path
) -> tuple[dict, ComputePlan]:
    """The control's ``[train]`` dict (one whole-model stage named ``control``) and the plan
    that sets its steps."""
    from llamaforge_trainer import matmul_parameters_of

    settings = recipe.control
    if settings is None:
        raise PipelineError("the recipe has no [control] section")
    stages = recipe.train["stages"]
    like = next((st for st in stages if st["name"] == settings.like), stages[-1])
    n_expanded = matmul_parameters_of(expanded_model)
    n_control = matmul_parameters_of(base_model)
    expanded_tokens = sum(_stage_tokens(recipe, st) for st in stages)
    # what belongs to the expanded arm: its new rows (the control has none), its stages
    own = ("name", "data", "steps", "trainable", "share_spelling", "new_input_lr", "new_output_lr")
    stage = {k: v for k, v in like.items() if k not in own}
    stage.update(name="control", data=control_datasets(recipe), trainable="all")
    if settings.lr is not None:
        stage["lr"] = settings.lr
    per_step = _stage_tokens(recipe, {**stage, "steps": 1})
    steps = max(1, round(expanded_tokens * n_expanded / (n_control * per_step)))
    plan = ComputePlan(
        expanded_parameters=n_expanded,
        control_parameters=n_control,
        expanded_tokens=expanded_tokens,
        control_tokens=steps * per_step,
        control_steps=steps,
    )
    train = {k: v for k, v in recipe.train.items() if k != "stages"}
    train["stages"] = [{**stage, "steps": steps}]
    return train, plan
