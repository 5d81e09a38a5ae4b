"""The OpenAI request bodies this server accepts, as strict pydantic models, and its error body.

Strict where OpenAI's types are strict: ``"10"`` or ``true`` is not a number, ``1e400`` is not
an integer, ``NaN`` is not a temperature. Limits are OpenAI's (``max_tokens ≥ 1``,
``0 ≤ temperature ≤ 2``, ``0 < top_p ≤ 1``, at most 4 stop strings, a 64-bit ``seed``). Fields
this server does not use (``user``, ``logit_bias``, …) are ignored, as OpenAI-compatible
servers do. Every validation failure is answered 400 with OpenAI's error body, naming the field
in ``param``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def error_response(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    """A 400 naming the first wrong field (all of them in the message)."""
    problems, params = [], []
    for item in exc.errors():
        loc = [str(p) for p in item.get("loc", ()) if p != "body"]
        param = ".".join(loc)
        if item.get("type") == "json_invalid":
            problems.append("the request body is not valid JSON")
            continue
        if item.get("type") == "model_attributes_type":
            problems.append("the request body must be a JSON object")
            continue
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        problems.append(f"{param}: {message}" if param else message)
        params.append(param or None)
    return error_response(400, "; ".join(problems), param=params[0] if params else None)


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = None
    """The served model's name (``/v1/models``); another name is answered 404."""
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    """Tokens to generate at most (the server's default when absent)."""
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 1.0
    top_k: Annotated[int, Field(ge=-1)] = 0
    """Sample from the k most likely tokens only (0 or -1: all; a vLLM extension)."""
    n: Annotated[int, Field(ge=1)] = 1
    """Choices to generate (bounded by the server's configured maximum)."""
    seed: Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool = False

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_strings(cls, value: Any) -> Any:
        # One message for the field, not one per member of the union.
        if value is None or isinstance(value, str):
            values = [] if value is None else [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            values = value
        else:
            raise ValueError("must be a string or a list of up to 4 strings")
        if any(not v for v in values):
            raise ValueError("stop strings must not be empty")
        return value

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def wanted_tokens(self) -> int | None:
        """The requested generation length, if any."""
        return self.max_tokens


class CompletionRequest(_Request):
    """``POST /v1/completions``."""

    prompt: Annotated[str, Field(min_length=1)]
    """The text to continue (one non-empty string)."""


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]]
    """A string, or OpenAI's content parts of which only ``text`` parts are read."""
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in value
        ):
            return value
        raise ValueError("must be a string or a list of text parts ({'type': 'text', 'text': ...})")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part["text"] for part in self.content)


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    """OpenAI's newer name for ``max_tokens``."""

    def wanted_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens
