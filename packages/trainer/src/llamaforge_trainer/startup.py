"""What a training command sets up in its own process before torch's compiler is imported."""

from __future__ import annotations

import os


def no_compile_pool() -> None:
    """Keep torch from starting its compiler's worker pool at import.

    torch 2.5 starts a pool of compiler worker processes as soon as ``torch._inductor`` is
    imported (ColossalAI's booster imports it through bitsandbytes), and each worker imports
    torch again: on a 2-core CPU a 4-process launch of a tiny model takes 41 s instead of 31 s,
    for a compiler llamaforge never calls. With ``TORCH_WARM_POOL=0`` torch starts the pool
    only when something compiles. A command's entry point calls this before it imports the
    booster (the processes torchrun starts inherit it); a value the user set is kept.
    """
    os.environ.setdefault("TORCH_WARM_POOL", "0")
