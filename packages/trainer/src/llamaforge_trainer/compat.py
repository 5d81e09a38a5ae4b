"""Fixes for ColossalAI 0.5.0 on the supported stack (torch 2.5.1), each idempotent.

Each one patches a named ColossalAI (or torch.distributed) function at its module, so that the
plugin code which looks it up there at call time gets the fixed one; none changes behaviour
that was already right. ``apply_all`` runs those the ``3d`` plugin needs before it is built.

* ``cpu_accelerator_compat``: ColossalAI's CPU accelerator lacks the RNG and sync calls
  ShardFormer makes (they raise or call ``torch.get_rng_state`` wrongly); applied only when no
  CUDA device is visible.
* ``gloo_collectives_compat``: gloo has no ``reduce_scatter`` or list ``all_to_all``, which
  sequence parallelism calls; only gloo groups take the replacements.
* ``p2p_compat``: the pipeline's send/recv asks ``c10d.Backend.HCCL``, absent from torch 2.5.
* ``grad_norm_compat``: the hybrid optimizers skip the gradient-norm all-reduces on a rank
  without gradients, and its peers wait forever.
* ``ring_gather_compat``: sequence parallelism's ``ring`` mode gathered the wrong input for the
  weight gradients of its column-parallel linears (the forward was right, the update was not).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def cpu_accelerator_compat() -> None:
    """Give ColossalAI's CPU accelerator the RNG and sync calls ShardFormer makes (idempotent)."""
    if torch.cuda.is_available():
        return
    from colossalai.accelerator.cpu_accelerator import CpuAccelerator

    if getattr(CpuAccelerator, "_llamaforge_compat", False):
        return

    def get_rng_state(self, device=None):
        return torch.get_rng_state()

    def set_rng_state(self, new_state, device=None):
        torch.set_rng_state(new_state)

    def manual_seed(self, seed):
        torch.manual_seed(seed)

    def synchronize(self, device=None):
        return None

    CpuAccelerator.get_rng_state = get_rng_state
    CpuAccelerator.set_rng_state = set_rng_state
    CpuAccelerator.manual_seed = manual_seed
    CpuAccelerator.manual_seed_all = manual_seed
    CpuAccelerator.initial_seed = lambda self: torch.initial_seed()
    CpuAccelerator.synchronize = synchronize
    CpuAccelerator.empty_cache = lambda self: None
    CpuAccelerator._llamaforge_compat = True


def p2p_compat() -> None:
    """ColossalAI 0.5.0's pipeline send/recv asks ``c10d.Backend.HCCL`` (Ascend) whenever the
    group is not NCCL; torch 2.5.1 has no such name, so every gloo pipeline crashed. Give it
    the name and an "is it available" answer of no (idempotent; NCCL never reaches them)."""
    from torch.distributed import distributed_c10d as c10d

    if not hasattr(c10d.Backend, "HCCL"):
        c10d.Backend.HCCL = "hccl"
    if not hasattr(torch.distributed, "is_hccl_available"):
        torch.distributed.is_hccl_available = lambda: False


class _Done:
    """The work handle of a collective that has already finished."""

    def wait(self, timeout=None) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


def gloo_collectives_compat() -> None:
    """Give gloo the two collectives ShardFormer's sequence parallelism calls and torch 2.5.1's
    gloo lacks (idempotent): ``reduce_scatter`` of a tensor list becomes an all-reduce of
    their concatenation, keeping this rank's part, and ``all_to_all`` of tensor lists becomes
    one ``all_to_all_single`` over their flattened concatenation. Only gloo groups take these
    paths; NCCL ones reach torch's own functions untouched. Slower than a real reduce-scatter
    (every rank receives the whole sum) — CPU runs are for testing, not speed."""
    if getattr(dist.reduce_scatter, "_llamaforge_compat", False):
        return
    reduce_scatter, all_to_all = dist.reduce_scatter, dist.all_to_all

    def is_gloo(group) -> bool:
        return dist.get_backend(group) == dist.Backend.GLOO

    def gloo_reduce_scatter(output, input_list, op=dist.ReduceOp.SUM, group=None, async_op=False):
        if not is_gloo(group):
            return reduce_scatter(output, input_list, op=op, group=group, async_op=async_op)
        whole = torch.cat([t.reshape(-1) for t in input_list])
        dist.all_reduce(whole, op=op, group=group)
        rank, size = dist.get_rank(group), output.numel()
        offset = sum(t.numel() for t in input_list[:rank])
        output.copy_(whole[offset : offset + size].view_as(output))
        return _Done() if async_op else None

    def gloo_all_to_all(output_list, input_list, group=None, async_op=False):
        if not is_gloo(group):
            return all_to_all(output_list, input_list, group=group, async_op=async_op)
        sent = torch.cat([t.reshape(-1) for t in input_list])
        received = sent.new_empty(sum(t.numel() for t in output_list))
        dist.all_to_all_single(
            received,
            sent,
            output_split_sizes=[t.numel() for t in output_list],
            input_split_sizes=[t.numel() for t in input_list],
            group=group,
        )
        for target, part in zip(
            output_list, received.split([t.numel() for t in output_list]), strict=True
        ):
            target.copy_(part.view_as(target))
        return _Done() if async_op else None

    gloo_reduce_scatter._llamaforge_compat = True
    dist.reduce_scatter, dist.all_to_all = gloo_reduce_scatter, gloo_all_to_all


