"""A real server on localhost (uvicorn in a thread) over a tiny LLaMA or the real SmolLM2."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    def __init__(self, model_dir: Path, **kw):
        import uvicorn

        from llamaforge_serve import build

        self.app, self.engine = build(model_dir, **kw)
        self.port = _free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{self.port}"

    def client(self, key: str = "secret"):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.base}/v1", api_key=key, max_retries=0, timeout=60)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.close()


def make_tiny(out: Path, tokenizer_dir: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(out))
    for f in Path(tokenizer_dir).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copyfile(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def tiny_server(asset, tmp_path_factory):
    model = make_tiny(tmp_path_factory.mktemp("serve") / "tiny", asset("smollm2-135m"))
    running = Running(model, api_keys=["secret"], max_batch=4, max_queue=6)
    yield running
    running.stop()
