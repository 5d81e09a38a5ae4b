"""Running a causal LM over prompts: choice scores with a shared, cached few-shot prefix.

For each subject the tokens all its prompts share (header and shots) are run once; their KV
cache is expanded over a batch of questions, which are right-padded (causal attention: padding
after a question cannot change it), and only the question tokens are computed. Both
multiple-choice metrics come from the logits at the last prompt token, since every answer
continuation (" A".." D" or "A".."D") is a single token for LLaMA-family tokenizers; a
multi-token continuation is refused with a clear error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llamaforge_eval.errors import EvalError
from llamaforge_eval.windows import windows, with_start


@dataclass(frozen=True)
class ChoiceScores:
    first_token: list[float]  # logit of each choice's first token
    loglik: list[float]  # log p(continuation | prompt)


def load_model(model_dir: str | Path, *, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer) from an HF dir on ``device`` in ``dtype`` (see
    :mod:`llamaforge_eval.device`: ``auto`` picks the GPU and the checkpoint's half precision
    where it is native); a dir without a tokenizer is an error."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llamaforge_eval.device import resolve_device, resolve_dtype

    model_dir = Path(model_dir)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, model_dir, device)
    if not (model_dir / "config.json").is_file():
        raise EvalError(f"{model_dir}: not an HF model dir (no config.json)")
    if not any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        raise EvalError(
            f"{model_dir}: no tokenizer (tokenizer.json or tokenizer.model) in the model dir"
        )
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = (
        AutoModelForCausalLM.from_pretrained(
            str(model_dir), torch_dtype=getattr(torch, dtype), attn_implementation="sdpa"
        )
        .to(device)
        .eval()
    )
    return model, tok


class PromptRunner:
    """Tokenisation and choice scoring shared by every backend.

    A backend provides ``max_length``, ``tok``, ``_next_token_scores``, ``generate`` and
    ``document_nll``; prompts are tokenised here, the same way for all of them.
    """

    tok = None
    max_length: int = 2048

    def encode(self, text: str, *, bos: bool = True) -> list[int]:
        ids = self.tok(text, add_special_tokens=False).input_ids
        if bos and self.tok.bos_token_id is not None and self._adds_bos():
            ids = [self.tok.bos_token_id, *ids]
        return ids

    def document_ids(self, text: str) -> list[int]:
        """A held-out document's ids as every backend scores them: after the start token
        (:mod:`llamaforge_eval.windows`)."""
        return with_start(self.tok, self.tok(text, add_special_tokens=False).input_ids)[0]

    def _adds_bos(self) -> bool:
        probe = self.tok("a").input_ids
        return bool(probe) and probe[0] == self.tok.bos_token_id

    def choice_scores(
        self, prefix: str, questions: list[str], continuations: list[str]
    ) -> list[ChoiceScores]:
        """Scores of each continuation after ``prefix + question``, for every question."""
        cont_ids = [self._continuation_ids(prefix + questions[0], c) for c in continuations]
        if any(len(c) != 1 for c in cont_ids):
            raise EvalError("multi-token answer continuations are not supported yet")
        full = [self.encode(prefix + q) for q in questions]
        return self._next_token_scores(full, [c[0] for c in cont_ids])

    def _next_token_scores(self, prompts: list[list[int]], tokens: list[int]) -> list[ChoiceScores]:
        raise NotImplementedError

    def _continuation_ids(self, context: str, cont: str) -> list[int]:
        ctx = self.encode(context)
        both = self.encode(context + cont)
        if both[: len(ctx)] == ctx:
            return both[len(ctx) :]
        return self.tok(cont, add_special_tokens=False).input_ids


class Runner(PromptRunner):
    """Scores prompts with a transformers model; ``batch_size`` questions per forward pass."""

    def __init__(
        self, model, tokenizer, *, batch_size: int | None = 8, max_length: int | None = None
    ):
        # batch_size None: "auto" (see _auto_batch)
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def prefix_cache(self, prefix_ids: list[int]):
        """The KV cache of the shared prefix. Only the decoder runs: nobody reads the prefix's
        logits, so the output layer is skipped there too."""
        from transformers import DynamicCache

        ids = torch.tensor([prefix_ids], device=self.device)
        run = self._decoder() or self.model
        return run(input_ids=ids, use_cache=True, past_key_values=DynamicCache()).past_key_values

    def _decoder(self):
        """The model's decoder (hidden states, no output layer), or None for another shape."""
        has_head = self.model.get_output_embeddings() is not None
        return self.model.get_decoder() if has_head and hasattr(self.model, "get_decoder") else None

    @torch.no_grad()
    def last_logits(self, prefix_ids: list[int], suffixes: list[list[int]]) -> torch.Tensor:
        """Logits ``[n, vocab]`` after each ``prefix + suffix`` (prefix computed once).

        Suffixes are batched longest first (little padding; rows come back in the given
        order), and only each row's last position goes through the output layer — the
        vocabulary projection of every other position would be thrown away."""
        cache = self.prefix_cache(prefix_ids) if prefix_ids else None
        legacy = cache.to_legacy_cache() if cache is not None else None
        order = sorted(range(len(suffixes)), key=lambda i: -len(suffixes[i]))
        rows: list[torch.Tensor] = [torch.empty(0)] * len(suffixes)
        size = self.batch_size or self._auto_batch(len(prefix_ids), len(suffixes[order[0]]))
        lo = 0
        while lo < len(order):
            picked = order[lo : lo + size]
            try:
                logits = self._batch_logits(len(prefix_ids), legacy, [suffixes[i] for i in picked])
            except torch.cuda.OutOfMemoryError:
                if self.batch_size or size == 1:
                    raise
                size //= 2  # auto: the longest rows come first, so a size that fits now fits
                torch.cuda.empty_cache()
                continue
            for k, i in enumerate(picked):
                rows[i] = logits[k]
            lo += len(picked)
        return torch.stack(rows)

    def _batch_logits(self, p: int, legacy, part: list[list[int]]) -> torch.Tensor:
        """Logits at the last token of each of ``part`` (right-padded), after the cached
        ``p``-token prefix."""
        from transformers import DynamicCache

        width = max(len(s) for s in part)
        ids = torch.full((len(part), width), self.tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(part), p + width), dtype=torch.long)
        mask[:, :p] = 1
        for k, s in enumerate(part):
            ids[k, : len(s)] = torch.tensor(s)
            mask[k, p : p + len(s)] = 1
        kwargs = {}
        if legacy is not None:
            kwargs["past_key_values"] = DynamicCache.from_legacy_cache(
                tuple(
                    (k.expand(len(part), -1, -1, -1), v.expand(len(part), -1, -1, -1))
                    for k, v in legacy
                )
            )
        pos = torch.arange(p, p + width).expand(len(part), -1)
        last = torch.tensor([len(s) - 1 for s in part], device=self.device)
        return self._logits_at(
            last,
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=pos.to(self.device),
            use_cache=False,
            **kwargs,
        )

    def _auto_batch(self, prefix: int, longest: int) -> int:
        """``--batch-size auto``: on a GPU start at 128 rows and halve on out-of-memory; on the
        CPU (where running out of memory kills the process) the rows whose KV cache and
        activations fit a quarter of the available memory, at most 64."""
        if self.device.type == "cuda":
            return 128
        c = self.model.config
        elem = next(self.model.parameters()).element_size()
        heads = c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", heads)
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        kv = (prefix + longest) * c.num_hidden_layers * 2 * kv_heads * head_dim * elem
        inter = getattr(c, "intermediate_size", 4 * c.hidden_size)
        act = longest * (8 * c.hidden_size + 3 * inter + heads * (prefix + longest)) * elem
        return max(1, min(64, int(0.25 * _available_memory() // max(1, kv + act))))

    def _logits_at(self, last: torch.Tensor, **inputs) -> torch.Tensor:
        """fp32 logits ``[batch, vocab]`` at position ``last[b]`` of each row: the decoder's
        hidden states there, then the output layer on those rows alone."""
        rows = torch.arange(len(last), device=last.device)
        decoder = self._decoder()
        if decoder is None:  # not a plain decoder + head: full logits
            return self.model(**inputs).logits[rows, last].float().cpu()
        hidden = decoder(**inputs).last_hidden_state[rows, last]
        return self.model.get_output_embeddings()(hidden).float().cpu()

    def _next_token_scores(self, prompts: list[list[int]], tokens: list[int]) -> list[ChoiceScores]:
        # Cache exactly the tokens every prompt shares. Encoding the prefix alone would not do:
        # a tokenizer may merge across its end (e.g. "\n\n" + "What" -> "\n", "\nWhat").
        common = min(len(ids) for ids in prompts) - 1
        for ids in prompts[1:]:
            common = next((k for k in range(common) if ids[k] != prompts[0][k]), common)
        suffixes = [ids[common:] for ids in prompts]
        logits = self.last_logits(prompts[0][:common], suffixes)
        logp = F.log_softmax(logits, dim=-1)
        return [
            ChoiceScores([float(logits[i, t]) for t in tokens], [float(logp[i, t]) for t in tokens])
            for i in range(len(prompts))
        ]

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy continuations, cut at the first stop string."""
        outs = []
        for prompt in prompts:
            ids = torch.tensor([self.encode(prompt)], device=self.device)
            gen = self.model.generate(
                ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id,
            )
            text = self.tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
            cut = min([text.find(s) for s in stop if s in text], default=len(text))
            outs.append(text[:cut])
        return outs

    @torch.no_grad()
    def document_nll(self, texts: list[str]) -> list[tuple[float, int]]:
        """Each text's negative log-likelihood (nats) of its tokens, and how many were scored.

        Each text is scored on its own, after the start token and in windows of the model's
        length that overlap by one token (:mod:`llamaforge_eval.windows`): every token is
        scored once, the first one too.
        """
        out = []
        for text in texts:
            ids = self.document_ids(text)
            total, count = 0.0, 0
            for lo, hi in windows(len(ids), self.max_length):
                chunk = torch.tensor([ids[lo:hi]], device=self.device)
                logits = self.model(input_ids=chunk).logits[0].float()
                targets = chunk[0, 1:]
                total += float(F.cross_entropy(logits[:-1], targets, reduction="sum"))
                count += targets.numel()
            out.append((total, count))
        if not any(count for _, count in out):
            raise EvalError("no tokens to score")
        return out


def bits(nats: float) -> float:
    return nats / math.log(2)


def _available_memory() -> int:
    """Bytes the system can still give (MemAvailable), or 4 GiB where that is unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30
