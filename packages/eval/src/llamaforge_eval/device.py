"""Where a model is evaluated and in which precision: ``--device auto|cpu|cuda[:N]`` and
``--dtype auto|float32|bfloat16|float16``, the same for one process and for ``--nproc``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from llamaforge_eval.errors import EvalError

DEVICES = "auto, cpu, cuda or cuda:N"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(setting: str) -> str:
    """``auto``: the first GPU when torch sees one, else the CPU. ``cuda[:N]`` must exist."""
    import torch

    if setting == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if setting == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", setting)
    if not match:
        raise EvalError(f"device {setting!r} is not one of {DEVICES}")
    if not torch.cuda.is_available():
        raise EvalError(f"device {setting!r}: torch sees no GPU here; use --device cpu or auto")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise EvalError(
            f"device {setting!r}: there are {torch.cuda.device_count()} GPUs (cuda:0 … "
            f"cuda:{torch.cuda.device_count() - 1})"
        )
    return f"cuda:{index}"


def cpu_has_native_bf16() -> bool:
    """From the instruction flags themselves (AVX512-BF16 or AMX): many CPUs with AVX-512
    have neither, and bf16 there is emulated and slow."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next(
        (ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []
    )
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(setting: str, model_dir: Path, device: str) -> str:
    """``auto``: the checkpoint's own bf16 / fp16 where ``device`` computes it natively (a GPU;
    bf16 on a CPU with bf16 units), else float32."""
    import torch

    if setting not in DTYPES:
        raise EvalError(f"dtype {setting!r} is not one of {', '.join(DTYPES)}")
    if setting != "auto":
        return setting
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"  # the model loader names the problem
    stored = str(config.get("torch_dtype") or "float32")
    if device.startswith("cuda"):
        if stored == "bfloat16" and not torch.cuda.is_bf16_supported():
            return "float16"
        return stored if stored in ("bfloat16", "float16") else "float32"
    return "bfloat16" if stored == "bfloat16" and cpu_has_native_bf16() else "float32"
