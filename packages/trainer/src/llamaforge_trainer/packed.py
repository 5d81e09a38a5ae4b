"""Attention that never crosses a document boundary inside a packed row, and the loss.

* flash-attn installed (GPU): transformers' ``flash_attention_2`` with ``position_ids`` that
  restart at each document — it switches to the varlen kernel (``cu_seqlens`` from the
  restarts) by itself.
* otherwise (``auto``): ``sdpa_docwise`` — PyTorch SDPA run once per document with
  ``is_causal=True`` (registered with transformers' ``AttentionInterface``). It costs the sum of
  the squared document lengths instead of the square of the row, and uses SDPA's fused causal
  kernel; the spans come from the same position-id restarts, found once per forward by the
  wrapper and left on the position-id tensor, which the body's forward (HF's, or ShardFormer's
  under the ``3d`` plugin, which takes no extra arguments) hands to every attention call; an
  attention call without them finds them in its ``position_ids``.
* ``sdpa``: one SDPA call per layer with an additive block-diagonal causal mask built from the
  document lengths (``attention_mask`` of shape ``[batch, 1, L, L]``, 0 = attend, dtype min =
  masked) — the full square is computed and masked.

The loss is a chunked cross-entropy over the hidden states: only positions with a label are
projected to the vocabulary, a chunk at a time, and each chunk's gradients are taken while its
logits exist, so full fp32 logits (69k vocabulary × 4096 tokens = 1.1 GB per row) never exist
and none are recomputed in backward. The first token of each
document is never a target (nothing before it in its document predicts it).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

IGNORE = -100
DOCWISE = "sdpa_docwise"
# Where the wrapper leaves a row's document spans on the position-id tensor itself: the body's
# forward hands that tensor unchanged to every attention call (ShardFormer's, under the 3d
# plugin, takes no extra argument to carry them), so the spans are found once per forward, not
# once per layer (each a host sync on GPU).
SPANS_ATTR = "llamaforge_document_spans"


def flash_attn_available() -> bool:
    """flash-attn importable and a CUDA device present."""
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def choose_attention(setting: str) -> str:
    """transformers' ``attn_implementation`` for a config value (auto / flash / sdpa / eager)."""
    if setting == "auto":
        if flash_attn_available():
            return "flash_attention_2"
        setting = "docwise"
    if setting == "docwise":
        register_docwise()
        return DOCWISE
    if setting == "flash":
        if not flash_attn_available():
            from llamaforge_trainer.errors import TrainError

            raise TrainError(
                "attention = 'flash' needs flash-attn and a CUDA device; install it "
                "(see README) or use 'auto'"
            )
        return "flash_attention_2"
    return setting


