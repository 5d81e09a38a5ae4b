"""Training configuration: typed models (pydantic) that map one-to-one onto the TOML / YAML /
JSON recipe.

Example (TOML)::

    model = "out/model"            # HF model dir (safetensors)
    output_dir = "runs/zh"
    plugin = "ddp"                 # ddp | gemini | gemini_auto | zero2 | zero2_cpu | 3d
    precision = "auto"             # auto | fp32 | bf16 | fp16

    [[stages]]
    name = "embeddings"
    data = ["out/packed"]
    trainable = "embeddings"       # only embed_tokens / lm_head
    steps = 200
    lr = 1e-3

    [[stages]]
    name = "full"
    data = ["out/packed-zh", "out/packed-replay"]
    steps = 800
    lr = 1e-4

Reading a recipe file and its ``--set`` overrides: :mod:`llamaforge_trainer.recipe`.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from llamaforge_trainer.errors import TrainError

Plugin = Literal["ddp", "gemini", "gemini_auto", "zero2", "zero2_cpu", "3d"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Trainable = Literal["all", "embeddings", "new-embeddings", "lora"]
ShareSpelling = Literal["none", "input", "output", "both"]
Attention = Literal["auto", "flash", "docwise", "sdpa", "eager"]
NanPolicy = Literal["stop", "skip"]
Fused = Literal["auto", "on", "off"]
Optimizer = Literal["auto", "hybrid_adam", "adamw"]
CpuAllocator = Literal["reuse", "system"]
SpMode = Literal["split_gather", "ring", "all_to_all"]

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


class _Settings(BaseModel):
    """Strict, closed models: a recipe value of the wrong type or an unknown key is an error
    (``micro_batch_size = 1.5`` or ``lr = "abc"`` never reach the loop)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, validate_default=True, use_attribute_docstrings=True
    )


