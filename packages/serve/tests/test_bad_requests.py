"""Bad requests against a real server on localhost: each gets a 4xx with OpenAI's error body at
once, and none disturbs the requests that are running."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

HEADERS = {"Authorization": "Bearer secret", "Content-Type": "application/json"}


def _chat(**fields) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **fields}


def _completion(**fields) -> dict:
    return {"prompt": "hi", "max_tokens": 3, **fields}


# (what is sent: endpoint and body — a dict, or raw bytes; expected status; expected param)
BAD = {
    "seed beyond 64 bits": ("chat", _chat(seed=18446744073709551616), 400, "seed"),
    "temperature NaN": (
        "chat",
        b'{"messages":[{"role":"user","content":"hi"}],"temperature":NaN}',
        400,
        "temperature",
    ),
    "empty prompt": ("completions", _completion(prompt=""), 400, "prompt"),
    "max_tokens 0": ("completions", _completion(max_tokens=0), 400, "max_tokens"),
    "max_tokens -5": ("completions", _completion(max_tokens=-5), 400, "max_tokens"),
    "max_tokens as a string": ("completions", _completion(max_tokens="10"), 400, "max_tokens"),
    "max_tokens true": ("completions", _completion(max_tokens=True), 400, "max_tokens"),
    "max_tokens 1e400": ("completions", b'{"prompt":"hi","max_tokens":1e400}', 400, "max_tokens"),
    "unknown model": ("chat", _chat(model="gpt-9"), 404, "model"),
    "role wizard": (
        "chat",
        {"messages": [{"role": "wizard", "content": "hi"}]},
        400,
        "messages.0.role",
    ),
    "temperature -1": ("chat", _chat(temperature=-1), 400, "temperature"),
    "top_p 5": ("chat", _chat(top_p=5), 400, "top_p"),
    "stop 5": ("completions", _completion(stop=5), 400, "stop"),
    "empty stop string": ("completions", _completion(stop=[""]), 400, "stop"),
    "n 1000": ("completions", _completion(n=1000), 400, "n"),
    "no messages": ("chat", {"messages": []}, 400, "messages"),
    "not JSON": ("chat", b"{not json", 400, None),
    "a JSON list": ("chat", b"[1, 2]", 400, None),
    "prompt too long": ("completions", _completion(prompt="word " * 2100), 400, "max_tokens"),
}


def _send(server, endpoint: str, body) -> httpx.Response:
    path = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}[endpoint]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.base}{path}", content=content, headers=HEADERS, timeout=10)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_gets_one_openai_error(busy_server, case):
    """Bad-input table: status, OpenAI's error body, the field named in ``param``."""
    endpoint, body, status, param = BAD[case]
    response = _send(busy_server, endpoint, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    if status == 404:
        assert error["code"] == "model_not_found"


def test_chunked_body_over_the_limit_is_refused(busy_server):
    def chunks():
        for _ in range(32):
            yield b"x" * (64 << 10)  # 2 MiB in all, no Content-Length

    response = httpx.post(
        f"{busy_server.base}/v1/completions", content=chunks(), headers=HEADERS, timeout=10
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_bad_requests_do_not_disturb_running_streams(busy_server):
    """Eight streams run while every bad request above is sent: each bad one is answered 4xx
    within a second, and every stream ends normally with all its tokens."""
    finishes: list[tuple[str | None, int]] = []

    def stream() -> None:
        body = {
            "messages": [{"role": "user", "content": "tell me"}],
            "max_tokens": 120,
            "temperature": 0.7,
            "seed": 1,
            "stream": True,
        }
        finish, pieces = None, 0
        with httpx.stream(
            "POST",
            f"{busy_server.base}/v1/chat/completions",
            headers=HEADERS,
            content=json.dumps(body),
            timeout=120,
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    choice = json.loads(line[6:])["choices"][0]
                    pieces += bool(choice["delta"].get("content"))
                    finish = choice["finish_reason"] or finish
        finishes.append((finish, pieces))

    threads = [threading.Thread(target=stream) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while len(busy_server.engine.active) < 8 and time.time() < deadline:
        time.sleep(0.01)
    assert len(busy_server.engine.active) == 8, "the streams did not start"
    for case, (endpoint, body, status, _) in BAD.items():
        start = time.perf_counter()
        response = _send(busy_server, endpoint, body)
        assert response.status_code == status, (case, response.text)
        assert time.perf_counter() - start < 1.0, case
        assert "error" in response.json()
    running_when_done = len(busy_server.engine.active)
    for t in threads:
        t.join()
    assert running_when_done > 0, "the streams ended before the bad requests were all sent"
    assert [f for f, _ in finishes] == ["length"] * 8 or all(
        f in ("length", "stop") for f, _ in finishes
    ), finishes
    assert all(pieces > 0 for _, pieces in finishes)


def test_metrics_count_every_status(busy_server):
    _send(busy_server, "chat", _chat(top_p=5))
    _send(busy_server, "chat", _chat(model="gpt-9"))
    text = httpx.get(f"{busy_server.base}/metrics").text
    counted = {
        line.split('status="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("llamaforge_requests_total{")
    }
    assert {"400", "404"} <= counted


def test_engine_fails_a_bad_sequence_alone(busy_server):
    """Behind the API's validation, the engine too ends only the sequence that fails: one
    whose seed no generator takes, and one whose sampling fails (NaN temperature), submitted
    straight to the engine beside a good one."""
    from llamaforge_serve.streaming import Sampling, Sequence

    engine = busy_server.engine
    ids = engine.tok("hello there", add_special_tokens=False).input_ids
    results: dict[str, list] = {"good": [], "seed": [], "nan": []}
    done = threading.Event()

    def sequence(name: str, **sampling) -> Sequence:
        def emit(text, finish, count):
            results[name].append(finish)
            if all(r and r[-1] is not None for r in results.values()):
                done.set()

        return Sequence(list(ids), Sampling(**sampling), emit)

    good = sequence("good", max_tokens=40, temperature=0.8, seed=3)
    assert engine.submit(good)
    time.sleep(0.05)
    assert engine.submit(sequence("seed", max_tokens=5, temperature=0.8, seed=2**70))
    assert engine.submit(sequence("nan", max_tokens=5, temperature=float("nan")))
    assert done.wait(30), results
    assert results["seed"][-1] == "error" and results["nan"][-1] == "error"
    assert results["good"][-1] == "length" and len(good.generated) == 40


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--port", "99999"], "--port must be in 1..65535, got 99999"),
        (["--max-batch", "0"], "--max-batch must be ≥ 1, got 0"),
        (["--max-batch", "8", "--max-queue", "4"], "--max-queue (4) must be ≥ --max-batch (8)"),
        (["--port", "BUSY"], "cannot listen on 127.0.0.1:BUSY"),
    ],
)
def test_serve_refuses_bad_settings_before_loading_the_model(tmp_path, args, error):
    """One line on stderr, exit 2, before the model is read (the model dir does not exist)."""
    import socket
    import subprocess
    import sys

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        args = [a.replace("BUSY", port) for a in args]
        result = subprocess.run(
            [sys.executable, "-m", "llamaforge_serve", str(tmp_path / "no-model"), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {error.replace('BUSY', port)}")
