"""Packed attention and the chunked loss against plain computations on a tiny LLaMA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from llamaforge_datapack import collate_packed
from llamaforge_trainer.packed import (
    SPANS_ATTR,
    PackedCausalLM,
    block_causal_mask,
    choose_attention,
    chunked_cross_entropy,
    document_spans,
    shift_labels,
)


def _load(path, setting):
    return AutoModelForCausalLM.from_pretrained(
        path, torch_dtype=torch.float32, attn_implementation=choose_attention(setting)
    ).eval()


@pytest.fixture(scope="module", params=["sdpa", "docwise"])
def model(tiny_model, request):
    return _load(tiny_model, request.param)


def _docs(vocab, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g) for n in lengths]


def test_packed_row_loss_equals_documents_run_one_by_one(model):
    docs = _docs(model.config.vocab_size, [17, 5, 40, 2, 9])
    row = {
        "input_ids": torch.cat(docs).tolist(),
        "labels": torch.cat(docs).tolist(),
        "lengths": [len(d) for d in docs],
    }
    batch = collate_packed([row])
    wrapped = PackedCausalLM(model, loss_chunk=7)
    with torch.no_grad():
        packed_sum, packed_n = wrapped(batch["input_ids"], batch["labels"], batch["position_ids"])
        total, count = 0.0, 0
        for d in docs:
            out = model(d[None], labels=d[None])  # transformers' own loss: mean over n-1
            total += float(out.loss) * (len(d) - 1)
            count += len(d) - 1
    assert int(packed_n) == count
    assert float(packed_sum) / count == pytest.approx(total / count, rel=1e-5)


def test_padding_a_batch_leaves_its_loss_unchanged(model):
    """Sequence parallelism pads rows to a multiple of sp: the padding is its own document
    without targets, so the loss sum and target count stay those of the real tokens."""
    from llamaforge_trainer.data import pad_to_multiple, stack_micro_batches

    docs = _docs(model.config.vocab_size, [17, 5, 8, 3], seed=4)
    rows = [
        {"input_ids": d.tolist(), "labels": d.tolist(), "lengths": [len(d)]}
        for d in (torch.cat(docs[:2]), torch.cat(docs[2:]))
    ]
    rows[0]["lengths"], rows[1]["lengths"] = [17, 5], [8, 3]
    batch = collate_packed(rows)  # 22 and 11 tokens: the second row already padded to 22
    padded = pad_to_multiple(batch, 4)
    assert padded["input_ids"].shape == (2, 24)
    assert "cu_seqlens" not in padded  # it no longer describes the rows
    assert pad_to_multiple(batch, 2) is batch
    alone = collate_packed(rows[1:])  # 11 tokens, stacked under the 24-token batch
    stacked = stack_micro_batches([padded, alone])
    assert stacked["input_ids"].shape == (3, 24)
    wrapped = PackedCausalLM(model, loss_chunk=5)
    with torch.no_grad():
        (plain_sum, plain_n), (pad_sum, pad_n), (stack_sum, stack_n), (one_sum, one_n) = [
            wrapped(b["input_ids"], b["labels"], b["position_ids"])
            for b in (batch, padded, stacked, alone)
        ]
    assert int(pad_n) == int(plain_n) == 17 + 5 + 8 + 3 - 4
    assert float(pad_sum) == pytest.approx(float(plain_sum), rel=1e-5)
    assert int(stack_n) == int(plain_n) + int(one_n)
    assert float(stack_sum) == pytest.approx(float(plain_sum) + float(one_sum), rel=1e-5)


def test_docwise_and_masked_attention_give_the_same_loss_and_gradients(tiny_model):
    docs = _docs(1000, [31, 4, 1, 60, 12], seed=2)
    rows = [
        {
            "input_ids": torch.cat(docs).tolist(),
            "labels": torch.cat(docs).tolist(),
            "lengths": [len(d) for d in docs],
        },
        {
            "input_ids": torch.cat(docs[:2]).tolist(),
            "labels": torch.cat(docs[:2]).tolist(),
            "lengths": [31, 4],
        },
    ]  # the second row is shorter: its padding forms a span of its own
    batch = collate_packed(rows)
    assert document_spans(batch["position_ids"])[1] == [(0, 31), (31, 4), (35, 73)]
    results = []
    # docwise three ways: the wrapper (spans left on the position-id tensor, which the body's
    # forward hands to every attention call); spans handed down the forward as an argument;
    # found by each attention call in the position ids
    for setting, how in (("sdpa", ""), *(("docwise", h) for h in ("wrapper", "arg", "found"))):
        lm = _load(tiny_model, setting).train()
        ids, pos = batch["input_ids"], batch["position_ids"].clone()
        if how in ("arg", "found"):
            spans = {"document_spans": document_spans(pos)} if how == "arg" else {}
            hidden = lm.model(input_ids=ids, position_ids=pos, **spans).last_hidden_state
            target = shift_labels(batch["labels"], pos)
            loss = chunked_cross_entropy(hidden, lm.lm_head.weight, target, 1024)
            n = (target != -100).sum()
        else:
            loss, n = PackedCausalLM(lm)(ids, batch["labels"], pos)
            assert hasattr(pos, SPANS_ATTR) == (setting == "docwise")
        (loss / n).backward()
        results.append((float(loss), [p.grad.clone() for p in lm.parameters()]))
    masked, g_masked = results[0]
    for docwise, g_docwise in results[1:]:
        assert docwise == pytest.approx(masked, rel=1e-5)
        for a, b in zip(g_masked, g_docwise, strict=True):
            assert torch.allclose(a, b, atol=1e-5)


def test_docwise_model_without_spans_is_plain_sdpa(tiny_model):
    ids = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = _load(tiny_model, "sdpa")(ids).logits
        b = _load(tiny_model, "docwise")(ids).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_packed_logits_match_separate_forward(model):
    docs = _docs(model.config.vocab_size, [11, 6, 23], seed=1)
    ids = torch.cat(docs)[None]
    pos = torch.cat([torch.arange(len(d)) for d in docs])[None]
    with torch.no_grad():
        packed = model(
            ids, attention_mask=block_causal_mask(pos, torch.float32), position_ids=pos
        ).logits[0]
        alone = torch.cat([model(d[None]).logits[0] for d in docs])
    assert torch.allclose(packed, alone, atol=1e-4)


def test_block_mask_is_block_diagonal_and_causal():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0]])
    allowed = block_causal_mask(pos, torch.float32)[0, 0] == 0
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ]
    ).bool()
    assert torch.equal(allowed, expected)


def test_chunked_cross_entropy_matches_full_logits():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 33, 16, generator=g, requires_grad=True)
    weight = torch.randn(500, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 500, (2, 33), generator=g)
    labels[0, :5] = -100
    pos = torch.cat([torch.arange(20), torch.arange(13)]).repeat(2, 1)
    target = shift_labels(labels, pos)
    assert (target[:, 19] == -100).all()  # the next document's first token is no target
    ours = chunked_cross_entropy(hidden, weight, target, chunk=8)
    ours.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    plain = F.cross_entropy(
        (hidden @ weight.T).reshape(-1, 500), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    plain.backward()
    assert torch.allclose(ours, plain, rtol=1e-5)
    assert torch.allclose(grads[0], hidden.grad, atol=1e-5)
    assert torch.allclose(grads[1], weight.grad, atol=1e-5)


def test_chunked_cross_entropy_gradients_scale_freeze_and_autocast():
    """The gradients are taken in forward: backward must scale them by what flows in, skip a
    frozen projection, and under bf16 autocast follow the plain path's bf16 matmuls."""
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(70, 24, generator=g, requires_grad=True)
    weight = torch.randn(300, 24, generator=g, requires_grad=True)
    target = torch.randint(0, 300, (70,), generator=g)

    def grads(loss_fn, scale=1.0):
        hidden.grad = weight.grad = None
        loss = loss_fn()
        (loss * scale).backward()
        return loss.detach(), hidden.grad, weight.grad

    def plain():
        return F.cross_entropy(F.linear(hidden, weight).float(), target, reduction="sum")

    def ours():
        return chunked_cross_entropy(hidden, weight, target, chunk=32)

    loss, gh, gw = grads(ours, scale=2.5)
    ref_loss, ref_gh, ref_gw = grads(plain, scale=2.5)
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    assert torch.allclose(gh, ref_gh, atol=1e-5) and torch.allclose(gw, ref_gw, atol=1e-5)
    weight.requires_grad_(False)
    _, gh, gw = grads(ours)
    assert gw is None and torch.allclose(gh, ref_gh / 2.5, atol=1e-5)
    weight.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, gh, gw = grads(ours)
        ref_loss, ref_gh, ref_gw = grads(plain)
    assert gh.dtype == ref_gh.dtype == torch.float32 and gw.dtype == torch.float32
    assert torch.allclose(loss, ref_loss, rtol=1e-3)
    assert torch.allclose(gh, ref_gh, rtol=2e-2, atol=2e-2)
    assert torch.allclose(gw, ref_gw, rtol=2e-2, atol=2e-2)
    assert not torch.allclose(gw, grads(plain)[2], atol=1e-6)  # autocast did compute in bf16


