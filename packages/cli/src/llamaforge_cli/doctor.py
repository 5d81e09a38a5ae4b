"""`llamaforge doctor`: what this machine can run, in one screen."""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
from importlib import metadata

from rich.console import Console
from rich.table import Table

from llamaforge_cli.assets.cache import asset_names, cache_root, verify_asset
from llamaforge_cli.components import COMPONENTS

_STACK = (
    "torch",
    "transformers",
    "colossalai",
    "peft",
    "datasets",
    "tokenizers",
    "sentencepiece",
    "safetensors",
    "flash-attn",
    "liger-kernel",
    "vllm",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _devices() -> list[tuple[str, str]]:
    rows = [("CPU", f"{platform.machine()}, {os.cpu_count()} cores")]
    if importlib.util.find_spec("torch") is None:
        return [*rows, ("torch", "not installed")]
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            rows.append(
                (
                    f"cuda:{i}",
                    f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
                    f"sm_{props.major}{props.minor}",
                )
            )
    else:
        rows.append(("CUDA", f"not available (torch {torch.__version__})"))
    return rows


def _kernels() -> list[tuple[str, str]]:
    rows = []
    if importlib.util.find_spec("colossalai") is None:
        rows.append(("colossalai kernels", "colossalai not installed"))
    else:
        try:
            loader = importlib.import_module("colossalai.kernel.kernel_loader")
            for name in ("FusedOptimizerLoader", "CPUAdamLoader", "LayerNormLoader"):
                try:
                    getattr(loader, name)().load()
                    rows.append((f"colossalai {name[:-6]}", "[green]usable[/]"))
                except Exception as exc:  # noqa: BLE001 - any failure means "not usable here"
                    rows.append(
                        (f"colossalai {name[:-6]}", f"[yellow]not usable[/]: {_short(exc)}")
                    )
        except Exception as exc:  # noqa: BLE001
            rows.append(("colossalai kernels", f"[yellow]not importable[/]: {_short(exc)}"))
    try:
        import flash_attn  # noqa: F401

        rows.append(("flash-attn", "[green]usable[/]"))
    except Exception as exc:  # noqa: BLE001
        rows.append(("flash-attn", f"[yellow]not usable[/] ({_short(exc)}); PyTorch SDPA is used"))
    try:
        import liger_kernel.ops  # noqa: F401  (Triton kernels: they run on CUDA only)

        rows.append(("liger-kernel (fused RMSNorm)", "[green]importable[/] (used on CUDA)"))
    except Exception as exc:  # noqa: BLE001
        rows.append(
            (
                "liger-kernel (fused RMSNorm)",
                f"[yellow]not usable[/] ({_short(exc)}); plain RMSNorm",
            )
        )
    return rows


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:90]


def run_doctor(console: Console) -> None:
    """Print versions, devices, kernel availability and the asset cache."""
    versions = Table(title="versions", show_header=False)
    versions.add_row("python", platform.python_version())
    for dist in ("llamaforge", *(c.distribution for c in COMPONENTS.values()), *_STACK):
        versions.add_row(dist, _version(dist) or "[dim]not installed[/]")
    console.print(versions)
    devices = Table(title="devices", show_header=False)
    for row in _devices():
        devices.add_row(*row)
    console.print(devices)
    kernels = Table(title="fused kernels", show_header=False)
    for row in _kernels():
        kernels.add_row(*row)
    console.print(kernels)
    cache = Table(title=f"asset cache: {cache_root()}", show_header=False)
    for name in asset_names():
        problem = verify_asset(name)
        cache.add_row(name, "[green]ok[/]" if problem is None else f"[yellow]{problem}[/]")
    console.print(cache)
