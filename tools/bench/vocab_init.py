#!/usr/bin/env python3
"""Benchmark: embedding initialisation for a vocabulary expansion, ours vs Colossal-LLaMA's loop.

A synthetic LLaMA-2-7B-shaped model (embed_tokens and lm_head 32,000 × 4096, bf16, random) is
expanded to 69,104 rows with the real LLaMA-2 tokenizer plus jieba words (what Colossal-LLaMA-2
did). Ours is `llamaforge_tokenizer.embeddings`. Theirs is a faithful re-implementation of
Colossal-LLaMA's `init_model.py` on CPU: fp32 matrices (from_pretrained's default dtype), and for
each new token: tokenize with the old slow tokenizer, mean the rows, `np.concatenate` one row
onto the growing matrix — a full copy per token, so quadratic. Theirs runs on a sample of tokens
and is extrapolated (per-token cost grows linearly with the rows copied; the extrapolation scales
the measured mean by the average row count over the whole run). Each side runs in its own process
so peak RSS is its own.

    python tools/bench/vocab_init.py [--sample 60] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OLD_ROWS, DIM, TARGET_ROWS = 32000, 4096, 69104


def build_fixture(work: Path) -> tuple[Path, Path]:
    """Write the synthetic model dir and the 69,104-piece tokenizer dir; return both."""
    import torch
    from safetensors.torch import save_file

    from llamaforge_cli.assets import ensure_asset
    from llamaforge_tokenizer import expand_tokenizer, write_pieces

    base = ensure_asset("llama2-tokenizer")
    model = work / "model"
    model.mkdir()
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "model.embed_tokens.weight": (torch.randn(OLD_ROWS, DIM, generator=gen) * 0.02).bfloat16(),
        "lm_head.weight": (torch.randn(OLD_ROWS, DIM, generator=gen) * 0.02).bfloat16(),
        "model.norm.weight": torch.ones(DIM, dtype=torch.bfloat16),
    }
    save_file(tensors, str(model / "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": OLD_ROWS,
        "hidden_size": DIM,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    (model / "config.json").write_text(json.dumps(config))
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "special")):
            shutil.copyfile(f, model / f.name)
    # The tokenizer: LLaMA-2 + jieba words of up to 4 characters, through the public API.
    # expand_tokenizer pads the vocabulary to a multiple of pad_to, so pad_to = TARGET_ROWS
    # makes any real size up to it exactly TARGET_ROWS; the word count is adjusted until the
    # real pieces (words and the intermediates they need) come within 256 of it.
    words = [
        ln.split()[0]
        for ln in (ensure_asset("jieba-dict") / "dict.txt").read_text(encoding="utf-8").splitlines()
        if len(ln.split()[0]) <= 4
    ]
    tok, count = work / "tokenizer", TARGET_ROWS - OLD_ROWS
    for _ in range(8):
        write_pieces(work / "pieces.jsonl", [{"piece": w} for w in words[:count]])
        report = expand_tokenizer(
            base, work / "pieces.jsonl", tok, pad_to=TARGET_ROWS, overwrite=True
        )
        real = report.new_size - report.reserved
        if TARGET_ROWS - 256 <= real <= TARGET_ROWS:
            break
        count += (TARGET_ROWS - real) // 2 if real < TARGET_ROWS else TARGET_ROWS - real - 16
    return model, tok


# Peak RSS from the kernel's VmHWM: getrusage's ru_maxrss survives exec() on Linux and would
# report the parent's peak at fork time instead of the child's own.
PEAK = """
def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
"""

OURS = (
    PEAK
    + """
import json, sys, time
from pathlib import Path
from llamaforge_tokenizer.embeddings import init_model
t = time.perf_counter()
report = init_model(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - t, "tokens": report.new_rows - report.old_rows,
                  "peak_rss": peak_rss()}))
"""
)

THEIRS = (
    PEAK
    + """
