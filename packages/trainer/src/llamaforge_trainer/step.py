"""One optimizer step: forward and backward over the step's micro-batches (or through the
pipeline schedule), the loss reduced over every process as the mean per target token,
gradient clipping, the optimizer's step."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist

from llamaforge_trainer import booster as boosting
from llamaforge_trainer.booster import Layout
from llamaforge_trainer.config import StageConfig, TrainConfig
from llamaforge_trainer.data import stack_micro_batches, target_count, to_device
from llamaforge_trainer.errors import TrainError


def train_step(
    config: TrainConfig,
    device: torch.device,
    booster,
    model,
    optimizer,
    batches: list[dict],
    stage: StageConfig,
    parts: Layout,
) -> tuple[float, float | None, int]:
    """Forward/backward over ``batches`` (gradient accumulation); returns
    (mean loss per target token over all processes, grad norm, input tokens)."""
    counts = torch.tensor(
        [
            float(sum(target_count(b) for b in batches)),
            float(sum(b["real_tokens"] for b in batches)),
        ]
    )
    dist.all_reduce(counts, group=parts.dp_group)
    n_targets, n_tokens = counts.tolist()
    if n_targets == 0:
        raise TrainError(f"stage {stage.name!r}: a step has no tokens with labels")
    if parts.stage_manager is not None:
        loss_sum = _pipeline_pass(device, booster, model, optimizer, batches, parts, n_targets)
    else:
        loss_sum = _micro_batch_passes(
            config, device, booster, model, optimizer, batches, parts, n_targets
        )
    dist.all_reduce(loss_sum, group=parts.dp_group)
    if parts.sp_group is not None:  # each sequence rank has its slice's loss
        dist.all_reduce(loss_sum, group=parts.sp_group)
    if parts.pp_group is not None:  # only the last stage has the loss; the others add 0
        dist.all_reduce(loss_sum, group=parts.pp_group)
    loss = float(loss_sum) / n_targets
    grad_norm = None
    if not math.isfinite(loss):
        return loss, None, int(n_tokens)
    if stage.max_grad_norm > 0 and config.plugin == "ddp":
        grad_norm = optimizer.clip_grad_by_norm(stage.max_grad_norm)
    optimizer.step()
    if config.plugin != "ddp":  # these plugins clip inside step (max_norm)
        grad_norm = optimizer.get_grad_norm()
    grad_norm = float(grad_norm) if grad_norm is not None else None
    return loss, grad_norm, int(n_tokens)


def _micro_batch_passes(config, device, booster, model, optimizer, batches, parts, n_targets):
    """Forward and backward of each micro-batch; returns this rank's loss sum."""
    loss_sum = torch.zeros((), dtype=torch.float64)
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        sync = (
            contextlib.nullcontext()
            if last or parts.grad_average == 1 or not boosting.can_skip_sync(config)
            else booster.no_sync(model, optimizer)
        )
        with sync:
            batch = to_device(batch, device)
            with autocast(config, device):
                part, _ = model(batch["input_ids"], batch["labels"], batch["position_ids"])
            # The plugin averages gradients over its data-parallel ranks: scale so the
            # result is the mean over every target token of the step, however the rows
            # are split into processes and micro-batches (see Layout).
            booster.backward(part * parts.grad_average / n_targets, optimizer)
        loss_sum += part.detach().double().cpu()
    return loss_sum


def _pipeline_pass(device, booster, model, optimizer, batches, parts, n_targets):
    """The step's micro-batches through the 1F1B pipeline schedule; returns this rank's
    loss sum (zero on every stage but the last)."""
    sums: list[torch.Tensor] = []
    # the schedule divides each micro-batch's loss by their number: undo it, then scale
    # to the mean over the step's targets as the other plugins do
    scale = parts.grad_average * len(batches) / n_targets

    def criterion(outputs, _micro_batch):
        part, _ = outputs
        sums.append(part.detach().double().cpu())
        return part * scale

    whole = to_device(stack_micro_batches(batches), device)
    booster.execute_pipeline(iter([whole]), model, criterion, optimizer, return_loss=False)
    return torch.stack(sums).sum() if sums else torch.zeros((), dtype=torch.float64)


def autocast(config: TrainConfig, device: torch.device):
    """bf16 autocast for the ``ddp`` plugin (the others cast the model themselves)."""
    if config.plugin == "ddp" and config.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
