"""A real server on localhost (uvicorn in a thread) over a tiny LLaMA or the real SmolLM2."""

from __future__ import annotations

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


@pytest.fixture(
    scope="module", params=["transformers", pytest.param("vllm", marks=pytest.mark.vllm)]
)
def server(request, asset, tiny_llama, tmp_path_factory):
    """The server on each backend: a tiny LLaMA on transformers; the real SmolLM2 on vLLM
    (whose CPU attention kernels want a real head size)."""
    if request.param == "vllm":
        model = asset("smollm2-135m")
    else:
        model = tiny_llama(
            tmp_path_factory.mktemp("serve") / "tiny", asset("smollm2-tokenizer"), positions=4096
        )
    # vLLM sizes its KV cache to a share of all RAM by default; two engines share this process.
    vllm_args = {"enforce_eager": True, "kv_cache_memory_bytes": 1 << 30}
    extra = {"engine_args": vllm_args} if request.param == "vllm" else {}
    running = Running(
        model,
        backend=request.param,
        **extra,
        api_keys=["secret"],
        max_batch=4,
        max_queue=6,
        max_model_len=2048,
        dtype="float32",  # the greedy test compares with a float32 reference
    )
    running.name, running.model_dir = model.name, model
    yield running
    running.stop()


@pytest.fixture(scope="module")
def smollm2_server(asset):
    """The real SmolLM2 on the transformers backend."""
    running = Running(asset("smollm2-135m"), max_batch=4, max_model_len=2048, dtype="float32")
    running.name, running.model_dir = "smollm2-135m", asset("smollm2-135m")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def busy_server(asset, tiny_llama, tmp_path_factory):
    """A tiny LLaMA with room for eight streams and the bad requests beside them."""
    model = tiny_llama(
        tmp_path_factory.mktemp("faults") / "tiny", asset("smollm2-tokenizer"), positions=4096
    )
    running = Running(
        model, api_keys=["secret"], max_batch=8, max_queue=32, max_model_len=2048, dtype="float32"
    )
    running.name = model.name
    yield running
    running.stop()
