"""Throughput, MFU, and where metrics go (jsonl, tensorboard, a PNG loss curve).

MFU = model FLOPs per token × tokens/s ÷ peak FLOP/s. FLOPs per token follow the PaLM
appendix: 6·N for the matmuls of forward + backward (N = parameters outside the input
embedding) plus 12·layers·d·s for attention, with s the mean document length (packed rows attend
only inside their documents). The peak comes from, in order: ``$LLAMAFORGE_PEAK_FLOPS``; the
vendor's dense bf16 / fp16 figure for known GPUs; otherwise it is measured — the best of a few
large matmuls in the run's dtype — and labelled "measured".
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

# Dense (no sparsity) tensor-core peaks, FLOP/s, from the vendors' data sheets.
GPU_PEAKS = {
    "H200": 989e12,
    "H100 80GB HBM3": 989e12,  # SXM
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "RTX 4090": 165e12,
}


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """(peak FLOP/s, how it is known)."""
    env = os.environ.get("LLAMAFORGE_PEAK_FLOPS")
    if env:
        return float(env), "$LLAMAFORGE_PEAK_FLOPS"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAKS.items():
            if key in name:
                scale = 0.5 if dtype == torch.float32 else 1.0  # tf32 is half the bf16 rate
                return value * scale, f"data sheet ({key})"
        return measure_matmul_flops(device, dtype), "measured (best large matmul)"
    # On a CPU the peak is what its vector units can do at their top clock; a timed matmul is
    # only a lower bound (other load, small sizes) and MFU against it passed 100 %.
    measured = measure_matmul_flops(device, dtype)
    theory = cpu_peak_flops(dtype)
    if theory is None or theory[0] < measured:
        return measured, "measured (best large matmul)"
    return theory


_PER_CYCLE = (  # FLOPs per cycle per core: vector width × FMA units × 2
    ("amx_bf16", 2048, "AMX bf16"),
    ("avx512_bf16", 128, "AVX512-BF16"),
    ("avx512f", 64, "AVX-512 FMA"),
    ("fma", 32, "AVX2 FMA"),
)


def _cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def cpu_flags(info: str | None = None) -> set[str]:
    """The instruction-set flags of this CPU (empty where /proc/cpuinfo is not there)."""
    info = _cpuinfo() if info is None else info
    return set(
        next(
            (
                ln.split(":", 1)[1].split()
                for ln in (info or "").splitlines()
                if ln.startswith("flags")
            ),
            [],
        )
    )


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX). AVX-512 alone is
    not enough: without these units bf16 matmuls are emulated and slower than fp32."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(setting: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` where ``device`` computes it natively (a GPU with bf16, a CPU with
    bf16 units), else ``fp32``; any other setting is returned as given."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


TURBO_ALLOWANCE = 1.5
"""How far above the nominal clock a CPU may run where the top clock cannot be read (server
parts turbo to 1.3–1.9× their base clock)."""


def cpu_peak_flops(dtype: torch.dtype) -> tuple[float, str] | None:
    """An upper bound on this CPU's matmul FLOP/s for ``dtype`` from /proc/cpuinfo: threads
    torch uses × the top clock × FLOPs per cycle of the widest unit that computes ``dtype``
    (bf16 units only count for bf16). None where /proc/cpuinfo is not there."""
    info = _cpuinfo()
    if info is None:
        return None
    flags = cpu_flags(info)
    mhz = [float(ln.split(":", 1)[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")]
    top = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    top_hz = [int(top.read_text()) * 1e3] if top.is_file() else []
    hz = max([*(m * 1e6 for m in mhz), *top_hz], default=0.0)
    if not hz:
        return None
    clock = f"{hz / 1e9:.2f} GHz"
    if not top_hz:
        # No cpufreq (a VM): "cpu MHz" is the nominal clock and turbo runs above it — seen
        # here: fp32 matmuls at 70 FLOP/cycle of a 2.60 GHz AVX-512 Xeon's nominal clock.
        hz *= TURBO_ALLOWANCE
        clock = f"{clock} nominal × {TURBO_ALLOWANCE} turbo allowance (no cpufreq)"
    per_cycle, unit = 16, "SSE"
    for flag, flops, name in _PER_CYCLE:
        if flag in flags and (dtype == torch.bfloat16 or "bf16" not in flag):
            per_cycle, unit = flops, name
            break
    cores = torch.get_num_threads()
    source = f"CPU peak: {cores} threads × {clock} × {per_cycle} FLOP/cycle ({unit})"
    return cores * hz * per_cycle, source


def measure_matmul_flops(
    device: torch.device, dtype: torch.dtype, size: int = 1024, seconds: float = 0.3
) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters that take part in a matrix product per token: everything but the input
    embedding, plus the output projection when it is tied to it. Taken before any plugin
    shards the model (lazy tensors count too)."""
    embed = model.get_input_embeddings().weight.numel()
    n = sum(p.numel() for p in model.parameters()) - embed
    if getattr(model.config, "tie_word_embeddings", False):
        n += embed  # the tied output projection is a real matmul
    return n


def matmul_parameters_of(model_dir: str | Path) -> int:
    """:func:`matmul_parameters` of the model in an HF dir, counted on the meta device (no
    weights are read): what one training token costs is 6 FLOPs per such parameter."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return matmul_parameters(model)


def flops_per_token(matmul_params: int, config, mean_doc_len: float) -> float:
    """Training FLOPs per token: 6 per matmul parameter, plus attention (12 · layers · d ·
    the mean document length, since packed documents attend only within themselves)."""
    layers, d = config.num_hidden_layers, config.hidden_size
    return 6 * matmul_params + 12 * layers * d * mean_doc_len


class MetricsSink:
    """Rank 0 only: one JSON line per step, tensorboard scalars, the loss curve at the end."""

    def __init__(self, output_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self.writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"))
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                self.writer = None

    def rewind(self, global_step: int) -> None:
        """Forget rows after ``global_step`` (a run resumed from that checkpoint logs them
        again): ``metrics.jsonl`` then holds each step once."""
        if not self.enabled or not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [ln for ln in lines if ln.strip() and json.loads(ln)["global_step"] <= global_step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(f"{ln}\n" for ln in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.writer is not None:
            step = row["global_step"]
            for key in ("loss", "lr", "tokens_per_s", "mfu", "grad_norm"):
                if row.get(key) is not None:
                    self.writer.add_scalar(f"train/{key}", row[key], step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(output_dir: str | Path) -> list[dict]:
    """The logged rows, the last entry winning for a step logged twice (a resumed run)."""
    path = Path(output_dir) / "metrics.jsonl"
    rows: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows[row["global_step"]] = row
    return [rows[k] for k in sorted(rows)]


def plot_loss(output_dir: str | Path) -> Path | None:
    """``loss.png``: loss per step, one colour per stage."""
    rows = read_metrics(output_dir)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for stage in dict.fromkeys(r["stage"] for r in rows):
        pts = [(r["global_step"], r["loss"]) for r in rows if r["stage"] == stage]
        ax.plot(*zip(*pts, strict=True), label=stage, linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (per target token)")
    ax.set_title("training loss")
    ax.legend()
    fig.tight_layout()
    path = Path(output_dir) / "loss.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
