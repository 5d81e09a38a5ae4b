"""The OpenAI-compatible HTTP API over the engine (FastAPI).

Endpoints: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (the tokenizer's chat
template), SSE streaming in OpenAI's chunk format, ``/health``, Prometheus ``/metrics``. Errors
use OpenAI's error body. Optional Bearer API keys; prompt + max_tokens checked against the
model's length; a request size limit; a full engine answers 429 with Retry-After; a client that
disconnects cancels its generation.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from llamaforge_serve.streaming import Sampling, Sequence, StreamingEngine


@dataclass(kw_only=True)
class ServeConfig:
    model_name: str = "llamaforge"
    """Name reported by /v1/models and in responses."""
    api_keys: list[str] = field(default_factory=list)
    """Accepted Bearer keys; empty: no authentication."""
    max_request_bytes: int = 1 << 20
    """Larger request bodies get 413."""
    max_model_len: int = 2048
    """Prompt + max_tokens must fit in this."""
    default_max_tokens: int = 16


def _error(
    status: int, message: str, kind: str, code: str | None = None, headers: dict | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class _Metrics:
    def __init__(self, engine: StreamingEngine):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llamaforge_requests", "requests", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram("llamaforge_request_seconds", "request latency", registry=r)
        self.ttft = Histogram(
            "llamaforge_time_to_first_token_seconds", "time to first token", registry=r
        )
        Gauge("llamaforge_queue_depth", "waiting requests", registry=r).set_function(
            lambda: engine.pending.qsize()
        )
        Gauge("llamaforge_active_sequences", "sequences decoding", registry=r).set_function(
            lambda: len(engine.active)
        )
        Gauge("llamaforge_generated_tokens", "tokens generated", registry=r).set_function(
            lambda: engine.stats["generated_tokens"]
        )
        Gauge("llamaforge_cancelled_sequences", "cancelled generations", registry=r).set_function(
            lambda: engine.stats["cancelled"]
        )
        Gauge(
            "llamaforge_prefix_cache_tokens_reused",
            "prompt tokens whose KV came from the prefix cache",
            registry=r,
        ).set_function(lambda: engine.stats.get("prefix_tokens_reused", 0))
        self.start = time.perf_counter()
        Gauge(
            "llamaforge_tokens_per_second", "mean output tokens/s since start", registry=r
        ).set_function(
            lambda: engine.stats["generated_tokens"] / (time.perf_counter() - self.start)
        )


def create_app(engine: StreamingEngine, config: ServeConfig) -> FastAPI:
    app = FastAPI(title="llamaforge serve")
    metrics = _Metrics(engine)
    tok = engine.tok

    app.add_middleware(_Guard, config=config)

    @app.get("/health")
    async def health():
        return {"status": "ok", "queue": engine.pending.qsize(), "active": len(engine.active)}

    @app.get("/metrics")
    async def prometheus():
        from fastapi.responses import Response

        return Response(generate_latest(metrics.registry), media_type="text/plain")

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [
                {"id": config.model_name, "object": "model", "created": 0, "owned_by": "llamaforge"}
            ],
        }

    async def _body(request: Request) -> dict | JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", "invalid_request_error")
        return body

    def _sampling(body: dict) -> Sampling | JSONResponse:
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        try:
            return Sampling(
                max_tokens=int(body.get("max_tokens") or config.default_max_tokens),
                temperature=float(body.get("temperature", 1.0)),
                top_p=float(body.get("top_p", 1.0)),
                top_k=int(body.get("top_k", 0)),
                seed=body.get("seed"),
                stop=stop,
            )
        except (TypeError, ValueError) as exc:
            return _error(400, f"bad sampling parameter: {exc}", "invalid_request_error")

    async def _run(request: Request, body: dict, prompt_ids: list[int], kind: str):
        sampling = _sampling(body)
        if isinstance(sampling, JSONResponse):
            return sampling
        if len(prompt_ids) + sampling.max_tokens > config.max_model_len:
            return _error(
                400,
                f"This model's maximum context length is {config.max_model_len} "
                f"tokens; the prompt has {len(prompt_ids)} and max_tokens is "
                f"{sampling.max_tokens}.",
                "invalid_request_error",
                "context_length_exceeded",
            )
        n = int(body.get("n") or 1)
        loop = asyncio.get_running_loop()
        queues = [asyncio.Queue() for _ in range(n)]
        seqs = []
        for k in range(n):

            def emit(delta, finish, count, q=queues[k]):
                loop.call_soon_threadsafe(q.put_nowait, (delta, finish, count))

            s = Sampling(**{**sampling.__dict__})
            if s.seed is not None:
                s.seed = int(s.seed) + k
            seqs.append(Sequence(list(prompt_ids), s, emit))
        for seq in seqs:
            if not engine.submit(seq):
                for other in seqs:
                    other.cancelled = True
                metrics.requests.labels(kind, "429").inc()
                return _error(
                    429,
                    "The server is overloaded; retry later.",
                    "server_error",
                    "overloaded",
                    headers={"Retry-After": "1"},
                )
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        start = time.perf_counter()
        if body.get("stream"):
            return StreamingResponse(
                _stream(request, rid, created, kind, seqs, queues, start),
                media_type="text/event-stream",
            )
        texts, finishes, counts = [], [], []
        for seq, q in zip(seqs, queues, strict=True):
            text, finish, count = "", None, 0
            while finish is None:
                try:
                    delta, finish, c = await asyncio.wait_for(q.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        for s in seqs:
                            s.cancelled = True
                        return _error(499, "client closed the request", "cancelled")
                    continue
                text += delta
                count += c
            texts.append(text)
            finishes.append(finish)
            counts.append(len(seq.generated))
        metrics.latency.observe(time.perf_counter() - start)
        if seqs[0].first_token_at:
            metrics.ttft.observe(seqs[0].first_token_at - seqs[0].enqueued)
        metrics.requests.labels(kind, "200").inc()
        choices = [
            (
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f}
                if kind == "chat"
                else {"index": i, "text": t, "finish_reason": f, "logprobs": None}
            )
            for i, (t, f) in enumerate(zip(texts, finishes, strict=True))
        ]
        return {
            "id": rid,
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": created,
            "model": config.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": len(prompt_ids),
                "completion_tokens": sum(counts),
                "total_tokens": len(prompt_ids) + sum(counts),
            },
        }

    async def _stream(request, rid, created, kind, seqs, queues, start):
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        first = True
        try:
            pending = set(range(len(seqs)))
            if kind == "chat":
                for i in pending:
                    yield _sse(
                        {
                            "id": rid,
                            "object": obj,
                            "created": created,
                            "model": config.model_name,
                            "choices": [
                                {"index": i, "delta": {"role": "assistant"}, "finish_reason": None}
                            ],
                        }
                    )
            checked = time.perf_counter()
            while pending:
                if time.perf_counter() - checked > 0.1:  # a stream being read may still be dead
                    checked = time.perf_counter()
                    if await request.is_disconnected():
                        return
                for i in sorted(pending):
                    try:
                        delta, finish, _ = await asyncio.wait_for(queues[i].get(), timeout=0.05)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return  # the finally below cancels the generation
                        continue
                    if first and seqs[0].first_token_at:
                        metrics.ttft.observe(seqs[0].first_token_at - seqs[0].enqueued)
                        first = False
                    choice = (
                        {
                            "index": i,
                            "delta": {"content": delta} if delta else {},
                            "finish_reason": finish,
                        }
                        if kind == "chat"
                        else {"index": i, "text": delta, "finish_reason": finish, "logprobs": None}
                    )
                    yield _sse(
                        {
                            "id": rid,
                            "object": obj,
                            "created": created,
                            "model": config.model_name,
                            "choices": [choice],
                        }
                    )
                    if finish is not None:
                        pending.discard(i)
            yield "data: [DONE]\n\n"
            metrics.latency.observe(time.perf_counter() - start)
            metrics.requests.labels(kind, "200").inc()
        finally:
            for s in seqs:  # a client that went away stops its generation
                if not s.finished:
                    s.cancelled = True

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return _error(400, "'prompt' must be a string", "invalid_request_error")
        ids = tok(prompt).input_ids
        return await _run(request, body, ids, "completion")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty list", "invalid_request_error")
        try:
            # Text first, then ids: transformers 5 (vLLM's environment) returns a dict when
            # the template tokenizes; the template itself writes any BOS.
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # noqa: BLE001 - jinja / template errors
            return _error(400, f"cannot apply the chat template: {exc}", "invalid_request_error")
        ids = tok(text, add_special_tokens=False).input_ids
        return await _run(request, body, list(ids), "chat")

    return app


class _Guard:
    """API keys and the body size limit, as plain ASGI middleware.

    (Starlette's ``BaseHTTPMiddleware`` would wrap the receive channel and hide client
    disconnects from the endpoints, so a hung-up stream would never be cancelled.)
    """

    def __init__(self, app, config: ServeConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            problem = None
            if self.config.api_keys:
                auth = headers.get("authorization", "")
                if not auth.startswith("Bearer ") or auth[7:] not in self.config.api_keys:
                    problem = _error(
                        401,
                        "Incorrect API key provided.",
                        "invalid_request_error",
                        "invalid_api_key",
                    )
            size = int(headers.get("content-length") or 0)
            if problem is None and size > self.config.max_request_bytes:
                problem = _error(
                    413,
                    f"request body of {size} bytes exceeds the limit of "
                    f"{self.config.max_request_bytes}",
                    "invalid_request_error",
                )
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
