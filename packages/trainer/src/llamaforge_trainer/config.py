"""Training configuration: dataclasses that map one-to-one onto the TOML / YAML recipe.

Example (TOML)::

    model = "out/model"            # HF model dir (safetensors)
    output_dir = "runs/zh"
    plugin = "ddp"                 # ddp | gemini | gemini_auto | zero2 | zero2_cpu | 3d
    precision = "fp32"             # fp32 | bf16 | fp16

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

Command-line overrides use dotted keys: ``--set stages.1.lr=5e-5 --set seed=3``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from llamaforge_trainer.errors import TrainError

PLUGINS = ("ddp", "gemini", "gemini_auto", "zero2", "zero2_cpu", "3d")
PRECISIONS = ("fp32", "bf16", "fp16")
TRAINABLE = ("all", "embeddings", "lora")
ATTENTION = ("auto", "flash", "docwise", "sdpa", "eager")
NAN_POLICY = ("stop", "skip")
FUSED = ("auto", "on", "off")
OPTIMIZERS = ("auto", "hybrid_adam", "adamw")
SP_MODES = ("split_gather", "ring", "all_to_all")


@dataclass(kw_only=True)
class StageConfig:
    """One stage of a multi-stage schedule."""

    name: str
    """Shown in logs and checkpoint names."""
    data: list[str]
    """Packed dataset dirs (``llamaforge data pack`` output), read together."""
    steps: int
    """Optimizer steps in this stage."""
    lr: float = 1e-4
    """Peak learning rate."""
    trainable: str = "all"
    """``all``, ``embeddings`` (embed_tokens and lm_head only) or ``lora``."""
    warmup_ratio: float = 0.025
    """Share of the stage's steps spent warming up (Colossal-LLaMA: 2.5 %)."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at this share of ``lr``."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    micro_batch_size: int = 1
    """Rows per forward pass per process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0: off)."""
    neftune_alpha: float = 0.0
    """NEFTune noise on input embeddings (0: off; 5 is the paper's common value)."""


