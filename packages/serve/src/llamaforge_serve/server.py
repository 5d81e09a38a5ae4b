"""Load a model dir and run the API with uvicorn."""

from __future__ import annotations

from pathlib import Path

from llamaforge_serve.errors import ServeError

BACKENDS = ("transformers", "vllm")


def _check_model_dir(model_dir: Path) -> None:
    if not (model_dir / "config.json").is_file():
        raise ServeError(f"{model_dir}: not an HF model dir (no config.json)")
    if not list(model_dir.glob("*.safetensors")):
        raise ServeError(f"{model_dir}: no .safetensors weights (other formats are refused)")


def build(
    model_dir: str | Path,
    *,
    backend: str = "transformers",
    trust_remote_code: bool = False,
    max_batch: int = 16,
    max_queue: int = 64,
    api_keys: list[str] | None = None,
    dtype: str = "float32",
    max_model_len: int | None = None,
    engine_args: dict | None = None,
):
    """(app, engine) for a model dir: safetensors weights only, remote code off by default.

    ``backend``: ``transformers`` (this package's continuous batching, CPU or GPU) or ``vllm``
    (needs vLLM installed; see the README). ``max_model_len`` caps prompt + generation below
    the model's own positions. ``engine_args``: more ``vllm.EngineArgs`` for the vLLM backend.
    """
    from llamaforge_serve.app import ServeConfig, create_app

    model_dir = Path(model_dir)
    if backend not in BACKENDS:
        raise ServeError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    _check_model_dir(model_dir)
    if backend == "vllm":
        from llamaforge_serve.vllm_engine import VllmEngine

        engine = VllmEngine(
            model_dir,
            max_batch=max_batch,
            max_queue=max_queue,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            max_model_len=max_model_len,
            **(engine_args or {}),
        )
        max_len = engine.max_model_len
    else:
        engine, max_len = _transformers_engine(
            model_dir, trust_remote_code, max_batch, max_queue, dtype
        )
        max_len = min(max_len, max_model_len or max_len)
    config = ServeConfig(
        model_name=model_dir.name, api_keys=list(api_keys or []), max_model_len=max_len
    )
    return create_app(engine, config), engine


def _transformers_engine(
    model_dir: Path, trust_remote_code: bool, max_batch: int, max_queue: int, dtype: str
):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llamaforge_serve.engine import Engine

    tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        torch_dtype=getattr(torch, dtype),
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        attn_implementation="sdpa",
    ).eval()
    eos = {
        tok.eos_token_id,
        *(
            [model.generation_config.eos_token_id]
            if isinstance(model.generation_config.eos_token_id, int)
            else (model.generation_config.eos_token_id or [])
        ),
    }
    engine = Engine(
        model,
        tok,
        max_batch=max_batch,
        max_queue=max_queue,
        eos_ids=[e for e in eos if e is not None],
    )
    return engine, getattr(model.config, "max_position_embeddings", 2048)
