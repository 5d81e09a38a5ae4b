"""Attention that never crosses a document boundary inside a packed row, and the loss.

* flash-attn installed (GPU): transformers' ``flash_attention_2`` with ``position_ids`` that
  restart at each document — it switches to the varlen kernel (``cu_seqlens`` from the
  restarts) by itself.
* otherwise: PyTorch SDPA with an additive block-diagonal causal mask built from the document
  lengths (``attention_mask`` of shape ``[batch, 1, L, L]``, 0 = attend, dtype min = masked).

The loss is a chunked cross-entropy over the hidden states: only positions with a label are
projected to the vocabulary, a chunk at a time, each chunk recomputed in backward, so full fp32
logits (69k vocabulary × 4096 tokens = 1.1 GB per row) never exist. The first token of each
document is never a target (nothing before it in its document predicts it).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE = -100


def flash_attn_available() -> bool:
    """flash-attn importable and a CUDA device present."""
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def choose_attention(setting: str) -> str:
    """transformers' ``attn_implementation`` for a config value (auto / flash / sdpa / eager)."""
    if setting == "auto":
        return "flash_attention_2" if flash_attn_available() else "sdpa"
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


def shift_labels(labels: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Targets for each position: the next token's label, none across a document start."""
    target = torch.full_like(labels, IGNORE)
    target[:, :-1] = labels[:, 1:]
    target[:, :-1][position_ids[:, 1:] == 0] = IGNORE
    return target


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits, target, reduction="sum")


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Sum of cross-entropy over positions with a target, ``chunk`` positions at a time."""
    keep = target.reshape(-1) != IGNORE
    h = hidden.reshape(-1, hidden.shape[-1])[keep]
    t = target.reshape(-1)[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for lo in range(0, t.numel(), chunk):
        part = (h[lo : lo + chunk], weight, t[lo : lo + chunk])
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            total = total + checkpoint(_chunk_loss, *part, use_reentrant=False)
        else:
            total = total + _chunk_loss(*part)
    return total


class PackedCausalLM(nn.Module):
    """Wraps a ``*ForCausalLM`` so that forward returns ``(loss_sum, target_tokens)``.

    This is the module handed to the Booster (so DDP's hooks see the whole computation).
    """

    def __init__(self, causal_lm: nn.Module, *, loss_chunk: int = 1024):
        super().__init__()
        self.causal_lm = causal_lm
        self.loss_chunk = loss_chunk

    def base(self) -> nn.Module:
        lm = self.causal_lm
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm

    def forward(self, input_ids, labels, position_ids):
        lm = self.base()
        mask = None
        if lm.config._attn_implementation != "flash_attention_2":
            mask = block_causal_mask(position_ids, lm.get_input_embeddings().weight.dtype)
        hidden = lm.model(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        target = shift_labels(labels, position_ids)
        loss = chunked_cross_entropy(
            hidden, lm.get_output_embeddings().weight, target, self.loss_chunk
        )
        return loss, (target != IGNORE).sum()
