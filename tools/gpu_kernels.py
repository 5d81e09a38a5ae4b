#!/usr/bin/env python3
"""Prebuild ColossalAI's HybridAdam kernels (``cpu_adam_x86``, ``fused_optim_cuda``) for a GPU
machine whose torch this Python has, without a GPU here (called by ``tools/gpu-check --prepare
--kernels-python PY``, with colossalai on PYTHONPATH as the GPU machine installs it).

Placed in ``colossalai/_C/`` there, they are what ColossalAI's kernel loader imports first, so
it never compiles them on the GPU machine (minutes of its time). Built with nvcc from PATH
(its CUDA major version must be torch's) for one architecture, and for any x86-64 CPU with AVX2
(``-march=native`` would build for this CPU, not the GPU machine's). Measured here on 2 cores:
about 2.5 and 9.5 minutes.

    PYTHONPATH=SITE PY tools/gpu_kernels.py DEST [--arch 9.0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cuda_include_dirs() -> list[str]:
    """Header dirs of the CUDA libraries torch was installed with (cuBLAS for cpu_adam): the
    pip packages under ``nvidia/`` — a bare nvcc install may lack them."""
    import torch

    base = Path(torch.__file__).resolve().parent.parent / "nvidia"
    return sorted(str(p) for p in base.glob("*/include") if p.is_dir())


def build(dest: Path, arch: str) -> list[Path]:
    from colossalai.kernel.extensions import CpuAdamX86Extension, FusedOptimizerCudaExtension
    from colossalai.kernel.extensions.pybind.optimizer import fused_optimizer_cuda
    from torch.utils.cpp_extension import load

    code = arch.replace(".", "")
    # ColossalAI asks the visible GPU for its architecture; there is none here
    fused_optimizer_cuda.get_cuda_cc_flag = lambda: [
        "-gencode",
        f"arch=compute_{code},code=sm_{code}",
    ]
    dest.mkdir(parents=True, exist_ok=True)
    built = []
    for ext in (CpuAdamX86Extension(), FusedOptimizerCudaExtension()):
        start = time.perf_counter()
        cflags = ["-march=x86-64-v3" if f == "-march=native" else f for f in ext.cxx_flags()]
        with tempfile.TemporaryDirectory() as tmp:
            load(
                name=ext.name,
                sources=ext.strip_empty_entries(ext.sources_files()),
                extra_include_paths=ext.strip_empty_entries(ext.include_dirs())
                + _cuda_include_dirs(),
                extra_cflags=cflags,
                extra_cuda_cflags=ext.nvcc_flags(),
                build_directory=tmp,
            )
            target = dest / f"{ext.name}.so"
            shutil.copy(Path(tmp) / f"{ext.name}.so", target)
        if shutil.which("strip"):  # debug info is 97 % of cpu_adam's 11 MB
            subprocess.run(["strip", "--strip-debug", str(target)], check=True)
        print(
            f"{target.name}: {target.stat().st_size / 2**20:.1f} MiB, "
            f"built in {time.perf_counter() - start:.0f} s"
        )
        built.append(target)
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--arch", default="9.0")
    args = parser.parse_args()
    # before torch.utils.cpp_extension is imported: it reads both once. Only this
    # architecture (with no GPU torch would build for every one it knows); the toolkit where
    # it is installed (torch would take /usr/local from a /usr/local/bin/nvcc wrapper script).
    os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch
    if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda/bin/nvcc").exists():
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    build(args.dest, args.arch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
