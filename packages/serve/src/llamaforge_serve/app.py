"""The OpenAI-compatible HTTP API over the engine (FastAPI).

Endpoints: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (the tokenizer's chat
template), SSE streaming in OpenAI's chunk format, ``/health``, Prometheus ``/metrics``.
Request bodies are validated by the strict models of ``llamaforge_serve.protocol`` before a
handler runs; every error uses OpenAI's error body. Optional Bearer API keys; prompt +
max_tokens checked against the model's length; a request size limit (chunked bodies
included); a full engine answers 429 with Retry-After; a client that disconnects cancels its
generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
from starlette.exceptions import HTTPException

from llamaforge_serve.generation import Generation
from llamaforge_serve.metrics import Metrics
from llamaforge_serve.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    error_response,
    validation_error_response,
)
from llamaforge_serve.streaming import Sampling, StreamingEngine


@dataclass(kw_only=True)
class ServeConfig:
    model_name: str = "llamaforge"
    """Name reported by /v1/models and in responses; a request naming another model gets 404."""
    api_keys: list[str] = field(default_factory=list)
    """Accepted Bearer keys; empty: no authentication."""
    max_request_bytes: int = 1 << 20
    """Larger request bodies get 413 (counted as they arrive, chunked or not)."""
    max_model_len: int = 2048
    """Prompt + max_tokens must fit in this."""
    default_max_tokens: int = 16
    max_n: int = 16
    """Most choices one request may ask for (``n``)."""


def create_app(engine: StreamingEngine, config: ServeConfig) -> FastAPI:
    app = FastAPI(title="llamaforge serve")
    metrics = Metrics(engine)
    tok = engine.tok
    app.add_middleware(_Guard, config=config, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def server_error(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(exc).__name__}", "server_error")

    @app.get("/health")
    async def health():
        return {"status": "ok", "queue": engine.pending.qsize(), "active": len(engine.active)}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type="text/plain")

    @app.get("/v1/models")
    async def models():
        card = {"id": config.model_name, "object": "model", "created": 0, "owned_by": "llamaforge"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions")
    async def completions(request: Request, body: CompletionRequest):
        return await _generate(request, body, tok(body.prompt).input_ids, "completion")

    @app.post("/v1/chat/completions")
    async def chat(request: Request, body: ChatCompletionRequest):
        messages = [
            {"role": m.role, "content": m.text(), **({"name": m.name} if m.name else {})}
            for m in body.messages
        ]
        try:
            # Text first, then ids: transformers 5 (vLLM's environment) returns a dict when
            # the template tokenizes; the template itself writes any BOS.
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # noqa: BLE001 - jinja / template errors
            return error_response(400, f"cannot apply the chat template: {exc}", param="messages")
        ids = tok(text, add_special_tokens=False).input_ids
        return await _generate(request, body, list(ids), "chat")

    async def _generate(request: Request, body, prompt_ids: list[int], kind: str):
        problem = _check(body, prompt_ids, config)
        if problem is not None:
            return problem
        sampling = Sampling(
            max_tokens=body.wanted_tokens() or config.default_max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=max(body.top_k, 0),
            seed=body.seed,
            stop=body.stop_list(),
        )
        generation = Generation(kind, config.model_name, prompt_ids)
        if not generation.submit(engine, sampling, body.n):
            message = "The server is overloaded; retry later."
            return error_response(
                429, message, "server_error", code="overloaded", headers={"Retry-After": "1"}
            )
        if body.stream:
            return generation.stream(request, metrics)
        return await generation.respond(request, metrics)

    return app


def _check(body, prompt_ids: list[int], config: ServeConfig) -> JSONResponse | None:
    """What the request models cannot know: the served name, ``n``'s bound, the length."""
    if body.model is not None and body.model != config.model_name:
        return error_response(
            404,
            f"The model '{body.model}' does not exist; this server serves '{config.model_name}'.",
            param="model",
            code="model_not_found",
        )
    if body.n > config.max_n:
        return error_response(
            400, f"n: at most {config.max_n} choices per request, got {body.n}", param="n"
        )
    max_tokens = body.wanted_tokens() or config.default_max_tokens
    if len(prompt_ids) + max_tokens > config.max_model_len:
        return error_response(
            400,
            f"This model's maximum context length is {config.max_model_len} tokens; the "
            f"prompt has {len(prompt_ids)} and max_tokens is {max_tokens}.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return None


class _Guard:
    """API keys, the body size limit and the request counter, as plain ASGI middleware.

    (Starlette's ``BaseHTTPMiddleware`` would wrap the receive channel and hide client
    disconnects from the endpoints, so a hung-up stream would never be cancelled.) The body is
    read here, counting bytes as they arrive, so a chunked body without Content-Length meets
    the same limit; the endpoint then gets it replayed.
    """

    def __init__(self, app, config: ServeConfig, metrics: Metrics):
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"]

        async def counted_send(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        problem = self._unauthorized(scope)
        if problem is None and scope["method"] == "POST":
            body, problem = await self._read_body(receive)
            if body is None and problem is None:
                return  # the client left before sending its body
            receive = _replay(body, receive) if problem is None else receive
        if problem is not None:
            await problem(scope, receive, counted_send)
            return
        await self.app(scope, receive, counted_send)

    def _unauthorized(self, scope) -> JSONResponse | None:
        if not self.config.api_keys:
            return None
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer ") and auth[7:] in self.config.api_keys:
            return None
        return error_response(401, "Incorrect API key provided.", code="invalid_api_key")

    async def _read_body(self, receive) -> tuple[bytes | None, JSONResponse | None]:
        limit, size, chunks = self.config.max_request_bytes, 0, []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None, error_response(
                    413, f"request body exceeds the limit of {limit} bytes", code="too_large"
                )
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks), None


def _replay(body: bytes, receive):
    """The body once, then the client's own channel (so disconnects are still seen)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