import json, sys, time
import numpy as np, torch
from pathlib import Path
from safetensors import safe_open
from transformers import LlamaTokenizer
model, tok, sample = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
source_tokenizer = LlamaTokenizer.from_pretrained(str(model), legacy=True)
target_tokenizer = LlamaTokenizer.from_pretrained(str(tok), legacy=True)
with safe_open(str(model / "model.safetensors"), "pt") as f:  # from_pretrained: fp32
    source_input_embeddings = f.get_tensor("model.embed_tokens.weight").float().numpy()
    source_output_embeddings = f.get_tensor("lm_head.weight").float().numpy()
source_vocab_size, target_vocab_size = len(source_tokenizer), len(target_tokenizer)
target_inverted_vocab = {v: k for k, v in target_tokenizer.get_vocab().items()}
target_input_embeddings = np.copy(source_input_embeddings)
target_output_embeddings = np.copy(source_output_embeddings)
t = time.perf_counter()
done = 0
for i in range(source_vocab_size, min(target_vocab_size, source_vocab_size + sample)):
    token = target_inverted_vocab[i]
    indices = source_tokenizer.convert_tokens_to_ids(source_tokenizer.tokenize(token))
    indices = torch.LongTensor(indices)
    input_embedding = torch.from_numpy(source_input_embeddings)[indices].mean(dim=0)
    output_embedding = torch.from_numpy(source_output_embeddings)[indices].mean(dim=0)
    target_input_embeddings = np.concatenate(
        [target_input_embeddings, input_embedding.unsqueeze(0).numpy()], axis=0)
    target_output_embeddings = np.concatenate(
        [target_output_embeddings, output_embedding.unsqueeze(0).numpy()], axis=0)
    done += 1
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "sampled": done, "peak_rss": peak_rss()}))
"""
)


def _run(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description="vocab init benchmark (CPU)")
    parser.add_argument("--sample", type=int, default=60, help="tokens to time for theirs")
    parser.add_argument("--keep", type=Path, help="keep the work dir here")
    parser.add_argument("--gpu", action="store_true", help="(CPU benchmark: nothing to do)")
    args = parser.parse_args()
    if args.gpu:
        print("vocab_init: CPU-only benchmark; nothing to run on the GPU")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-vocab-init-"))
    try:
        print("building the synthetic 7B-shaped model and the 69,104-piece tokenizer ...")
        model, tok = build_fixture(work)
        ours = _run(OURS, str(model), str(tok), str(work / "out"))
        theirs = _run(THEIRS, str(model), str(tok), str(args.sample))
    finally:
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.move(str(work), str(args.keep))
        else:
            shutil.rmtree(work, ignore_errors=True)
    new_tokens = ours["tokens"]
    avg_rows = OLD_ROWS + new_tokens / 2  # rows copied per step, averaged over the full run
    start_rows = OLD_ROWS + theirs["sampled"] / 2
    theirs_total = theirs["seconds"] / theirs["sampled"] * new_tokens * avg_rows / start_rows
    matrices = 2 * TARGET_ROWS * DIM * 2  # the two expanded bf16 matrices, bytes
    gib = 2**30
    print(f"new tokens: {new_tokens:,} ({OLD_ROWS:,} → {OLD_ROWS + new_tokens:,} rows, d={DIM})")
    print(f"ours:   {ours['seconds']:.1f} s, peak RSS {ours['peak_rss'] / gib:.2f} GiB")
    print(
        f"theirs: {theirs['seconds']:.1f} s for {theirs['sampled']} tokens → extrapolated "
        f"{theirs_total:.0f} s for all, peak RSS {theirs['peak_rss'] / gib:.2f} GiB "
        f"(embedding part only; their script also loads the whole model)"
    )
    print(f"speed-up: {theirs_total / ours['seconds']:.0f}× (target ≥ 50×)")
    print(
        f"our peak RSS / two expanded matrices ({matrices / gib:.2f} GiB): "
        f"{ours['peak_rss'] / matrices:.2f}× (target ≤ 2×)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
