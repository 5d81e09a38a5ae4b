"""The training loop: stages in order, each with its own booster, data, lr and trainable set."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from llamaforge_trainer import booster as boosting
from llamaforge_trainer import step as stepping
from llamaforge_trainer.allocator import keep_freed_memory
from llamaforge_trainer.booster import Layout
from llamaforge_trainer.checkpoint import (
    check_writable,
    latest_checkpoint,
    load_checkpoint,
    load_hf_weights,
    load_model_weights,
    save_checkpoint,
)
from llamaforge_trainer.config import StageConfig, TrainConfig
from llamaforge_trainer.data import (
    load_stage_data,
    micro_batches,
    random_rows,
)
from llamaforge_trainer.errors import TrainError
from llamaforge_trainer.kernels import use_fused_rmsnorm
from llamaforge_trainer.metrics import (
    MetricsSink,
    flops_per_token,
    matmul_parameters,
    peak_flops,
    plot_loss,
    resolve_precision,
)
from llamaforge_trainer.model import (
    DTYPES,
    NEFTune,
    attach_lora,
    build_causal_lm,
    causal_lm_from_state,
    check_data_fits_model,
    first_new_row,
    save_hf,
    set_trainable,
    train_new_rows_only,
)
from llamaforge_trainer.packed import PackedCausalLM, choose_attention
from llamaforge_trainer.rowrate import new_row_rates
from llamaforge_trainer.sharding import check_model_fits
from llamaforge_trainer.spelling import share_spelling

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    global_step: int = 0
    skipped_steps: int = 0
    losses: list[float] = field(default_factory=list)
    export_dir: Path | None = None
    peak_source: str = ""
    optimizer: str = ""
    """The optimizer class the last stage ran (HybridAdam, or torch's AdamW as fallback)."""


_OWN_RATES = "new_input_lr / new_output_lr"


@dataclass(kw_only=True)
class _StageRun:
    """What one stage trains with, and how far it got."""

    data: Any
    booster: Any
    model: Any
    optimizer: Any
    scheduler: Any
    parts: Layout
    sampler: Any
    step: int = 0
    neftune: NEFTune | None = None
    hooks: list = field(default_factory=list)
    shares: list = field(default_factory=list)


class Trainer:
    """Runs a :class:`TrainConfig`. ``on_step`` receives each logged row (rank 0)."""

    def __init__(self, config: TrainConfig, on_step: Callable[[dict], None] | None = None):
        self.on_step = on_step
        self.out = Path(config.output_dir)
        check_writable(self.out)
        self.dist = boosting.launch(config.seed)
        # from here on the precision is the one that runs (``auto`` resolved for this device)
        precision = resolve_precision(config.precision, self.dist.device)
        config = self.config = config.model_copy(update={"precision": precision})
        log.info("precision: %s", precision)
        torch.manual_seed(config.seed + self.dist.rank)
        if config.precision == "fp16" and self.dist.device.type != "cuda":
            raise TrainError("precision 'fp16' needs CUDA; on CPU use 'bf16' or 'fp32'")
        if self.dist.device.type == "cpu" and config.cpu_allocator == "reuse":
            log.info("malloc keeps freed memory for reuse: %s", keep_freed_memory())
        attention = choose_attention(config.attention)
        self.sp = config.sp if config.plugin == "3d" else 1
        if self.sp > 1:
            # sequence parallelism swaps in ShardFormer's own attention, which takes a mask
            # and nothing else (not flash-attn's varlen, not our spans): the block mask it is.
            attention = "sdpa"
        self.flat = attention == "flash_attention_2"  # varlen kernel wants one flat sequence
        self.attention = attention
        # ZeRO, Gemini and 3d own the module they boost (sharded / chunked in place), so each
        # stage gets a fresh one; Gemini and 3d build it lazily and load the weights into
        # their shards (LazyInitContext), the others load it whole.
        self.fresh_per_stage = config.plugin != "ddp"
        self.lazy = config.plugin in boosting.LAZY
        self._build_module()
        if config.plugin == "3d":
            check_model_fits(config, self.causal_lm.config)
        dtype = DTYPES[config.precision]  # the compute precision; weights stay fp32 masters
        self.matmul_params = matmul_parameters(self.causal_lm)
        self.metrics = MetricsSink(self.out, enabled=self.dist.rank == 0)
        self.peak, self.peak_source = peak_flops(self.dist.device, dtype)
        self.result = TrainResult(peak_source=self.peak_source)

    def _build_module(self) -> None:
        config = self.config
        self.causal_lm = build_causal_lm(
            config.model, attention=self.attention, lazy=self.lazy, device=self.dist.device
        )
        if config.plugin != "3d":  # ShardFormer swaps the norms itself (apex)
            swapped = use_fused_rmsnorm(self.causal_lm, config.fused_rmsnorm)
            log.info("fused RMSNorm: %d modules", swapped)
        if config.gradient_checkpointing:
            self.causal_lm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        self.module = PackedCausalLM(self.causal_lm, loss_chunk=config.loss_chunk)

    # -- one optimizer step -------------------------------------------------------------------
    def train_step(
        self, booster, model, optimizer, batches: list[dict], stage: StageConfig, parts: Layout
    ) -> tuple[float, float | None, int]:
        """One optimizer step over ``batches``: see :func:`llamaforge_trainer.step.train_step`."""
        return stepping.train_step(
            self.config, self.dist.device, booster, model, optimizer, batches, stage, parts
        )

    # -- a stage ------------------------------------------------------------------------------
    def run_stage(
        self, index: int, stage: StageConfig, resume: dict | None, weights_from: Path | None
    ) -> None:
        """Set the stage up (data, booster, state), then step until it is done."""
        run = self._start_stage(stage, resume, weights_from)
        batches = micro_batches(run.data, run.sampler, stage.micro_batch_size, self.flat, self.sp)
        fpt = None
        run.model.train()
        while run.step < stage.steps:
            start = time.perf_counter()
            if run.neftune:
                run.neftune.step = self.result.global_step
            group = [next(batches) for _ in range(stage.grad_accum)]
            lr = run.scheduler.get_last_lr()[0]  # the rate this step uses
            loss, grad_norm, tokens = self.train_step(
                run.booster, run.model, run.optimizer, group, stage, run.parts
            )
            for share in run.shares:
                share.after_step()
            run.step += 1
            self.result.global_step += 1
            self._finish_step(run, stage, loss)
            elapsed = time.perf_counter() - start
            if fpt is None:  # from the first batch's mean document length
                mean_doc = tokens / max(1, sum(len(b["lengths"]) for b in group))
                fpt = flops_per_token(self.matmul_params, self.causal_lm.config, mean_doc)
            row = {
                "stage": stage.name,
                "stage_step": run.step,
                "global_step": self.result.global_step,
                "loss": loss,
                "lr": lr,
                "tokens": tokens,
                "tokens_per_s": tokens / elapsed,
                "grad_norm": grad_norm,
                "mfu": fpt * tokens / elapsed / (self.peak * self.dist.world_size),
                "skipped_steps": self.result.skipped_steps,
            }
            self._log(row, last=run.step == stage.steps)
            if run.step % self.config.save_interval == 0 or run.step == stage.steps:
                self._save(
                    index,
                    run.step,
                    run.booster,
                    run.model,
                    run.optimizer,
                    run.scheduler,
                    run.sampler,
                )
        if run.neftune:
            run.neftune.remove()
        for hook in [*run.hooks, *run.shares]:
            hook.remove()

    def _start_stage(
        self, stage: StageConfig, resume: dict | None, weights_from: Path | None
    ) -> _StageRun:
        """Trainable set, data, booster, sampler; the state resumed or loaded."""
        config = self.config
        if stage.trainable == "lora":
            self.causal_lm = attach_lora(self.causal_lm, config.lora)
            self.module.causal_lm = self.causal_lm
        n_trainable = set_trainable(self.causal_lm, stage.trainable)
        if stage.trainable == "new-embeddings":
            first_new_row(self.causal_lm)  # a model without the mark fails before any work
        own_rates = stage.new_input_lr is not None or stage.new_output_lr is not None
        if own_rates:
            first_new = first_new_row(self.causal_lm, _OWN_RATES, "leave them out")
        if config.benchmark:
            length = config.max_length or 512
            vocab = self.causal_lm.get_input_embeddings().weight.shape[0]
            data = random_rows(max(64, self.dist.world_size * 8), length, vocab, config.seed)
        else:
            data, manifests = load_stage_data(stage.data)
            check_data_fits_model(self.module.base(), Path(config.model), manifests, data)
        from llamaforge_datapack import ResumableSampler

        weight_names = list(self.module.state_dict(keep_vars=True))  # before sharding
        booster, model, optimizer, scheduler, parts = boosting.boost(config, self.module, stage)
        self.result.optimizer = type(getattr(optimizer, "optim", optimizer)).__name__
        run = _StageRun(
            data=data,
            booster=booster,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            parts=parts,
            sampler=ResumableSampler(len(data), rank=parts.dp_rank, world_size=parts.dp_size),
        )
        if stage.trainable == "new-embeddings":
            run.hooks = train_new_rows_only(self.causal_lm)
        if stage.share_spelling != "none":
            run.shares = share_spelling(self.causal_lm, config.model, stage.share_spelling)
        if own_rates:
            run.shares = new_row_rates(
                self.causal_lm,
                first_new,
                stage.embedding_lr or stage.lr,
                stage.new_input_lr,
                stage.new_output_lr,
            )
        if resume is not None:
            saved = load_checkpoint(Path(resume["path"]), booster, model, optimizer, scheduler)
            run.sampler.load_state_dict(saved["sampler"][self.dist.rank])
            run.step, self.result.skipped_steps = saved["stage_step"], saved["skipped_steps"]
        elif weights_from is not None:
            booster.load_model(model, str(weights_from / "model"))
        elif self.lazy:
            load_hf_weights(model, Path(config.model), weight_names)
        if stage.neftune_alpha > 0:
            embeddings = self.module.base().get_input_embeddings()
            run.neftune = NEFTune(embeddings, stage.neftune_alpha, config.seed)
        log.info(
            "stage %s: %d trainable parameters, %d rows, %s",
            stage.name,
            n_trainable,
            len(data),
            self.result.optimizer,
        )
        return run

    def _finish_step(self, run: _StageRun, stage: StageConfig, loss: float) -> None:
        """Advance the schedule, or apply the non-finite-loss policy."""
        run.optimizer.zero_grad()
        if math.isfinite(loss):
            run.scheduler.step()
            return
        if self.config.on_nan == "stop":
            last = latest_checkpoint(self.out)
            raise TrainError(
                f"non-finite loss ({loss}) at step {self.result.global_step} (stage "
                f"{stage.name!r}, step {run.step}); last good checkpoint: "
                f"{last if last else 'none yet'}"
            )
        self.result.skipped_steps += 1

    def _log(self, row: dict, *, last: bool) -> None:
        self.result.losses.append(row["loss"])
        if self.result.global_step % self.config.log_interval == 0 or last:
            self.metrics.log(row)
            if self.on_step and self.dist.rank == 0:
                self.on_step(row)

    def _save(self, index, step, booster, model, optimizer, scheduler, sampler) -> None:
        states = [None] * self.dist.world_size
        dist.all_gather_object(states, sampler.state_dict())
        state = {
            "stage": index,
            "stage_name": self.config.stages[index].name,
            "stage_step": step,
            "global_step": self.result.global_step,
            "skipped_steps": self.result.skipped_steps,
            "sampler": states,
        }
        save_checkpoint(
            self.out,
            self.result.global_step,
            booster,
            model,
            optimizer,
            scheduler,
            state,
            self.config.keep_last,
        )

    def _export(self, out: Path) -> None:
        """A plain HF dir. ``ddp`` holds whole weights in the module; ZeRO, Gemini and 3d hold
        shards or chunks, so the weights come gathered from the final checkpoint instead."""
        model_dir = Path(self.config.model)
        if self.config.plugin == "ddp":
            save_hf(self.causal_lm, model_dir, out)
            return
        last = latest_checkpoint(self.out)
        if last is None:
            raise TrainError(f"{self.out}: no checkpoint to export from")
        lm = causal_lm_from_state(model_dir, load_model_weights(last / "model", "causal_lm."))
        save_hf(lm, model_dir, out)

    # -- the run ------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        """Run (or resume) every stage, then export and plot."""
        stages = self.config.stages
        ckpt = latest_checkpoint(self.out) if self.config.resume else None
        first, resume, weights = 0, None, None
        if ckpt is not None:
            import json

            saved = json.loads((ckpt / "state.json").read_text())
            self.result.global_step = saved["global_step"]
            self.result.skipped_steps = saved["skipped_steps"]
            first = saved["stage"]
            if saved["stage_step"] >= stages[first].steps:
                first, weights = first + 1, ckpt  # that stage is done: carry its weights only
            else:
                resume = {"path": str(ckpt)}
            log.info("resuming from %s", ckpt)
        self.metrics.rewind(self.result.global_step)  # steps after the checkpoint run again
        for index in range(first, len(stages)):
            if index > first and self.fresh_per_stage:
                self._build_module()  # the boosted one is sharded / chunked in place
                weights = latest_checkpoint(self.out)  # written at the previous stage's end
            self.run_stage(
                index,
                stages[index],
                resume if index == first else None,
                weights if index == first or self.fresh_per_stage else None,
            )
        if first >= len(stages) and weights is not None and not self.fresh_per_stage:
            # Everything was already done: load the finished run's weights into the module
            # the export reads from (the other plugins export from the checkpoint itself).
            booster, model = boosting.boost(self.config, self.module, stages[-1])[:2]
            booster.load_model(model, str(weights / "model"))
        dist.barrier()
        if self.dist.rank == 0:
            if self.config.export:
                self.result.export_dir = self.out / "export"
                self._export(self.result.export_dir)
            plot_loss(self.out)
        dist.barrier()
        self.metrics.close()
        return self.result
