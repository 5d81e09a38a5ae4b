"""Load a model dir and run the API with uvicorn."""

from __future__ import annotations

from pathlib import Path

from llamaforge_serve.errors import ServeError

BACKENDS = ("transformers", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(setting: str, model_dir: Path) -> str:
    """The weights dtype for ``setting``; ``auto``: the checkpoint's own half precision where
    the device computes it natively (a GPU, or a CPU with bf16 matrix support), else float32."""
    import json

    import torch

    if setting not in DTYPES:
        raise ServeError(f"dtype {setting!r} is not one of {', '.join(DTYPES)}")
    if setting != "auto":
        return setting
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    stored = str(config.get("torch_dtype") or "float32")
    if torch.cuda.is_available():
        return stored if stored in DTYPES else "float32"
    cpu_bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bfloat16" if stored == "bfloat16" and cpu_bf16 else "float32"


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
    dtype: str = "auto",
    max_model_len: int | None = None,
    engine_args: dict | None = None,
    prefix_cache_tokens: int = 4096,
):
    """(app, engine) for a model dir: safetensors weights only, remote code off by default.

    ``backend``: ``transformers`` (this package's continuous batching, CPU or GPU) or ``vllm``
    (needs vLLM installed; see the README). ``dtype``: see :func:`resolve_dtype`.
    ``max_model_len`` caps prompt + generation below the model's own positions.
    ``engine_args``: more ``vllm.EngineArgs`` for the vLLM backend. ``prefix_cache_tokens``:
    prompt tokens whose KV the transformers backend keeps for reuse (0: off; vLLM has its own).
    """
    from llamaforge_serve.app import ServeConfig, create_app

    model_dir = Path(model_dir)
    if backend not in BACKENDS:
        raise ServeError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    _check_model_dir(model_dir)
    dtype = resolve_dtype(dtype, model_dir)
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
            model_dir, trust_remote_code, max_batch, max_queue, dtype, prefix_cache_tokens
        )
        max_len = min(max_len, max_model_len or max_len)
    config = ServeConfig(
        model_name=model_dir.name,
        api_keys=list(api_keys or []),
        max_model_len=max_len,
        max_n=max_batch,
    )
    return create_app(engine, config), engine


def _transformers_engine(
    model_dir: Path,
    trust_remote_code: bool,
    max_batch: int,
    max_queue: int,
    dtype: str,
    prefix_cache_tokens: int,
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
    )
    model = model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
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
        prefix_cache_tokens=prefix_cache_tokens,
    )
    return engine, getattr(model.config, "max_position_embeddings", 2048)
