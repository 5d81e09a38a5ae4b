"""What every serving backend shares: requests, the bounded queue, the engine thread, and
turning generated tokens into streamed text (stop strings held back, EOS, ``max_tokens``).

``llamaforge_serve.engine.Engine`` (transformers) and ``llamaforge_serve.vllm_engine.VllmEngine``
build on ``StreamingEngine``.
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

_DECODE = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}


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
    """The decoded text of ``generated`` up to the last whole character."""
    emitted: int = 0  # characters of text already handed out
    prefix_offset: int = 0
    """Incremental decoding: tokens before this are settled text; the window from here to
    ``read_offset`` gives the context that the next token's text is measured against."""
    read_offset: int = 0
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

    def _fail(self, seq: Sequence, exc: BaseException) -> None:
        """End one sequence with ``finish_reason: "error"``; the others go on."""
        log.warning(
            "request failed in the engine (%s: %s); others continue", type(exc).__name__, exc
        )
        seq.finished = True
        seq.emit("", "error", 0)

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
        self._detokenize(seq)
        stops = [st for st in seq.sampling.stop if st]
        # Text before ``emitted`` holds no stop string, nor the start of one (held back below).
        hits = [i for st in stops if (i := seq.text.find(st, seq.emitted)) >= 0]
        if hits:
            seq.finished = True
            seq.emit(seq.text[seq.emitted : min(hits)], "stop", 1)
            return
        if len(seq.generated) >= seq.sampling.max_tokens:
            seq.finished = True
            seq.emit(seq.text[seq.emitted :], "length", 1)
            return
        safe = len(seq.text)
        for st in stops:
            for k in range(min(len(st) - 1, safe), 0, -1):
                if seq.text.endswith(st[:k]):
                    safe = min(safe, len(seq.text) - k)
                    break
        safe = max(safe, seq.emitted)
        seq.emit(seq.text[seq.emitted : safe], None, 1)
        seq.emitted = safe

    def _detokenize(self, seq: Sequence) -> None:
        """Extend ``seq.text`` by what the newest tokens add, decoding only a short window
        (the tokens since the last settled point, with the previous ones as context), so a
        step costs the same at the 10th token and at the 10,000th.

        Decoding the window with and without its newest tokens and taking the difference keeps
        what depends on context right (sentencepiece's leading space, a character split over
        byte tokens): text is added only once it ends in a whole character.
        """
        window = seq.generated[seq.prefix_offset :]
        before = self.tok.decode(window[: seq.read_offset - seq.prefix_offset], **_DECODE)
        after = self.tok.decode(window, **_DECODE)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            seq.text += after[len(before) :]
            seq.prefix_offset, seq.read_offset = seq.read_offset, len(seq.generated)
