"""Fused RMSNorm: the plain path where it cannot run, the same numbers where it can."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from llamaforge_trainer import TrainError
from llamaforge_trainer.kernels import fused_rmsnorm_available, use_fused_rmsnorm
from llamaforge_trainer.packed import PackedCausalLM


def _norms(model) -> list[str]:
    return [type(m).__name__ for m in model.modules() if "RMSNorm" in type(m).__name__]


def test_without_the_kernel_auto_keeps_plain_rmsnorm_and_on_says_why(tiny_model):
    if fused_rmsnorm_available():
        pytest.skip("the fused kernel can run here")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    before = _norms(model)
    assert use_fused_rmsnorm(model, "auto") == 0
    assert use_fused_rmsnorm(model, "off") == 0
    assert _norms(model) == before == ["LlamaRMSNorm"] * len(before)
    with pytest.raises(TrainError, match="needs a CUDA device and liger-kernel"):
        use_fused_rmsnorm(model, "on")


@pytest.mark.gpu
def test_fused_rmsnorm_gives_the_plain_loss_and_gradients(tiny_model):
    if not fused_rmsnorm_available():
        pytest.skip("needs CUDA and liger-kernel")
    plain = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").cuda()
    fused = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").cuda()
    layers = plain.config.num_hidden_layers
    assert use_fused_rmsnorm(fused, "on") == 2 * layers + 1
    assert "LlamaRMSNorm" not in _norms(fused)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, plain.config.vocab_size, (2, 96), generator=g).cuda()
    pos = torch.cat([torch.arange(40), torch.arange(56)]).repeat(2, 1).cuda()
    losses = []
    for model in (plain, fused):
        loss, n = PackedCausalLM(model)(ids, ids, pos)
        (loss / n).backward()
        losses.append(float(loss / n))
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    for (name, a), b in zip(plain.named_parameters(), fused.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5), name