def grad_norm_compat() -> None:
    """ColossalAI 0.5.0's hybrid-parallel optimizers (ZeRO 0: plain and mixed precision)
    return a zero gradient norm early on a rank that holds no gradient — skipping the
    all-reduces its tensor / pipeline peers are waiting in. A pipeline stage with nothing
    trainable (an embeddings-only stage with pp ≥ 3: the middle stages hold only frozen
    layers) hung every rank at its first step. Such a rank now joins them with a zero
    (idempotent). The ZeRO optimizer has the same early return; the config refuses that case.
    """
    from colossalai.accelerator import get_accelerator
    from colossalai.booster.plugin import hybrid_parallel_plugin as hybrid

    for cls in (hybrid.HybridParallelNaiveOptimizer, hybrid.HybridParallelAMPOptimizer):
        original = cls._compute_grad_norm
        if getattr(original, "_llamaforge_compat", False):
            continue

        def compute_grad_norm(self, param_gradient_pairs, norm_type=2, _original=original):
            if not param_gradient_pairs:  # a (parameter, gradient) pair of one zero
                zero = torch.zeros(1, device=get_accelerator().get_current_device())
                param_gradient_pairs = [(zero, zero)]
            return _original(self, param_gradient_pairs, norm_type)

        compute_grad_norm._llamaforge_compat = True
        cls._compute_grad_norm = compute_grad_norm


def ring_gather_compat() -> None:
    """Replace ColossalAI 0.5.0's ``_ring_as_gather`` (sp_mode ``ring``): it swaps its send and
    receive buffers in place and records the *same* dict every round, so the gathered input it
    returns — what the column-parallel linears keep for their weight gradients — holds this
    rank's shard (and stale buffers) instead of every rank's. The forward output was right, so
    only training went wrong: on two ranks the embeddings-only stage matched ddp and the full
    stage drifted. This one keeps every shard it receives in its own buffer; it still sends
    the next shard while multiplying the one in hand."""
    from colossalai.shardformer.layer import _operation

    if getattr(_operation._ring_as_gather, "_llamaforge_compat", False):
        return

    def ring_as_gather(
        func, input_to_gather=None, input_local=None, process_group=None, gather_dim=1, **_
    ):
        size, rank = dist.get_world_size(process_group), dist.get_rank(process_group)
        ranks = dist.get_process_group_ranks(process_group)
        source, target = ranks[(rank + 1) % size], ranks[(rank - 1) % size]
        held = {k: v.contiguous() for k, v in input_to_gather.items()}
        shards, outputs = [], []  # round i holds the shard of rank (rank + i) % size
        for i in range(size):
            handles, received = [], {}
            if i < size - 1:
                ops = []
                for k, v in held.items():
                    received[k] = torch.empty_like(v)
                    ops.append(dist.P2POp(dist.irecv, received[k], source, group=process_group))
                    ops.append(dist.P2POp(dist.isend, v, target, group=process_group))
                handles = dist.batch_isend_irecv(ops)
            shards.append(held)
            outputs.append(func(**held, **input_local))
            for handle in handles:
                handle.wait()
            held = received
        order = [(j - rank) % size for j in range(size)]  # back to rank order
        gathered = {
            k: torch.cat([shards[i][k] for i in order], dim=gather_dim) for k in input_to_gather
        }
        return torch.cat([outputs[i] for i in order], dim=gather_dim), gathered

    ring_as_gather._llamaforge_compat = True
    _operation._ring_as_gather = ring_as_gather


def apply_all() -> None:
    """Every fix the ``3d`` plugin needs, for the backend and devices of this process."""
    cpu_accelerator_compat()
    if dist.get_backend() == dist.Backend.GLOO:
        gloo_collectives_compat()
    p2p_compat()
    grad_norm_compat()
    ring_gather_compat()
