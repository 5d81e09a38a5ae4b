"""`llamaforge serve MODEL_DIR`: an OpenAI-compatible server (binds 127.0.0.1 by default)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from llamaforge_serve.errors import ServeError

app = typer.Typer(
    help="OpenAI-compatible inference server.", pretty_exceptions_enable=False, add_completion=False
)


def main(argv: list[str] | None = None) -> int:
    """``python -m llamaforge_serve``: this package\'s commands alone; a user error is one red
    line on stderr and exit code 2, never a traceback."""
    try:
        app(args=argv, prog_name="python -m llamaforge_serve")
    except SystemExit as exc:  # typer ends every run this way, with the exit code
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ServeError as exc:
        from rich.text import Text

        Console(stderr=True).print(Text("error: ", style="red") + Text(str(exc)), soft_wrap=True)
        return 2
    return 0


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="HF model dir (safetensors).")],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            help="Accepted Bearer key (repeatable; also $LLAMAFORGE_API_KEYS, comma-separated)."
        ),
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Sequences decoded together.")] = 16,
    max_queue: Annotated[int, typer.Option(help="Waiting + running before 429.")] = 64,
    trust_remote_code: Annotated[bool, typer.Option(help="Run the model dir's code.")] = False,
    backend: Annotated[
        str, typer.Option(help="transformers (default) or vllm (needs vLLM; see README).")
    ] = "transformers",
    dtype: Annotated[
        str,
        typer.Option(
            help="auto (the checkpoint's bf16/fp16 where the device computes it natively, "
            "else float32), float32, bfloat16 or float16."
        ),
    ] = "auto",
    prefix_cache_tokens: Annotated[
        int,
        typer.Option(help="Prompt tokens whose KV is kept for reuse by later requests (0: off)."),
    ] = 4096,
    vllm_arg: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE for vLLM's engine (repeatable), e.g. gpu_memory_utilization=0.5."
        ),
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="Cap on prompt + generation tokens (default: the model's).")
    ] = None,
) -> None:
    """Serve MODEL_DIR with /v1/completions, /v1/chat/completions, /v1/models, /metrics."""
    import uvicorn

    _check_settings(host, port, max_batch, max_queue, prefix_cache_tokens)  # before the model

    from llamaforge_serve.server import build
    from llamaforge_serve.vllm_engine import parse_vllm_args

    keys = list(api_key or []) + [
        k for k in os.environ.get("LLAMAFORGE_API_KEYS", "").split(",") if k
    ]
    application, engine = build(
        model_dir,
        backend=backend,
        dtype=dtype,
        max_model_len=max_model_len,
        prefix_cache_tokens=prefix_cache_tokens,
        engine_args=parse_vllm_args(vllm_arg),
        trust_remote_code=trust_remote_code,
        max_batch=max_batch,
        max_queue=max_queue,
        api_keys=keys,
    )
    try:
        uvicorn.run(application, host=host, port=port, log_level="info")
    finally:
        engine.close()


def _check_settings(host: str, port: int, max_batch: int, max_queue: int, cache: int) -> None:
    """Refuse what cannot work before the model loads (minutes for a big one)."""
    import socket

    problems = []
    if not 1 <= port <= 65535:
        problems.append(f"--port must be in 1..65535, got {port}")
    if max_batch < 1:
        problems.append(f"--max-batch must be ≥ 1, got {max_batch}")
    if max_queue < max_batch:
        problems.append(f"--max-queue ({max_queue}) must be ≥ --max-batch ({max_batch})")
    if cache < 0:
        problems.append(f"--prefix-cache-tokens must be ≥ 0, got {cache}")
    if problems:
        raise ServeError("; ".join(problems))
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
