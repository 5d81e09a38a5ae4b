"""One request's generation: its sequences submitted to the engine, then their text collected
into one response or streamed as OpenAI's server-sent-event chunks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from llamaforge_serve.metrics import Metrics
from llamaforge_serve.protocol import error_response
from llamaforge_serve.streaming import Sampling, Sequence, StreamingEngine


@dataclass
class Generation:
    """The ``n`` sequences of one request and the queues their text arrives on."""

    kind: str
    """``chat`` or ``completion``."""
    model_name: str
    prompt_ids: list[int]
    seqs: list[Sequence] = field(default_factory=list)
    queues: list[asyncio.Queue] = field(default_factory=list)
    rid: str = ""
    created: int = 0
    start: float = 0.0

    def submit(self, engine: StreamingEngine, sampling: Sampling, n: int) -> bool:
        """Queue ``n`` sequences (seeds ``seed``, ``seed + 1``, …); False when the engine is
        full, with nothing left queued."""
        loop = asyncio.get_running_loop()
        self.rid = f"{'chatcmpl' if self.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created, self.start = int(time.time()), time.perf_counter()
        for k in range(n):
            queue: asyncio.Queue = asyncio.Queue()

            def emit(delta, finish, count, q=queue):
                loop.call_soon_threadsafe(q.put_nowait, (delta, finish, count))

            seed = None if sampling.seed is None else sampling.seed + k
            self.queues.append(queue)
            self.seqs.append(Sequence(list(self.prompt_ids), replace(sampling, seed=seed), emit))
        for seq in self.seqs:
            if not engine.submit(seq):
                self.cancel()
                return False
        return True

    def cancel(self) -> None:
        for seq in self.seqs:
            if not seq.finished:
                seq.cancelled = True

    async def respond(self, request: Request, metrics: Metrics) -> dict | JSONResponse:
        """Wait for every choice; one OpenAI response body (or 499 if the client left)."""
        texts, finishes = [], []
        for queue in self.queues:
            text, finish = "", None
            while finish is None:
                try:
                    delta, finish, _ = await asyncio.wait_for(queue.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        self.cancel()
                        return error_response(499, "client closed the request", "cancelled")
                    continue
                text += delta
            texts.append(text)
            finishes.append(finish)
        self._observe(metrics, ttft=True)
        if "error" in finishes:
            return error_response(500, "generation failed on the server", "server_error")
        counts = sum(len(seq.generated) for seq in self.seqs)
        return {
            "id": self.rid,
            "object": "chat.completion" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model_name,
            "choices": [
                self._choice(i, t, f) for i, (t, f) in enumerate(zip(texts, finishes, strict=True))
            ],
            "usage": {
                "prompt_tokens": len(self.prompt_ids),
                "completion_tokens": counts,
                "total_tokens": len(self.prompt_ids) + counts,
            },
        }

    def stream(self, request: Request, metrics: Metrics) -> StreamingResponse:
        return StreamingResponse(self._events(request, metrics), media_type="text/event-stream")

    async def _events(self, request: Request, metrics: Metrics) -> AsyncIterator[str]:
        first = True
        try:
            pending = set(range(len(self.seqs)))
            if self.kind == "chat":
                for i in sorted(pending):
                    yield self._chunk({"index": i, "delta": {"role": "assistant"}})
            checked = time.perf_counter()
            while pending:
                if time.perf_counter() - checked > 0.1:  # a stream being read may still be dead
                    checked = time.perf_counter()
                    if await request.is_disconnected():
                        return
                for i in sorted(pending):
                    try:
                        delta, finish, _ = await asyncio.wait_for(self.queues[i].get(), 0.05)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return  # the finally below cancels the generation
                        continue
                    if first:
                        self._observe(metrics, ttft=True, latency=False)
                        first = False
                    yield self._chunk(self._delta(i, delta, finish))
                    if finish is not None:
                        pending.discard(i)
            yield "data: [DONE]\n\n"
            self._observe(metrics, ttft=False)
        finally:
            self.cancel()  # a client that went away stops its generation

    def _observe(self, metrics: Metrics, *, ttft: bool, latency: bool = True) -> None:
        if latency:
            metrics.latency.observe(time.perf_counter() - self.start)
        head = self.seqs[0]
        if ttft and head.first_token_at:
            metrics.ttft.observe(head.first_token_at - head.enqueued)

    def _choice(self, index: int, text: str, finish: str | None) -> dict:
        if self.kind == "chat":
            message = {"role": "assistant", "content": text}
            return {"index": index, "message": message, "finish_reason": finish}
        return {"index": index, "text": text, "finish_reason": finish, "logprobs": None}

    def _delta(self, index: int, delta: str, finish: str | None) -> dict:
        if self.kind == "chat":
            content = {"content": delta} if delta else {}
            return {"index": index, "delta": content, "finish_reason": finish}
        return {"index": index, "text": delta, "finish_reason": finish, "logprobs": None}

    def _chunk(self, choice: dict) -> str:
        body = {
            "id": self.rid,
            "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model_name,
            "choices": [{"finish_reason": None, **choice}],
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
