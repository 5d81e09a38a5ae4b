"""Reuse of computed prompt KV across requests (the transformers backend).

Chat requests to one server mostly begin with the same tokens: the chat template's system
prompt, a shared instruction, earlier turns of a conversation. The store keeps the KV cache of
recently prefilled prompts (real tokens only, positions 0..n-1) and answers, for a new prompt,
the longest prefix it shares with one of them; only the rest of the prompt is then computed.
Entries are evicted least-recently-used once their tokens exceed a budget.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (key, value), each [1, H, n, D]


@dataclass(frozen=True)
class Match:
    key: tuple[int, ...]
    length: int  # tokens of the prompt covered by the entry's cache


def common_prefix(a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixStore:
    """LRU store of prompt KV caches, bounded by ``max_tokens`` cached tokens in all."""

    def __init__(self, *, max_tokens: int = 4096, min_match: int = 16):
        self.max_tokens, self.min_match = max_tokens, min_match
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prompt: list[int]) -> bool:
        return tuple(prompt) in self._entries

    def match(self, prompt: list[int]) -> Match | None:
        """The longest stored prefix of ``prompt`` (at least ``min_match`` tokens, and at least
        one prompt token left to compute — the last one's logits are needed)."""
        best: Match | None = None
        for key in self._entries:
            n = min(common_prefix(key, prompt), len(prompt) - 1)
            if n >= self.min_match and (best is None or n > best.length):
                best = Match(key, n)
        return best

    def get(self, key: tuple[int, ...], length: int) -> KV:
        """The first ``length`` positions of an entry's cache (marks it recently used)."""
        self._entries.move_to_end(key)
        return [(k[:, :, :length], v[:, :, :length]) for k, v in self._entries[key]]

    def add(self, prompt: list[int], kv: KV) -> None:
        key = tuple(prompt)
        if key in self._entries or len(key) > self.max_tokens or len(key) < self.min_match:
            return
        self._entries[key] = kv
        self._tokens += len(key)
        while self._tokens > self.max_tokens:
            old, _ = self._entries.popitem(last=False)
            self._tokens -= len(old)
