"""Run under torchrun (gloo): checks llamaforge's replacements for the collectives
ColossalAI 0.5.0 gets wrong or gloo lacks against plain gathers; each rank writes its
results to rank<N>.json in the working directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from llamaforge_trainer.compat import gloo_collectives_compat, ring_gather_compat


def main() -> None:
    dist.init_process_group("gloo")
    gloo_collectives_compat()
    ring_gather_compat()
    from colossalai.shardformer.layer import _operation

    rank, size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)
    checks = {}

    # ring all-gather: the output and the gathered input both equal an all-gather
    x, w = torch.randn(2, 3, 5), torch.randn(4, 5)
    dist.broadcast(w, 0)
    out, gathered = _operation._ring_as_gather(
        F.linear,
        input_to_gather={"input": x},
        input_local={"weight": w},
        process_group=dist.group.WORLD,
    )
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x)
    whole = torch.cat(parts, dim=1)
    checks["ring_output"] = torch.allclose(out, F.linear(whole, w), atol=1e-6)
    checks["ring_gathered_input"] = torch.equal(gathered["input"], whole)

    # reduce-scatter of unequal parts: this rank's part of the sum
    pieces = [torch.randn(r + 1, 2) for r in range(size)]
    mine = torch.empty(rank + 1, 2)
    handle = dist.reduce_scatter(mine, pieces, async_op=True)
    handle.wait()
    total = [p.clone() for p in pieces]
    for p in total:
        dist.all_reduce(p)
    checks["reduce_scatter"] = torch.allclose(mine, total[rank], atol=1e-6)

    # all-to-all of tensor lists: part j of rank i lands as part i of rank j
    sent = [torch.full((2, j + 1), float(10 * rank + j)) for j in range(size)]
    got = [torch.empty(2, rank + 1) for _ in range(size)]
    dist.all_to_all(got, sent)
    checks["all_to_all"] = all(
        torch.equal(g, torch.full((2, rank + 1), float(10 * i + rank))) for i, g in enumerate(got)
    )
    # one file per rank: lines that several ranks print to one pipe can interleave
    Path(f"rank{rank}.json").write_text(json.dumps({"rank": rank, **checks}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
