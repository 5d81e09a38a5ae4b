#!/usr/bin/env python3
"""Training benchmarks.

(a) Packed rows vs Colossal-LLaMA's padded rows, same documents, same model: effective
    (non-padding) tokens per second. Ours: best-fit-decreasing rows of several documents,
    attention kept inside documents (flash-attn varlen on GPU when installed, else SDPA run per
    document), chunked loss. Theirs: rows padded to max_length with
    ``attention_mask = input_ids != pad`` and the plain loss — for pretraining their splicer's
    rows (95.8 % full in tools/bench/pack.py), for SFT one conversation per row. Runs on CPU
    here with a small LLaMA; with --gpu on the GPU with a bigger one.
(b) --gpu only: a ~1.25B LLaMA (TinyLlama's layers, with Colossal-LLaMA-2's expanded
    69,104-token vocabulary) at sequence 4096 in bf16 through the real Trainer (benchmark
    mode, ddp plugin, HybridAdam): MFU, with the peak from the data sheet. 2 rows × 4
    accumulated micro-batches a step (32k tokens): with one 4k row a step, the optimizer's pass
    over 1.25B fp32 weights and states (~35 GB of memory traffic, ~10 ms) would be ~15 % of it.
(c) The LM head and loss alone, ours against the chunked loss recomputed in backward and the
    plain full-logits loss (see ``bench_loss_head``); on CPU here, and with --gpu at (b)'s size.
(d) --precision: the demo's training configuration (SmolLM2-135M with 8,000 added rows, 4 ×
    256 tokens a step, ddp) through the real Trainer, fp32 against ``precision = "auto"`` in
    one run: tokens/s and the ratio, and what ``auto`` chose on this CPU and why (its bf16
    flags). ``--bf16`` also times forced bf16 autocast, bounded by ``--bf16-limit`` seconds
    (on a CPU without bf16 units it is emulated: one step can take minutes).

(e) --cpu-step: what a CPU step of the demo spends outside the matmuls: torch's default AdamW
    against the fused kernel, and ``cpu_allocator`` ``system`` against ``reuse`` (see
    ``bench_cpu_step``).

    python tools/bench/train.py [--steps 6] [--gpu] [--precision [--bf16]] [--cpu-step]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import cpu_name


def _docs(kind: str, max_length: int, n_tokens: int, seed: int = 0) -> list[np.ndarray]:
    """Document lengths like the real corpora: news paragraphs or SFT conversations."""
    rng = np.random.default_rng(seed)
    docs, total = [], 0
    while total < n_tokens:
        if kind == "pretrain":  # People's Daily with SmolLM2's tokenizer: mean ~170 tokens
            n = int(min(max_length, max(8, rng.lognormal(4.9, 0.8))))
        else:  # SFT: short prompts + answers
            n = int(min(max_length, max(16, rng.lognormal(5.5, 0.7))))
        docs.append(rng.integers(10, 1000, n))
        total += n
    return docs


def _theirs_rows(kind, docs, max_length):
    if kind == "sft":
        return [d for d in docs]  # one conversation per row, padded
    sys.path.insert(0, str(Path(__file__).parent))
    from pack import theirs  # Colossal-LLaMA's splicer re-implementation

    return [np.asarray(r) for r in theirs([d.tolist() for d in docs], max_length)]


def _ours_rows(docs, max_length):
    from llamaforge_datapack.binpack import best_fit_decreasing

    lengths = np.array([len(d) for d in docs])
    return [[docs[i] for i in b] for b in best_fit_decreasing(lengths, max_length)]


def _time_interleaved(step_a, batches_a, step_b, batches_b) -> list[tuple[float, int]]:
    """(seconds, tokens) of A and B, stepping them alternately so that drift in the machine's
    speed hits both alike; the first batch of each is a warm-up."""
    step_a(batches_a[0])
    step_b(batches_b[0])
    totals = [[0.0, 0], [0.0, 0]]
    for a, b in zip(batches_a[1:], batches_b[1:], strict=False):
        for k, (fn, batch) in enumerate(((step_a, a), (step_b, b))):
            start = time.perf_counter()
            tokens = fn(batch)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            totals[k][0] += time.perf_counter() - start
            totals[k][1] += tokens
    return [(t, n) for t, n in totals]


def bench_packed_vs_padded(
    model_kwargs: dict, max_length: int, batch: int, steps: int, device: str, dtype: torch.dtype
) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from llamaforge_datapack import collate_packed
    from llamaforge_trainer.packed import PackedCausalLM, choose_attention

    attention = choose_attention("auto")
    config = LlamaConfig(vocab_size=1024, max_position_embeddings=max_length, **model_kwargs)
    torch.manual_seed(0)
    ours_model = LlamaForCausalLM(copy.deepcopy(config)).to(device, dtype)
    ours_model.config._attn_implementation = attention
    theirs_model = LlamaForCausalLM(copy.deepcopy(config)).to(device, dtype)
    theirs_model.config._attn_implementation = "sdpa"  # each model owns its config
    wrapped = PackedCausalLM(ours_model, loss_chunk=2048)
    n_tokens = 8 * (steps + 1) * batch * max_length  # rows are drawn from a larger pool
    for kind in ("pretrain", "sft"):
        docs = _docs(kind, max_length, n_tokens)
        # Shuffled as a training loader would: best-fit emits the rows of long documents first.
        rng = np.random.default_rng(1)
        ours_rows = _ours_rows(docs, max_length)
        theirs_rows = _theirs_rows(kind, docs, max_length)
        ours_rows = [ours_rows[i] for i in rng.permutation(len(ours_rows))]
        theirs_rows = [theirs_rows[i] for i in rng.permutation(len(theirs_rows))]

        def ours_step(rows):
            data = [
                {
                    "input_ids": np.concatenate(r).tolist(),
                    "labels": np.concatenate(r).tolist(),
                    "lengths": [len(d) for d in r],
                }
                for r in rows
            ]
            b = collate_packed(data, flat=attention == "flash_attention_2")
            b = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
            loss, n = wrapped(b["input_ids"], b["labels"], b["position_ids"])
            (loss / n).backward()
            return sum(len(d) for r in rows for d in r)

        def theirs_step(rows):
            ids = torch.zeros(len(rows), max_length, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for k, r in enumerate(rows):
                ids[k, : len(r)] = torch.as_tensor(r)
                mask[k, : len(r)] = 1
            labels = ids.masked_fill(mask == 0, -100)
            out = theirs_model(
                ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
            )
            out.loss.backward()
            return int(mask.sum())

        def batches(rows):
            return [rows[i : i + batch] for i in range(0, batch * (steps + 1), batch)]

        (t_ours, tok_ours), (t_theirs, tok_theirs) = _time_interleaved(
            ours_step, batches(ours_rows), theirs_step, batches(theirs_rows)
        )
        fill_ours = tok_ours / (steps * batch * max_length)
        fill_theirs = tok_theirs / (steps * batch * max_length)
        print(
            f"[{kind}] ours ({attention}): {tok_ours / t_ours:,.0f} effective tok/s "
            f"(rows {fill_ours:.1%} real tokens) | theirs (padded): "
            f"{tok_theirs / t_theirs:,.0f} effective tok/s (rows {fill_theirs:.1%} real) | "
            f"ratio {(tok_ours / t_ours) / (tok_theirs / t_theirs):.2f}× (target ≥ 1.3×)"
        )


def bench_loss_head(tokens: int, hidden: int, vocab: int, device: str, repeats: int) -> None:
    """(c) The LM head + loss, forward and backward, on ``tokens`` positions: ours (chunked,
    each chunk's gradients taken while its logits exist) against the same chunks checkpointed
    and recomputed in backward (what the trainer did before) and the plain full-logits
    cross-entropy. Matmul work: plain and ours 3 vocabulary-sized matmuls, recompute 4."""
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    from llamaforge_trainer.packed import chunked_cross_entropy

    chunk = 1024
    g = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, hidden, generator=g).to(device).requires_grad_(True)
    w = (torch.randn(vocab, hidden, generator=g) * 0.02).to(device).requires_grad_(True)
    t = torch.randint(0, vocab, (tokens,), generator=g).to(device)

    def plain_loss(a, b, c):
        return F.cross_entropy(F.linear(a, b).float(), c, reduction="sum")

    def recompute():
        parts = [
            checkpoint(plain_loss, h[i : i + chunk], w, t[i : i + chunk], use_reentrant=False)
            for i in range(0, tokens, chunk)
        ]
        return torch.stack(parts).sum()

    runs = {
        "ours": lambda: chunked_cross_entropy(h, w, t, chunk),
        "recompute": recompute,
        "plain": lambda: plain_loss(h, w, t),
    }
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    seconds = {name: [] for name in runs}
    for _ in range(repeats + 1):  # the first round warms up
        for name, fn in runs.items():
            h.grad = w.grad = None
            start = time.perf_counter()
            with autocast:
                loss = fn()
            loss.backward()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
    best = {name: float(np.median(s[1:])) for name, s in seconds.items()}
    print(
        f"[loss head: {tokens} tokens × vocab {vocab:,} × hidden {hidden}, {device}] "
        + " | ".join(f"{n} {best[n] * 1e3:,.0f} ms" for n in runs)
        + f" | ours vs recompute {best['recompute'] / best['ours']:.2f}×, "
        f"vs plain {best['plain'] / best['ours']:.2f}×"
    )


def bench_mfu_1b(steps: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from llamaforge_trainer import StageConfig, TrainConfig
    from llamaforge_trainer.metrics import read_metrics
    from llamaforge_trainer.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = LlamaConfig(
            vocab_size=69104,
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
            max_position_embeddings=4096,
            torch_dtype="bfloat16",
        )
        LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(f"{tmp}/model")
        run = TrainConfig(
            model=f"{tmp}/model",
            output_dir=f"{tmp}/run",
            precision="bf16",
            benchmark=True,
            max_length=4096,
            export=False,
            save_interval=10**6,
            stages=[
                StageConfig(
                    name="bench", data=[], steps=steps, micro_batch_size=2, grad_accum=4, lr=1e-4
                )
            ],
        )
        trainer = Trainer(run)
        trainer.train()
        rows = read_metrics(run.output_dir)[2:]  # skip warm-up steps
        mfu = sum(r["mfu"] for r in rows) / len(rows)
        tps = sum(r["tokens_per_s"] for r in rows) / len(rows)
        print(
            f"[1.25B (vocab 69k), seq 4096, bf16, 32k tokens/step, {trainer.attention}, "
            f"{trainer.result.optimizer}] {tps:,.0f} tok/s, MFU {mfu:.1%} "
            f"(peak: {trainer.peak_source}; target ≥ 50 %)"
        )


def _demo_model(work: Path, rows: int = 8000, untie: bool = False) -> Path:
    """SmolLM2-135M from the asset cache with ``rows`` extra rows (mean-initialised through
    the tokenizer package would need a learned vocabulary; the row count is what costs, so
    the rows are copies here); ``untie``: an output matrix of its own, as freq-out gives."""
    from transformers import AutoModelForCausalLM

    from llamaforge_cli.assets import ensure_asset

    lm = AutoModelForCausalLM.from_pretrained(str(ensure_asset("smollm2-135m")))
    lm.resize_token_embeddings(lm.config.vocab_size + rows, mean_resizing=False)
    if untie:
        lm.config.tie_word_embeddings = False
        lm.lm_head.weight = torch.nn.Parameter(lm.lm_head.weight.detach().clone())
    lm.save_pretrained(str(work / "model"))
    return work / "model"


def bench_precision(steps: int, bf16: bool, bf16_limit: float) -> None:
    """(d): fp32 against precision auto (and forced bf16) on the demo's configuration."""
    from llamaforge_trainer.metrics import cpu_flags, resolve_precision

    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    chosen = resolve_precision("auto", torch.device("cpu"))
    where = f"{cpu_name()}, {torch.get_num_threads()} threads"
    print(f"[precision] {where}; flags {', '.join(flags) or 'none'}; auto → {chosen}")
    with tempfile.TemporaryDirectory() as tmp:
        model = _demo_model(Path(tmp))
        runs = [("fp32", steps), ("auto", steps)] + ([("bf16", 2)] if bf16 else [])
        speeds = {}
        for precision, n in runs:
            if precision == "auto" and chosen == "fp32":
                speeds["auto"] = speeds["fp32"]
                print("  auto: the same run as fp32 on this CPU (no bf16 units)")
                continue
            limit = bf16_limit if precision == "bf16" else None
            speed = _run_apart(model, Path(tmp) / precision, precision, n, limit=limit)
            if speed is None:
                print(f"  {precision}: {n} steps not done after {bf16_limit:.0f} s — stopped")
                continue
            speeds[precision] = speed
            print(f"  {precision}: {speeds[precision]:,.1f} tokens/s")
        for precision in ("auto", "bf16"):
            if precision in speeds:
                print(f"  {precision} / fp32: {speeds[precision] / speeds['fp32']:.2f}×")


def bench_cpu_step(steps: int, rounds: int) -> None:
    """(e): where a CPU training step of the demo (SmolLM2-135M + 16,000 rows, untied, 4 × 256
    tokens, fp32) loses time outside the matmuls. The optimizer: torch's default AdamW on CPU
    (a Python loop over the tensors) against the fused kernel the trainer takes, on the
    model's own parameters, interleaved in this process. The allocator: ``cpu_allocator``
    ``system`` against ``reuse`` through the real Trainer, each in its own process (the
    setting is the process's), in alternating rounds, each keeping its fastest."""
    from transformers import AutoModelForCausalLM

    print(f"[cpu step] {cpu_name()}, {torch.get_num_threads()} threads, fp32")
    with tempfile.TemporaryDirectory() as tmp:
        model = _demo_model(Path(tmp), rows=16000, untie=True)
        lm = AutoModelForCausalLM.from_pretrained(str(model))
        params = [p for p in lm.parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        best = {}
        for fused in (False, True, False, True):
            opt = torch.optim.AdamW(params, lr=1e-5, fused=fused)
            opt.step()  # states allocated
            start = time.perf_counter()
            for _ in range(3):
                opt.step()
            name = "fused" if fused else "loop (default)"
            best[name] = min(best.get(name, 1e9), (time.perf_counter() - start) / 3)
            del opt
        n = sum(p.numel() for p in params) / 1e6
        print(
            f"  AdamW over {n:.0f}M parameters: loop {best['loop (default)']:.3f} s, fused "
            f"{best['fused']:.3f} s a step ({best['loop (default)'] / best['fused']:.1f}×)"
        )
        del lm, params
        speeds: dict[str, float] = {}
        for r in range(rounds):
            for allocator in ("system", "reuse") if r % 2 == 0 else ("reuse", "system"):
                out = Path(tmp) / f"{allocator}-{r}"
                speed = _run_apart(model, out, "fp32", steps, allocator=allocator)
                speeds[allocator] = max(speeds.get(allocator, 0.0), speed)
                print(f"  round {r + 1}, cpu_allocator {allocator}: {speed:,.1f} tokens/s")
        print(f"  reuse / system (fastest of {rounds}): {speeds['reuse'] / speeds['system']:.2f}×")


def _run_apart(
    model: Path,
    out: Path,
    precision: str,
    steps: int,
    allocator: str = "reuse",
    limit: float | None = None,
) -> float | None:
    """Tokens/s of :func:`_tokens_per_s` run in a fresh (spawned) process, or None when it
    has not finished after ``limit`` seconds (then it is killed)."""
    import multiprocessing as mp

    spawn = mp.get_context("spawn")
    queue = spawn.Queue()
    proc = spawn.Process(
        target=_tokens_per_s, args=(model, out, precision, steps, queue, allocator)
    )
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.kill()
        return None
    return queue.get()


def _tokens_per_s(
    model: Path, out: Path, precision: str, steps: int, queue, allocator: str = "reuse"
) -> None:
    from llamaforge_trainer import StageConfig, TrainConfig
    from llamaforge_trainer.metrics import read_metrics
    from llamaforge_trainer.trainer import Trainer

    run = TrainConfig(
        model=str(model),
        output_dir=str(out),
        precision=precision,
        cpu_allocator=allocator,
        benchmark=True,
        max_length=256,
        export=False,
        save_interval=10**6,
        stages=[StageConfig(name="bench", data=[], steps=steps, micro_batch_size=4, lr=1e-4)],
    )
    Trainer(run).train()
    rows = read_metrics(out)[1:] or read_metrics(out)  # the first step warms up
    queue.put(sum(r["tokens"] for r in rows) / sum(r["tokens"] / r["tokens_per_s"] for r in rows))


def main() -> int:
    parser = argparse.ArgumentParser(description="training benchmarks")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--gpu", action="store_true", help="run the GPU benchmarks")
    parser.add_argument("--precision", action="store_true", help="fp32 vs auto, demo config")
    parser.add_argument("--bf16", action="store_true", help="with --precision: forced bf16 too")
    parser.add_argument("--bf16-limit", type=float, default=300.0)
    parser.add_argument(
        "--cpu-step", action="store_true", help="optimizer and allocator, demo config (CPU)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --cpu-step")
    args = parser.parse_args()
    if args.cpu_step:
        bench_cpu_step(args.steps, args.rounds)
        return 0
    if args.precision:
        bench_precision(args.steps, args.bf16, args.bf16_limit)
        return 0
    if args.gpu:
        if not torch.cuda.is_available():
            print("train: --gpu given but no CUDA device; skipped")
            return 0
        bench_packed_vs_padded(
            {
                "hidden_size": 1024,
                "intermediate_size": 2816,
                "num_hidden_layers": 8,
                "num_attention_heads": 16,
                "num_key_value_heads": 4,
            },
            4096,
            4,
            args.steps,
            "cuda",
            torch.bfloat16,
        )
        bench_loss_head(8192, 2048, 69104, "cuda", repeats=5)
        bench_mfu_1b(max(args.steps, 6))
        return 0
    bench_packed_vs_padded(
        {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
        2048,
        2,
        args.steps,
        "cpu",
        torch.float32,
    )
    # SmolLM2's width with the demo's 8,000 added pieces
    bench_loss_head(4096, 576, 57152, "cpu", repeats=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
