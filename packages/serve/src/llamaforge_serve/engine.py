"""The transformers backend: continuous batching, requests join and leave between decode steps.

What all backends share (queue, thread, tokens to text) is ``llamaforge_serve.streaming``.
Prompt prefixes computed for earlier requests are reused (``llamaforge_serve.prefix_cache``).

One background thread owns the model. New requests are prefilled together, then
their KV cache is merged into the running batch (caches are left-padded to a common length,
with an attention mask that hides the padding); every decode step is one forward pass for all
active sequences. A finished or cancelled sequence leaves the batch before the next step.
Tokens are handed to each request's callback as they are produced (streaming).
"""

from __future__ import annotations

import torch

from llamaforge_serve.prefix_cache import PrefixStore
from llamaforge_serve.streaming import Sampling, Sequence, StreamingEngine

__all__ = ["Engine", "Sampling", "Sequence", "StreamingEngine"]


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
        prefix_cache_tokens: int = 4096,
    ):
        super().__init__(tokenizer, max_batch=max_batch, max_queue=max_queue, eos_ids=eos_ids)
        self.model = model
        self.device = next(model.parameters()).device
        self.prefixes = PrefixStore(max_tokens=prefix_cache_tokens) if prefix_cache_tokens else None
        self.stats.update(prefix_hits=0, prefix_tokens_reused=0)
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
        """Prefill every waiting request that fits: one left-padded forward pass per shared
        cached prefix (most often a single pass)."""
        batch = self._take_pending()
        if not batch:
            return
        for seq in list(batch):
            if seq.sampling.seed is not None and seq.generator is None:
                try:
                    seq.generator = torch.Generator().manual_seed(seq.sampling.seed)
                except (RuntimeError, OverflowError, ValueError) as exc:
                    self._fail(seq, exc)
                    batch.remove(seq)
        groups: dict[tuple[int, ...] | None, list[tuple[Sequence, int]]] = {}
        for seq in batch:
            match = self.prefixes.match(seq.prompt_ids) if self.prefixes is not None else None
            key, length = (match.key, match.length) if match else (None, 0)
            groups.setdefault(key, []).append((seq, length))
        for key, members in groups.items():
            seqs = [s for s, _ in members]
            try:
                self._prefill(seqs, key, min(n for _, n in members))
            except Exception as exc:  # noqa: BLE001 - this group fails, the running batch goes on
                for seq in seqs:
                    if seq not in self.active:
                        self._fail(seq, exc)

    def _prefill(self, seqs: list[Sequence], key: tuple[int, ...] | None, reused: int) -> None:
        """Compute ``seqs``' prompts after their first ``reused`` tokens (cached under
        ``key``), sample each one's first token and add them to the running batch."""
        from transformers import DynamicCache

        n = len(seqs)
        rest = [s.prompt_ids[reused:] for s in seqs]
        width = max(len(r) for r in rest)
        ids = torch.zeros(n, width, dtype=torch.long)
        mask = torch.zeros(n, width, dtype=torch.long)
        for k, r in enumerate(rest):
            ids[k, width - len(r) :] = torch.tensor(r)
            mask[k, width - len(r) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        past = DynamicCache()
        if key is not None:
            for layer, (k, v) in enumerate(self.prefixes.get(key, reused)):
                past.update(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1), layer)
            self.stats["prefix_hits"] += n
            self.stats["prefix_tokens_reused"] += n * reused
        full = torch.cat([mask.new_ones(n, reused), mask], dim=1)
        out = self.model(
            input_ids=ids,
            attention_mask=full,
            position_ids=reused + (mask.cumsum(1) - 1).clamp(min=0),
            past_key_values=past,
            use_cache=True,
        )
        tokens = [self._sample_or_fail(out.logits[k, -1], s) for k, s in enumerate(seqs)]
        self._remember(seqs, out.past_key_values, full)
        lengths = torch.tensor([len(s.prompt_ids) for s in seqs], device=self.device)
        self._merge(seqs, out.past_key_values, full, lengths, tokens)
        first = len(self.active) - n
        for k in range(n):
            if not self.active[first + k].finished:
                self._accept(self.active[first + k], tokens[k])

    def _remember(self, seqs: list[Sequence], cache, mask: torch.Tensor) -> None:
        """Store each new prompt's KV (its real tokens only) for later requests."""
        if self.prefixes is None:
            return
        for row, seq in enumerate(seqs):
            if len(seq.prompt_ids) < self.prefixes.min_match or seq.prompt_ids in self.prefixes:
                continue
            cols = mask[row].nonzero().squeeze(1)
            kv = [
                (k[row : row + 1].index_select(2, cols), v[row : row + 1].index_select(2, cols))
                for k, v in zip(cache.key_cache, cache.value_cache, strict=True)
            ]
            self.prefixes.add(seq.prompt_ids, kv)

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
        tokens = [self._sample_or_fail(out.logits[i, -1], s) for i, s in enumerate(self.active)]
        self.last = torch.tensor(tokens, device=self.device)[:, None]
        for seq, token in zip(self.active, tokens, strict=True):
            if not seq.finished:
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

    def _sample_or_fail(self, logits: torch.Tensor, seq: Sequence) -> int:
        """``seq``'s next token; a request whose sampling fails ends alone (its row gets a
        placeholder token and leaves the batch before the next step)."""
        try:
            return self._sample(logits, seq)
        except (RuntimeError, ValueError) as exc:
            self._fail(seq, exc)
            return 0

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
