"""Load a model dir and run the API with uvicorn."""

from __future__ import annotations

from pathlib import Path

from llamaforge_serve.errors import ServeError


def build(
    model_dir: str | Path,
    *,
    trust_remote_code: bool = False,
    max_batch: int = 16,
    max_queue: int = 64,
    api_keys: list[str] | None = None,
    dtype: str = "float32",
):
    """(app, engine) for a model dir: safetensors weights only, remote code off by default."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llamaforge_serve.app import ServeConfig, create_app
    from llamaforge_serve.engine import Engine

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ServeError(f"{model_dir}: not an HF model dir (no config.json)")
    if not list(model_dir.glob("*.safetensors")):
        raise ServeError(f"{model_dir}: no .safetensors weights (other formats are refused)")
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
    config = ServeConfig(
        model_name=model_dir.name,
        api_keys=list(api_keys or []),
        max_model_len=getattr(model.config, "max_position_embeddings", 2048),
    )
    return create_app(engine, config), engine