class StageConfig(_Settings):
    """One stage of a multi-stage schedule."""

    name: str
    """Shown in logs and checkpoint names."""
    data: list[str]
    """Packed dataset dirs (``llamaforge data pack`` output), read together."""
    steps: PositiveInt
    """Optimizer steps in this stage."""
    lr: Annotated[float, Field(gt=0)] = 1e-4
    """Peak learning rate (after warm-up; cosine decay to ``min_lr_ratio`` of it)."""
    embedding_lr: Annotated[float, Field(gt=0)] | None = None
    """Peak learning rate of the input and output embeddings (one matrix when tied) when it
    should differ from ``lr`` — new rows after a vocabulary expansion learn from nothing while
    the body only adapts; ddp only."""
    trainable: Trainable = "all"
    """``all``, ``embeddings`` (embed_tokens and lm_head only), ``new-embeddings`` (only the
    rows a vocabulary expansion added — from ``expanded_from_vocab_size`` in the model's
    config.json, which ``llamaforge vocab init-model`` writes — with no weight decay, so every
    old row, and with it the model on its old languages, stays exactly as it was; ddp only) or
    ``lora``."""
    new_input_lr: Annotated[float, Field(gt=0)] | None = None
    """Peak learning rate of the rows a vocabulary expansion added to the input embeddings
    (from ``expanded_from_vocab_size`` in the model's config.json), following the stage's
    schedule; default: the embeddings' rate. A new row appears in few rows of text, so at the
    body's rate it hardly leaves its initialisation (:mod:`llamaforge_trainer.rowrate`); ddp
    only."""
    new_output_lr: Annotated[float, Field(gt=0)] | None = None
    """The same for the new rows of the output embeddings (a tied model has one matrix and
    takes one rate)."""
    share_spelling: ShareSpelling = "none"
    """After a vocabulary expansion: the new rows of the input embeddings (``input``), the
    output embeddings (``output``) or both learn as the mean of the old rows that spell their
    piece plus their own offset, so every occurrence of a piece also trains the shared rows
    that spell it, and every change of those reaches all the pieces they spell (spellings from
    ``expansion.json``, which ``llamaforge vocab init-model`` writes); ddp only."""
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.025
    """Share of the stage's steps spent warming up (Colossal-LLaMA: 2.5 %)."""
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Cosine decay ends at this share of ``lr``."""
    weight_decay: NonNegativeFloat = 0.1
    """AdamW weight decay."""
    betas: Annotated[tuple[float, float], Field(strict=False)] = (0.9, 0.95)
    """AdamW betas (a two-element list in TOML)."""
    micro_batch_size: PositiveInt = 1
    """Rows per forward pass per process."""
    grad_accum: PositiveInt = 1
    """Micro-batches per optimizer step."""
    max_grad_norm: NonNegativeFloat = 1.0
    """Gradient clipping (0: off)."""
    neftune_alpha: NonNegativeFloat = 0.0
    """NEFTune noise on input embeddings (0: off; 5 is the paper's common value)."""


class LoraConfig(_Settings):
    """LoRA settings, used by stages with ``trainable = "lora"``."""

    r: PositiveInt = 16
    """Rank of the update matrices."""
    alpha: PositiveInt = 32
    """Scale numerator: updates are scaled by alpha / r."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Module names that get adapters."""


class TrainConfig(_Settings):
    """A whole training run."""

    def __init__(self, **data: Any) -> None:
        # Built directly from Python (tests, benches, the pipeline): the same TrainError with
        # field paths as a recipe file gets. (Only here: pydantic calls a custom __init__ of a
        # nested model too, so StageConfig and LoraConfig keep pydantic's own.)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problems = describe_errors(exc, TrainConfig)
            raise TrainError("invalid training config:\n  " + "\n  ".join(problems)) from None

    model: str
    """HF model dir to start from."""
    output_dir: str
    """Checkpoints, logs, loss curve and the exported model go here."""
    stages: Annotated[list[StageConfig], Field(min_length=1)]
    """Run in order; each has its own data, lr, steps and trainable parameters."""
    plugin: Plugin = "ddp"
    """ColossalAI Booster plugin. ``ddp`` and ``3d`` run without CUDA (gloo)."""
    precision: Precision = "auto"
    """Compute precision; weights stay fp32 masters. ``auto``: bf16 on a GPU that computes it
    and on a CPU with bf16 units (AVX512-BF16 or AMX, read from the instruction flags), fp32
    elsewhere — on a CPU without them bf16 is emulated and many times slower than fp32.
    ``fp16`` needs CUDA."""
    seed: int = 42
    """Seed for initialisation-free randomness (NEFTune noise, data order)."""
    attention: Attention = "auto"
    """``auto`` (flash-attn varlen if installed, else ``docwise``: SDPA per document), ``flash``,
    ``docwise``, ``sdpa`` (one SDPA call with a block-diagonal mask) or ``eager``. Under
    sequence parallelism ShardFormer's attention takes only a mask: ``auto`` gives it one."""
    loss_chunk: PositiveInt = 1024
    """Tokens per chunk of the chunked cross-entropy (full fp32 logits never materialise)."""
    fused_rmsnorm: Fused = "auto"
    """Liger's Triton RMSNorm on CUDA when liger-kernel is installed (``auto``), required
    (``on``) or never (``off``). The 3d plugin uses apex's through ShardFormer instead."""
    optimizer: Optimizer = "auto"
    """``auto`` (ColossalAI's HybridAdam on CUDA where its fused kernels build and load, else
    torch's fused AdamW), ``hybrid_adam`` (required) or ``adamw``. Gemini runs
    with HybridAdam only."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    cpu_allocator: CpuAllocator = "reuse"
    """Training on CPU: ``reuse`` tells glibc's malloc to keep freed memory for the next step
    instead of faulting it in again (1.05–1.25× tokens/s on a 2-core EPYC; the process keeps its
    peak memory until it exits — see :mod:`llamaforge_trainer.allocator`), ``system`` leaves malloc
    as it is. No effect on GPU runs."""
    save_interval: PositiveInt = 100
    """Save a checkpoint every this many steps of a stage, and at the end of each stage."""
    keep_last: PositiveInt = 2
    """Checkpoints to keep."""
    resume: bool = True
    """Continue from the latest checkpoint in ``output_dir`` when there is one."""
    on_nan: NanPolicy = "stop"
    """A non-finite loss: ``stop`` (last good checkpoint kept) or ``skip`` the step and count."""
    log_interval: PositiveInt = 1
    """Log every this many steps."""
    tp: PositiveInt = 1
    """3d plugin: tensor parallel size."""
    pp: PositiveInt = 1
    """3d plugin: pipeline parallel size (1F1B over each step's ``grad_accum`` micro-batches)."""
    sp: PositiveInt = 1
    """3d plugin: sequence parallel size (rows are padded to a multiple of it, as their own
    document with no targets)."""
    sp_mode: SpMode = "split_gather"
    """3d plugin: ``split_gather`` or ``ring`` (both share the tp group: sp = tp; ``ring``
    overlaps the sequence all-gather with the matmuls) or ``all_to_all``. (``ring_attn`` needs
    ShardFormer's flash attention, which ignores documents inside packed rows.)"""
    zero_stage: Annotated[int, Field(ge=0, le=2)] = 0
    """3d plugin: ZeRO stage (0, 1 or 2)."""
    cpu_offload: bool = False
    """Offload optimizer states to CPU (zero2_cpu, gemini, 3d)."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """LoRA settings for stages with ``trainable = "lora"``."""
    export: bool = True
    """Export a plain HF model dir to ``output_dir/export`` at the end."""
    benchmark: bool = False
    """Train on random tokens (no data needed) to measure speed."""
    max_length: Annotated[int, Field(ge=0)] = 0
    """Benchmark mode: sequence length (otherwise taken from the data)."""

    @field_validator("sp_mode", mode="before")
    @classmethod
    def _not_ring_attn(cls, value: Any) -> Any:
        if value == "ring_attn":
            raise ValueError(
                "'ring_attn' needs ShardFormer's flash attention, which ignores documents inside "
                "packed rows; use split_gather, ring or all_to_all"
            )
        return value

    @property
    def sp_group_size(self) -> int:
        """Processes in a sequence-parallel group of their own: ``sp`` for ``all_to_all``
        (which splits the attention heads over it), else 1 (``split_gather`` and ``ring``
        share the tensor-parallel group)."""
        return self.sp if self.plugin == "3d" and self.sp_mode == "all_to_all" else 1

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        """Settings that are valid alone but not together; every problem is reported once."""
        problems = [*self._stage_problems(), *self._plugin_problems()]
        if self.plugin == "3d":
            problems += self._3d_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _stage_problems(self) -> list[str]:
        names = [s.name for s in self.stages]
        problems = (
            [] if len(set(names)) == len(names) else [f"stages: names must be unique, got {names}"]
        )
        if not self.benchmark:
            problems += [
                f"stages.{i}.data: no packed dataset dirs"
                for i, s in enumerate(self.stages)
                if not s.data
            ]
        return problems

    def _plugin_problems(self) -> list[str]:
        problems = []
        for mode in ("lora", "new-embeddings"):
            if self.plugin != "ddp" and any(s.trainable == mode for s in self.stages):
                problems.append(f"stages: trainable = '{mode}' runs with plugin ddp only")
        if self.plugin != "ddp" and any(s.embedding_lr is not None for s in self.stages):
            problems.append("stages: embedding_lr runs with plugin ddp only")
        if self.plugin != "ddp" and any(s.share_spelling != "none" for s in self.stages):
            problems.append("stages: share_spelling runs with plugin ddp only")
        for i, s in enumerate(self.stages):
            own = [k for k in ("new_input_lr", "new_output_lr") if getattr(s, k) is not None]
            if own and self.plugin != "ddp":
                problems.append(f"stages.{i}: {' and '.join(own)} run with plugin ddp only")
            if own and s.share_spelling != "none":
                problems.append(
                    f"stages.{i}: {' and '.join(own)} and share_spelling both move the new rows "
                    "after each step; choose one"
                )
        if self.optimizer == "adamw" and self.plugin in ("gemini", "gemini_auto"):
            problems.append("optimizer: Gemini runs with ColossalAI's HybridAdam only; use 'auto'")
        return problems

    def _3d_problems(self) -> list[str]:
        problems = []
        if self.pp > 1 and self.zero_stage > 1:
            problems.append("zero_stage: ColossalAI's pipeline runs with ZeRO stage 0 or 1 only")
        for i, s in enumerate(self.stages):
            if self.pp >= 3 and self.zero_stage and s.trainable == "embeddings":
                problems.append(
                    f"stages.{i}.trainable: an embeddings-only stage leaves the middle "
                    f"pipeline stages nothing to train, and ColossalAI 0.5.0's ZeRO gradient "
                    f"norm then hangs; with pp={self.pp} use zero_stage = 0 (or pp ≤ 2)"
                )
            if self.pp > 1 and s.grad_accum < self.pp:
                problems.append(
                    f"stages.{i}.grad_accum: {s.grad_accum} micro-batches cannot fill a "
                    f"{self.pp}-stage pipeline (1F1B needs grad_accum ≥ pp)"
                )
        if self.sp > 1 and self.sp_mode != "all_to_all" and self.sp != self.tp:
            problems.append(
                f"sp: {self.sp_mode} sequence parallelism shares the tensor-parallel group; "
                "set sp = tp"
            )
        if self.sp > 1 and self.attention in ("flash", "docwise"):
            problems.append(
                f"attention: {self.attention!r} cannot run under sequence parallelism "
                "(ShardFormer's attention replaces it and takes only a mask); use 'auto', "
                "which gives it the block-diagonal mask"
            )
        if self.zero_stage and self.precision == "fp32":
            problems.append("zero_stage: ZeRO inside the 3d plugin needs precision bf16 or fp16")
        return problems


def describe_errors(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per problem, each led by its field path (``stages.0.lr: ...``); an unknown
    key gets the closest known one as a hint."""
    lines = []
    for item in error.errors(include_url=False):
        loc = [str(p) for p in item["loc"]]
        where = ".".join(loc) or "(config)"
        if item["type"] == "extra_forbidden":
            known = _field_names(root, item["loc"][:-1])
            hint = difflib.get_close_matches(loc[-1], known, 1)
            lines.append(
                f"{where}: unknown setting" + (f" (did you mean {hint[0]}?)" if hint else "")
            )
        elif item["type"] == "missing" and isinstance(item["loc"][-1], str):
            lines.append(f"{where}: missing required setting")
        elif item["type"] == "value_error":  # our own checks: already worded in full
            message = str(item["ctx"]["error"])
            lines += [f"{where}: {message}"] if loc else message.splitlines()
        else:
            lines.append(f"{where}: {item['msg']} (got {item['input']!r})")
    return lines


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the model reached by following ``loc`` from ``model``."""
    annotation: Any = model
    for part in loc:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(str(part))
            if info is None:
                return []
            annotation = info.annotation
        else:  # list[X]: an index
            args = [a for a in get_args(annotation) if isinstance(a, type)]
            annotation = args[0] if args else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []
