"""Own learning rates for the rows a vocabulary expansion added.

A new row of the input embeddings appears in few rows of text, so at the body's rate it hardly
leaves its initialisation: with AdamW and betas (0.9, 0.95) a row seen in one step moves about
6 × lr per element in all (the first step's ~0.45 × lr, then momentum's tail), against rows of
std ~0.14 in SmolLM2 — under 1 % at lr 2e-4. Optimizer groups cannot split the rows of one
matrix, and scaling a row's gradient changes nothing under Adam (it normalises the gradient),
so :class:`RowRate` scales each step's *change* of the new rows instead: the rows are kept as
they were at the backward pass and, after the optimizer step, moved ``factor`` times as far as
the step moved them. AdamW's update, weight decay included, is proportional to the rate, so
this is exactly that rows' own rate, following the stage's schedule; it works with any optimizer
that keeps whole weights in the module (the ``ddp`` plugin).
"""

from __future__ import annotations

import torch
from torch import nn

from llamaforge_trainer.errors import TrainError


class RowRate:
    """Rows ``first_new`` on of ``weight`` step ``factor`` times as far as the optimizer moves
    them; call :meth:`after_step` after each optimizer step, ``remove()`` to end it."""

    def __init__(self, weight: nn.Parameter, first_new: int, factor: float):
        self.weight, self.first, self.factor = weight, first_new, factor
        self.before: torch.Tensor | None = None
        self.handle = weight.register_hook(self._grad)

    def _grad(self, grad: torch.Tensor) -> torch.Tensor:
        # weights do not change between the backward passes of one step and its optimizer
        # step: the first backward pass of the step keeps the rows as they are
        if self.before is None:
            self.before = self.weight.detach()[self.first :].clone()
        return grad

    @torch.no_grad()
    def after_step(self) -> None:
        """Scale the change the optimizer step just made to the new rows."""
        if self.before is None:
            return
        rows = self.weight[self.first :]
        rows.sub_(self.before).mul_(self.factor).add_(self.before)
        self.before = None

    def remove(self) -> None:
        self.handle.remove()


def new_row_rates(
    causal_lm: nn.Module,
    first_new: int,
    base_lr: float,
    input_lr: float | None,
    output_lr: float | None,
) -> list[RowRate]:
    """A :class:`RowRate` for the new rows of the input embeddings (peak rate ``input_lr``)
    and of the output embeddings (``output_lr``), each against ``base_lr`` — the rate of the
    matrix they belong to; ``None`` leaves that side at it. A tied model has one matrix: it
    takes one rate, and two different ones are refused."""
    inp, out = causal_lm.get_input_embeddings(), causal_lm.get_output_embeddings()
    if out is None or out.weight is inp.weight:
        rates = {r for r in (input_lr, output_lr) if r is not None}
        if len(rates) > 1:
            raise TrainError(
                f"new_input_lr = {input_lr} and new_output_lr = {output_lr}: this model ties its "
                "input and output embeddings (one matrix), so its new rows take one rate"
            )
        sides = [(inp.weight, rates.pop())] if rates else []
    else:
        sides = [(w, r) for w, r in ((inp.weight, input_lr), (out.weight, output_lr)) if r]
    for weight, _ in sides:
        if not weight.requires_grad:
            raise TrainError(
                "new_input_lr / new_output_lr: this stage does not train the embeddings "
                "(trainable = 'lora'); leave them out"
            )
    return [RowRate(weight, first_new, rate / base_lr) for weight, rate in sides]