def test_chunked_cross_entropy_ignores_vocabulary_padding_rows():
    """ColossalAI pads the LM head to a multiple of 64 × tp rows; those rows must not take part
    in the softmax, whatever their values."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(40, 16, generator=g, requires_grad=True)
    weight = torch.randn(100, 16, generator=g, requires_grad=True)
    padding = torch.randn(28, 16, generator=g) * 5
    padded = torch.cat([weight.detach(), padding]).requires_grad_(True)
    target = torch.randint(0, 100, (40,), generator=g)
    ours = chunked_cross_entropy(hidden, padded, target, chunk=16, vocab_size=100)
    ours.backward()
    grad_hidden = hidden.grad.clone()
    hidden.grad = None
    plain = F.cross_entropy(hidden @ weight.T, target, reduction="sum")
    plain.backward()
    assert torch.allclose(ours, plain, rtol=1e-5)
    assert torch.allclose(grad_hidden, hidden.grad, atol=1e-5)
    assert torch.allclose(padded.grad[:100], weight.grad, atol=1e-5)
    assert torch.count_nonzero(padded.grad[100:]) == 0


@pytest.mark.gpu
def test_flash_varlen_matches_sdpa(tiny_model):
    from llamaforge_trainer.packed import flash_attn_available

    if not flash_attn_available():
        pytest.skip("flash-attn is not installed")
    kw = {"torch_dtype": torch.bfloat16}
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa", **kw)
    flash = AutoModelForCausalLM.from_pretrained(
        tiny_model, attn_implementation="flash_attention_2", **kw
    )
    docs = _docs(sdpa.config.vocab_size, [100, 37, 300, 64])
    row = {
        "input_ids": torch.cat(docs).tolist(),
        "labels": torch.cat(docs).tolist(),
        "lengths": [len(d) for d in docs],
    }
    batch = {
        k: v.cuda() if isinstance(v, torch.Tensor) else v
        for k, v in collate_packed([row], flat=True).items()
    }
    with torch.no_grad():
        a, n = PackedCausalLM(sdpa.cuda())(
            batch["input_ids"], batch["labels"], batch["position_ids"]
        )
        b, _ = PackedCausalLM(flash.cuda())(
            batch["input_ids"], batch["labels"], batch["position_ids"]
        )
    assert float(a / n) == pytest.approx(float(b / n), rel=2e-2)


@pytest.mark.gpu
def test_hybrid_adam_matches_adamw():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from colossalai.nn.optimizer import HybridAdam

    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(256, 256, generator=g)
    grads = [torch.randn(256, 256, generator=g) for _ in range(3)]
    params = [torch.nn.Parameter(w0.clone().cuda()), torch.nn.Parameter(w0.clone().cuda())]
    opts = [
        HybridAdam([params[0]], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, adamw_mode=True),
        torch.optim.AdamW([params[1]], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1),
    ]
    for grad in grads:
        for p, opt in zip(params, opts, strict=True):
            p.grad = grad.cuda()
            opt.step()
    assert torch.allclose(params[0], params[1], atol=1e-5)