def block_causal_mask(position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``[B, 1, L, L]``: token i sees token j iff same document and j ≤ i.

    Documents are the runs of ``position_ids`` that restart at 0.
    """
    doc = torch.cumsum((position_ids == 0).to(torch.int32), dim=1)  # [B, L] document index
    same = doc[:, :, None] == doc[:, None, :]
    length = position_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    allowed = same & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def document_spans(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, ``(start, length)`` of each run of ``position_ids`` that restarts at 0."""
    length = position_ids.shape[1]
    spans = []
    for row in position_ids:
        starts = sorted({0, *(row == 0).nonzero().flatten().tolist()})
        ends = [*starts[1:], length]
        spans.append([(a, b - a) for a, b in zip(starts, ends, strict=True)])
    return spans


def _spans_per_row(position_ids: torch.Tensor, rows: int) -> list[list[tuple[int, int]]]:
    spans = document_spans(position_ids)
    return spans * rows if len(spans) == 1 and rows > 1 else spans  # broadcast [1, L] ids


def docwise_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    document_spans: list[list[tuple[int, int]]] | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: causal SDPA inside each document span.

    ``query`` is ``[B, H, L, D]``, ``key`` / ``value`` ``[B, H_kv, L, D]``; returns
    ``[B, L, H, D]``. The spans are ``document_spans``, else those the wrapper attached to
    ``position_ids`` (:data:`SPANS_ATTR`), else the restarts of ``position_ids``; with none
    (no restart: generation, evaluation, one document) it is plain SDPA with the mask
    transformers built.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    same_length = query.shape[2] == key.shape[2]
    if document_spans is None and same_length and position_ids is not None:
        document_spans = getattr(position_ids, SPANS_ATTR, None)
        if document_spans is None and bool((position_ids[:, 1:] == 0).any()):
            document_spans = _spans_per_row(position_ids, query.shape[0])
    if document_spans is None or not same_length:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    dropout = dropout if module.training else 0.0
    rows = []
    for b, spans in enumerate(document_spans):
        parts = [
            F.scaled_dot_product_attention(
                query[b : b + 1, :, a : a + n],
                key[b : b + 1, :, a : a + n],
                value[b : b + 1, :, a : a + n],
                dropout_p=dropout,
                scale=scaling,
                is_causal=True,
            )
            for a, n in spans
        ]
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def register_docwise() -> None:
    """Make ``attn_implementation="sdpa_docwise"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(DOCWISE, docwise_attention)


def shift_labels(labels: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Targets for each position: the next token's label, none across a document start."""
    target = torch.full_like(labels, IGNORE)
    target[:, :-1] = labels[:, 1:]
    target[:, :-1][position_ids[:, 1:] == 0] = IGNORE
    return target


def _chunk_loss(
    h: torch.Tensor,
    weight: torch.Tensor,
    t: torch.Tensor,
    start: int,
    padding: int,
    group,
    with_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed cross-entropy of one chunk and, ``with_grad``, its gradient with respect to the
    chunk's logits (softmax − one-hot, in the dtype of the projection). ``weight``: rows
    ``[start, start + rows)`` of the output projection, its last ``padding`` rows beyond the
    vocabulary."""
    rows = weight.shape[0]
    out = F.linear(h, weight)
    # one chunk × vocabulary buffer (fp32), reused in place: logits, then softmax, then its
    # gradient (each fresh buffer of that size is a round of page faults on CPU)
    logits = out.float()
    if padding:
        logits[:, rows - padding :] = float("-inf")
    peak = logits.amax(dim=-1)
    if group is not None:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
    local = t - start
    mine = (local >= 0) & (local < rows)
    index = local.clamp(0, rows - 1)
    picked = torch.where(mine, logits.gather(1, index[:, None]).squeeze(1), 0.0)
    probs = logits.sub_(peak[:, None]).exp_()  # unnormalised softmax over this rank's columns
    sum_exp = probs.sum(dim=-1)
    if group is not None:
        dist.all_reduce(sum_exp, group=group)
        dist.all_reduce(picked, group=group)
    loss = (torch.log(sum_exp) + peak - picked).sum()
    if not with_grad:
        return loss, None
    probs /= sum_exp[:, None]
    probs[torch.arange(len(t), device=probs.device), index] -= mine.float()
    return loss, probs.to(out.dtype)


def _linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    chunk: int,
    vocab_size: int,
    group,
    want_hidden: bool,
    want_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Summed cross-entropy of ``hidden @ weight.T`` against ``target`` (every row has a
    target), ``chunk`` rows at a time, and — as asked — its gradients with respect to
    ``hidden`` and ``weight`` (fp32), computed from the same chunk of logits.

    ``weight`` holds rows ``[start, start + rows)`` of the (possibly padded) output
    projection, ``start = rank × rows`` within ``group`` (tensor parallel: the softmax's max
    and sum, the target's logit and the hidden gradient are reduced over it); rows at or
    beyond ``vocab_size`` are padding and never take part in the softmax.
    """
    rows = weight.shape[0]
    start = rows * (dist.get_rank(group) if group is not None else 0)
    padding = max(0, min(rows, start + rows - vocab_size))
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if want_hidden else None
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
    grad_weight = grad_weight if want_weight else None
    device = hidden.device.type
    # Under autocast the matmuls run in its dtype, as they would in the plain path; the casts
    # are made here, not by autocast, which would cache a gradient-less copy of the weight
    # (made with autograd off) and hand it to later users in the same autocast region.
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    if dtype is not None:
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    with torch.autocast(device, enabled=False):
        for lo in range(0, target.numel(), chunk):
            h, t = hidden[lo : lo + chunk], target[lo : lo + chunk]
            loss, grad_logits = _chunk_loss(
                h, weight, t, start, padding, group, want_hidden or want_weight
            )
            total += loss
            # written and accumulated in place where the dtypes allow (no temporaries)
            if want_hidden and grad_hidden.dtype == grad_logits.dtype:
                torch.matmul(grad_logits, weight, out=grad_hidden[lo : lo + chunk])
            elif want_hidden:
                grad_hidden[lo : lo + chunk] = grad_logits @ weight
            if want_weight and grad_weight.dtype == grad_logits.dtype:
                grad_weight.addmm_(grad_logits.T, h)
            elif want_weight:
                grad_weight += (grad_logits.T @ h).float()
    if want_hidden and group is not None:  # hidden is replicated: its gradient is the sum
        dist.all_reduce(grad_hidden, group=group)
    return total, grad_hidden, grad_weight


class _LinearCrossEntropy(torch.autograd.Function):
    """The summed loss of :func:`_linear_cross_entropy`; its gradients are computed in forward,
    chunk by chunk, while each chunk's logits exist, so backward only scales them — no logits
    are kept for backward and none are computed twice (a checkpointed chunk would project
    each chunk to the vocabulary once more: 4 instead of 3 vocabulary-sized matmuls)."""

    @staticmethod
    def forward(ctx, hidden, weight, target, chunk, vocab_size, group):
        want_hidden, want_weight = ctx.needs_input_grad[:2]
        total, grad_hidden, grad_weight = _linear_cross_entropy(
            hidden, weight, target, chunk, vocab_size, group, want_hidden, want_weight
        )
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_total.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_total).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    chunk: int,
    *,
    vocab_size: int | None = None,
    group=None,
) -> torch.Tensor:
    """Sum of cross-entropy over positions with a target, ``chunk`` positions at a time: full
    logits never exist, only a chunk's (``chunk`` × vocabulary, fp32).

    ``weight`` is the output projection, or — tensor parallel — this rank's slice of its rows
    (``group``: the tensor-parallel group; each rank gets the same loss, and the gradient
    of ``hidden`` is summed over the group). ``vocab_size``: the real vocabulary when the
    projection carries padding rows (ColossalAI pads it to a multiple of 64 × tp).
    """
    vocab_size = vocab_size or weight.shape[0] * (dist.get_world_size(group) if group else 1)
    keep = target.reshape(-1) != IGNORE
    h = hidden.reshape(-1, hidden.shape[-1])[keep]
    t = target.reshape(-1)[keep]
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, t, chunk, vocab_size, group)
    return _linear_cross_entropy(h, weight, t, chunk, vocab_size, group, False, False)[0]


