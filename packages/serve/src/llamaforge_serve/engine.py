"""Continuous batching: requests join and leave between decode steps.

``StreamingEngine`` holds what every backend shares (the bounded queue, the engine thread, and
turning tokens into streamed text with stop strings); ``Engine`` is the transformers backend,
``llamaforge_serve.vllm_engine.VllmEngine`` the vLLM one.

In ``Engine`` one background thread owns the model. New requests are prefilled together, then
their KV cache is merged into the running batch (caches are left-padded to a common length,
with an attention mask that hides the padding); every decode step is one forward pass for all
active sequences. A finished or cancelled sequence leaves the batch before the next step.
Tokens are handed to each request's callback as they are produced (streaming).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)


@dataclass
class Sampling:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class Sequence:
    """One generation; ``emit(text_delta, finish_reason)`` is called from the engine thread."""

    prompt_ids: list[int]
    sampling: Sampling
    emit: Callable[[str, str | None, int], None]
    generated: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0  # characters of text already handed out
    cancelled: bool = False
    finished: bool = False
    generator: torch.Generator | None = None
    enqueued: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None


class StreamingEngine:
    """What every backend shares: the queue, the engine thread, and turning tokens into text.

    ``submit`` from any thread; a subclass's ``_step`` admits waiting sequences and advances
    the running ones, handing each new token to ``_accept``, which decides what text is
    certain, applies stop strings, EOS and ``max_tokens``, and calls the sequence's ``emit``.
    """

    def __init__(
        self,
        tokenizer,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        eos_ids: list[int] | None = None,
    ):
        self.tok = tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.eos = set(eos_ids or [tokenizer.eos_token_id])
        self.pending: queue.Queue[Sequence] = queue.Queue()
        self.active: list[Sequence] = []
        self.stats = {
            "generated_tokens": 0,
            "cancelled": 0,
            "finished": 0,
            "steps": 0,
            "batch_tokens": 0,
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llamaforge-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- API ------------------------------------------------------------------------------------
    def load(self) -> int:
        """Sequences waiting or running (what the queue bound applies to)."""
        return self.pending.qsize() + len(self.active)

    def submit(self, seq: Sequence) -> bool:
        """Queue ``seq``; False when the engine is full (the caller answers 429)."""
        if self.load() >= self.max_queue:
            return False
        self.pending.put(seq)
        return True

    def eos_list(self) -> list[int]:
        """The token ids that end a generation."""
        return sorted(self.eos)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # -- the loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._step():
                    time.sleep(0.002)
            except Exception:  # noqa: BLE001 - a bug must not kill the server thread silently
                log.exception("engine step failed; failing the active requests")
                for seq in self.active:
                    seq.finished = True
                    seq.emit("", "error", 0)
                self.active = []
                self._reset()

    def _step(self) -> bool:
        """Admit and advance; False when there was nothing to do."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Forget backend state after a failed step."""

    def _take_pending(self) -> list[Sequence]:
        """Waiting sequences that fit in the batch; cancelled ones are counted and dropped."""
        batch: list[Sequence] = []
        while len(self.active) + len(batch) < self.max_batch:
            try:
                seq = self.pending.get_nowait()
            except queue.Empty:
                break
            if seq.cancelled:
                self.stats["cancelled"] += 1
                continue
            batch.append(seq)
        return batch

    def _retire(self) -> list[int]:
        """Count finished / cancelled sequences; the indices of the ones that go on."""
        keep = [i for i, s in enumerate(self.active) if not (s.finished or s.cancelled)]
        for s in self.active:
            if s.cancelled and not s.finished:
                self.stats["cancelled"] += 1
            elif s.finished:
                self.stats["finished"] += 1
        return keep

    def _accept(self, seq: Sequence, token: int) -> None:
        """Record ``token`` and emit the text that is now certain.

        Text that could be the start of a stop string, or half of a character, is held back
        until the next token decides.
        """
        if seq.first_token_at is None:
            seq.first_token_at = time.perf_counter()
        if token in self.eos:
            seq.finished = True
            seq.emit(seq.text[seq.emitted :], "stop", 0)
            return
        seq.generated.append(token)
        self.stats["generated_tokens"] += 1
        seq.text = self.tok.decode(seq.generated, skip_special_tokens=True)
        stops = [st for st in seq.sampling.stop if st]
        hits = [seq.text.find(st) for st in stops if st in seq.text]
        if hits:
            seq.finished = True
            seq.emit(seq.text[seq.emitted : min(hits)], "stop", 1)
            return
        if len(seq.generated) >= seq.sampling.max_tokens:
            seq.finished = True
            seq.emit(seq.text[seq.emitted :].rstrip("\ufffd"), "length", 1)
            return
        safe = len(seq.text.rstrip("\ufffd"))
        for st in stops:
            for k in range(min(len(st) - 1, safe), 0, -1):
                if seq.text[:safe].endswith(st[:k]):
                    safe = min(safe, len(seq.text) - k)
                    break
        safe = max(safe, seq.emitted)
        seq.emit(seq.text[seq.emitted : safe], None, 1)
        seq.emitted = safe