@dataclass(kw_only=True)
class LoraConfig:
    """LoRA settings, used by stages with ``trainable = "lora"``."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


@dataclass(kw_only=True)
class TrainConfig:
    """A whole training run."""

    model: str
    """HF model dir to start from."""
    output_dir: str
    """Checkpoints, logs, loss curve and the exported model go here."""
    stages: list[StageConfig]
    """Run in order; each has its own data, lr, steps and trainable parameters."""
    plugin: str = "ddp"
    """ColossalAI Booster plugin. ``ddp`` and ``3d`` run without CUDA (gloo)."""
    precision: str = "fp32"
    """Compute precision (``bf16`` / ``fp16`` need a GPU for speed)."""
    seed: int = 42
    """Seed for initialisation-free randomness (NEFTune noise, data order)."""
    attention: str = "auto"
    """``auto`` (flash-attn varlen if installed, else ``docwise``: SDPA per document), ``flash``,
    ``docwise``, ``sdpa`` (one SDPA call with a block-diagonal mask) or ``eager``. Under
    sequence parallelism ShardFormer's attention takes only a mask: ``auto`` gives it one."""
    loss_chunk: int = 1024
    """Tokens per chunk of the chunked cross-entropy (full fp32 logits never materialise)."""
    fused_rmsnorm: str = "auto"
    """Liger's Triton RMSNorm on CUDA when liger-kernel is installed (``auto``), required
    (``on``) or never (``off``). The 3d plugin uses apex's through ShardFormer instead."""
    optimizer: str = "auto"
    """``auto`` (ColossalAI's HybridAdam on CUDA where its fused kernels build and load, else
    torch's AdamW — fused on CUDA), ``hybrid_adam`` (required) or ``adamw``. Gemini runs
    with HybridAdam only."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    save_interval: int = 100
    """Save a checkpoint every this many steps of a stage, and at the end of each stage."""
    keep_last: int = 2
    """Checkpoints to keep."""
    resume: bool = True
    """Continue from the latest checkpoint in ``output_dir`` when there is one."""
    on_nan: str = "stop"
    """A non-finite loss: ``stop`` (last good checkpoint kept) or ``skip`` the step and count."""
    log_interval: int = 1
    """Log every this many steps."""
    tp: int = 1
    """3d plugin: tensor parallel size."""
    pp: int = 1
    """3d plugin: pipeline parallel size (1F1B over each step's ``grad_accum`` micro-batches)."""
    sp: int = 1
    """3d plugin: sequence parallel size (rows are padded to a multiple of it, as their own
    document with no targets)."""
    sp_mode: str = "split_gather"
    """3d plugin: ``split_gather`` or ``ring`` (both share the tp group: sp = tp; ``ring``
    overlaps the sequence all-gather with the matmuls) or ``all_to_all``."""
    zero_stage: int = 0
    """3d plugin: ZeRO stage."""
    cpu_offload: bool = False
    """Offload optimizer states to CPU (zero2_cpu, gemini, 3d)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    export: bool = True
    """Export a plain HF model dir to ``output_dir/export`` at the end."""
    benchmark: bool = False
    """Train on random tokens (no data needed) to measure speed."""
    max_length: int = 0
    """Benchmark mode: sequence length (otherwise taken from the data)."""

    def __post_init__(self) -> None:
        self.stages = [
            s if isinstance(s, StageConfig) else _build(StageConfig, s, f"stages.{i}")
            for i, s in enumerate(self.stages)
        ]
        if isinstance(self.lora, dict):
            self.lora = _build(LoraConfig, self.lora, "lora")
        self.validate()

    @property
    def sp_group_size(self) -> int:
        """Processes in a sequence-parallel group of their own: ``sp`` for ``all_to_all``
        (which splits the attention heads over it), else 1 (``split_gather`` and ``ring``
        share the tensor-parallel group)."""
        return self.sp if self.plugin == "3d" and self.sp_mode == "all_to_all" else 1

    def validate(self) -> None:
        """Collect every problem and raise once, naming each field."""
        problems = []

        def check(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        check(self.plugin in PLUGINS, f"plugin: {self.plugin!r} is not one of {', '.join(PLUGINS)}")
        if self.plugin == "3d":
            check(self.pp >= 1, "pp: must be ≥ 1")
            check(
                self.pp == 1 or self.zero_stage <= 1,
                "zero_stage: ColossalAI's pipeline runs with ZeRO stage 0 or 1 only",
            )
            for i, s in enumerate(self.stages):
                check(
                    self.pp < 3 or self.zero_stage == 0 or s.trainable != "embeddings",
                    f"stages.{i}.trainable: an embeddings-only stage leaves the middle "
                    f"pipeline stages nothing to train, and ColossalAI 0.5.0's ZeRO gradient "
                    f"norm then hangs; with pp={self.pp} use zero_stage = 0 (or pp ≤ 2)",
                )
                check(
                    self.pp == 1 or s.grad_accum >= self.pp,
                    f"stages.{i}.grad_accum: {s.grad_accum} micro-batches cannot fill a "
                    f"{self.pp}-stage pipeline (1F1B needs grad_accum ≥ pp)",
                )
            check(self.tp >= 1 and self.sp >= 1, "tp, sp: must be ≥ 1")
            check(
                self.sp_mode in SP_MODES,
                f"sp_mode: {self.sp_mode!r} is not one of {', '.join(SP_MODES)} (ring_attn "
                "needs ShardFormer's flash attention, which ignores documents inside packed "
                "rows)",
            )
            check(
                self.sp == 1 or self.sp_mode == "all_to_all" or self.sp == self.tp,
                f"sp: {self.sp_mode} sequence parallelism shares the tensor-parallel group; "
                "set sp = tp",
            )
            check(
                self.sp == 1 or self.attention not in ("flash", "docwise"),
                f"attention: {self.attention!r} cannot run under sequence parallelism "
                "(ShardFormer's attention replaces it and takes only a mask); use 'auto', "
                "which gives it the block-diagonal mask",
            )
            check(self.zero_stage in (0, 1, 2), "zero_stage: must be 0, 1 or 2")
            check(
                self.zero_stage == 0 or self.precision != "fp32",
                "zero_stage: ZeRO inside the 3d plugin needs precision bf16 or fp16",
            )
        check(
            self.plugin == "ddp" or all(s.trainable != "lora" for s in self.stages),
            "stages: trainable = 'lora' runs with plugin ddp only",
        )
        check(
            self.precision in PRECISIONS,
            f"precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}",
        )
        check(
            self.attention in ATTENTION,
            f"attention: {self.attention!r} is not one of {', '.join(ATTENTION)}",
        )
        check(
            self.fused_rmsnorm in FUSED,
            f"fused_rmsnorm: {self.fused_rmsnorm!r} is not one of {', '.join(FUSED)}",
        )
        check(
            self.optimizer in OPTIMIZERS,
            f"optimizer: {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}",
        )
        check(
            self.optimizer != "adamw" or self.plugin not in ("gemini", "gemini_auto"),
            "optimizer: Gemini runs with ColossalAI's HybridAdam only; use 'auto'",
        )
        check(self.on_nan in NAN_POLICY, f"on_nan: {self.on_nan!r} is not stop or skip")
        check(self.save_interval >= 1, "save_interval: must be ≥ 1")
        check(self.keep_last >= 1, "keep_last: must be ≥ 1")
        check(self.loss_chunk >= 1, "loss_chunk: must be ≥ 1")
        check(bool(self.stages), "stages: at least one stage is needed")
        names = [s.name for s in self.stages]
        check(len(set(names)) == len(names), f"stages: names must be unique, got {names}")
        for i, s in enumerate(self.stages):
            at = f"stages.{i} ({s.name})"
            check(s.steps >= 1, f"{at}.steps: must be ≥ 1")
            check(s.lr > 0, f"{at}.lr: must be > 0")
            check(
                s.trainable in TRAINABLE,
                f"{at}.trainable: {s.trainable!r} is not one of {', '.join(TRAINABLE)}",
            )
            check(0 <= s.warmup_ratio < 1, f"{at}.warmup_ratio: must be in [0, 1)")
            check(0 <= s.min_lr_ratio <= 1, f"{at}.min_lr_ratio: must be in [0, 1]")
            check(s.micro_batch_size >= 1, f"{at}.micro_batch_size: must be ≥ 1")
            check(s.grad_accum >= 1, f"{at}.grad_accum: must be ≥ 1")
            check(bool(s.data) or self.benchmark, f"{at}.data: no packed dataset dirs")
        if problems:
            raise TrainError("invalid training config:\n  " + "\n  ".join(problems))

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise TrainError(f"{where}: expected a table, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        import difflib

        hints = [
            f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, known, 1)) else u
            for u in unknown
        ]
        raise TrainError(f"{where}: unknown setting(s): {', '.join(hints)}")
    missing = [
        f.name
        for f in fields(cls)
        if f.name not in data and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise TrainError(f"{where}: missing required setting(s): {', '.join(missing)}")
    if "betas" in data:
        data = dict(data, betas=tuple(data["betas"]))
    try:
        return cls(**data)
    except TypeError as exc:
        raise TrainError(f"{where}: {exc}") from None


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b.0.c=value`` (value parsed as JSON when it parses, else a string)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise TrainError(f"--set {assignment!r}: expected KEY=VALUE")
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        try:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        except (IndexError, ValueError):
            raise TrainError(f"--set {assignment!r}: no {'.'.join(parts[: i + 1])}") from None
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = _parse_value(raw)
    else:
        node[last] = _parse_value(raw)


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a TOML or YAML recipe, apply ``--set`` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            data = tomllib.loads(text)
    except Exception as exc:  # noqa: BLE001 - toml / yaml parse errors
        raise TrainError(f"{path}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise TrainError(f"{path}: the config must be a table / mapping")
    for assignment in overrides:
        apply_override(data, assignment)
    return _build(TrainConfig, data, str(path))