class PackedCausalLM(nn.Module):
    """Wraps a ``*ForCausalLM`` so that forward returns ``(loss_sum, target_tokens)``.

    This is the module handed to the Booster (so DDP's hooks see the whole computation).
    ``tp_group``: set when the ``3d`` plugin shards the LM head over a tensor-parallel group.
    ``sp_group``: set for ``all_to_all`` sequence parallelism: the body returns this rank's
    slice of the sequence, and the loss (LM head included) covers that slice only.
    ``stage_manager``: set when the ``3d`` plugin pipelines the model (``pp > 1``): a stage
    that is not the last takes the previous stage's ``hidden_states`` (the first: the token
    ids) and returns ``{"hidden_states": ...}`` for the next; only the last computes the loss.
    """

    def __init__(self, causal_lm: nn.Module, *, loss_chunk: int = 1024):
        super().__init__()
        self.causal_lm = causal_lm
        self.loss_chunk = loss_chunk
        self.vocab_size = causal_lm.config.vocab_size
        self.tp_group = None
        self.sp_group = None
        self.stage_manager = None

    def base(self) -> nn.Module:
        lm = self.causal_lm
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm

    def forward(self, input_ids, labels, position_ids, hidden_states=None):
        lm = self.base()
        stages = self.stage_manager
        inputs = {"input_ids": input_ids}
        if stages is not None:  # ShardFormer's stage forward of the LLaMA body
            first = stages.is_first_stage()
            inputs = {"input_ids": input_ids if first else None, "hidden_states": hidden_states}
        mask = None
        attention = lm.config._attn_implementation
        if attention == DOCWISE:
            setattr(position_ids, SPANS_ATTR, document_spans(position_ids))
        elif attention != "flash_attention_2":
            dtype = (
                hidden_states.dtype
                if hidden_states is not None
                else lm.get_input_embeddings().weight.dtype
            )
            mask = block_causal_mask(position_ids, dtype)
        if self.sp_group is not None:  # keep each rank's slice of the rows to the end
            inputs["force_sp_gather"] = False
        out = lm.model(**inputs, attention_mask=mask, position_ids=position_ids, use_cache=False)
        if stages is not None and not stages.is_last_stage():
            return out  # {"hidden_states": ...}, sent to the next stage
        target = shift_labels(labels, position_ids)
        if self.sp_group is not None:  # the targets of this rank's slice
            size, rank = dist.get_world_size(self.sp_group), dist.get_rank(self.sp_group)
            target = target.chunk(size, dim=1)[rank]
        loss = chunked_cross_entropy(
            out[0],
            lm.get_output_embeddings().weight,
            target,
            self.loss_chunk,
            vocab_size=self.vocab_size,
            group=self.tp_group,
        )
        return loss, (target != IGNORE).sum()