class Engine(StreamingEngine):
    """Continuous batching on a transformers model (CPU or GPU)."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        eos_ids: list[int] | None = None,
    ):
        super().__init__(tokenizer, max_batch=max_batch, max_queue=max_queue, eos_ids=eos_ids)
        self.model = model
        self.device = next(model.parameters()).device
        self.cache = None  # DynamicCache for the active batch, left-padded
        self.mask: torch.Tensor | None = None  # [B, L] 1 = real token
        self.positions: torch.Tensor | None = None  # next position per row
        self.last: torch.Tensor | None = None  # last token per row [B, 1]
        self.start()

    def _step(self) -> bool:
        self._admit()
        self._drop_finished()
        if not self.active:
            return False
        self._decode_step()
        return True

    def _reset(self) -> None:
        self.cache = None

    @torch.no_grad()
    def _admit(self) -> None:
        """Prefill every waiting request that fits, in one left-padded forward pass."""
        from transformers import DynamicCache

        batch = self._take_pending()
        if not batch:
            return
        for seq in batch:
            if seq.sampling.seed is not None and seq.generator is None:
                seq.generator = torch.Generator().manual_seed(seq.sampling.seed)
        width = max(len(s.prompt_ids) for s in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for k, s in enumerate(batch):
            ids[k, width - len(s.prompt_ids) :] = torch.tensor(s.prompt_ids)
            mask[k, width - len(s.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=DynamicCache(),
            use_cache=True,
        )
        tokens = [self._sample(out.logits[k, -1], s) for k, s in enumerate(batch)]
        lengths = torch.tensor([len(s.prompt_ids) for s in batch], device=self.device)
        self._merge(batch, out.past_key_values, mask, lengths, tokens)
        first = len(self.active) - len(batch)
        for k in range(len(batch)):
            self._accept(self.active[first + k], tokens[k])

    def _merge(
        self,
        seqs: list[Sequence],
        cache,
        mask: torch.Tensor,
        lengths: torch.Tensor,
        tokens: list[int],
    ) -> None:
        """Append prefilled rows (their own left-padded cache) to the running batch."""
        from transformers import DynamicCache

        last = torch.tensor(tokens, device=self.device)[:, None]
        if self.cache is None or not self.active:
            self.cache, self.mask, self.positions, self.last = cache, mask, lengths, last
            self.active = list(seqs)
            return
        width = max(self.mask.shape[1], mask.shape[1])
        merged = DynamicCache()
        for layer in range(len(self.cache.key_cache)):
            k = torch.cat(
                [
                    _pad_left(self.cache.key_cache[layer], width),
                    _pad_left(cache.key_cache[layer], width),
                ]
            )
            v = torch.cat(
                [
                    _pad_left(self.cache.value_cache[layer], width),
                    _pad_left(cache.value_cache[layer], width),
                ]
            )
            merged.update(k, v, layer)
        self.cache = merged
        self.mask = torch.cat([_pad_left_mask(self.mask, width), _pad_left_mask(mask, width)])
        self.positions = torch.cat([self.positions, lengths])
        self.last = torch.cat([self.last, last])
        self.active.extend(seqs)

    @torch.no_grad()
    def _decode_step(self) -> None:
        batch = len(self.active)
        mask = torch.cat([self.mask, self.mask.new_ones(batch, 1)], dim=1)
        out = self.model(
            input_ids=self.last,
            attention_mask=mask,
            position_ids=self.positions[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache, self.mask = out.past_key_values, mask
        self.positions = self.positions + 1
        self.stats["steps"] += 1
        self.stats["batch_tokens"] += batch
        tokens = [self._sample(out.logits[i, -1], seq) for i, seq in enumerate(self.active)]
        self.last = torch.tensor(tokens, device=self.device)[:, None]
        for seq, token in zip(self.active, tokens, strict=True):
            self._accept(seq, token)

    def _drop_finished(self) -> None:
        keep = self._retire()
        if len(keep) == len(self.active):
            return
        if not keep:
            self.active, self.cache, self.mask = [], None, None
            return
        idx = torch.tensor(keep, device=self.device)
        for layer in range(len(self.cache.key_cache)):
            self.cache.key_cache[layer] = self.cache.key_cache[layer][idx]
            self.cache.value_cache[layer] = self.cache.value_cache[layer][idx]
        self.mask, self.positions, self.last = self.mask[idx], self.positions[idx], self.last[idx]
        self.active = [self.active[i] for i in keep]
        # Trim padding columns no row needs any more.
        used = int(self.mask.sum(0).nonzero().min()) if self.mask.numel() else 0
        if used:
            self.mask = self.mask[:, used:]
            for layer in range(len(self.cache.key_cache)):
                self.cache.key_cache[layer] = self.cache.key_cache[layer][:, :, used:]
                self.cache.value_cache[layer] = self.cache.value_cache[layer][:, :, used:]

    def _sample(self, logits: torch.Tensor, seq: Sequence) -> int:
        s = seq.sampling
        if s.temperature <= 0:
            return int(logits.argmax())
        logits = logits.float().cpu()  # the request's generator lives on the CPU
        logits = logits / s.temperature
        if s.top_k > 0:
            kth = torch.topk(logits, min(s.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if s.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, 0) - sorted_p < s.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
            probs = probs / probs.sum()
        return int(torch.multinomial(probs, 1, generator=seq.generator))


def _pad_left(t: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - t.shape[2]
    if missing <= 0:
        return t
    pad = t.new_zeros(t.shape[0], t.shape[1], missing, t.shape[3])
    return torch.cat([pad, t], dim=2)


def _pad_left_mask(m: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - m.shape[1]
    return m if missing <= 0 else torch.cat([m.new_zeros(m.shape[0], missing), m], dim=1)
