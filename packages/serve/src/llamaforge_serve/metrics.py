"""Prometheus metrics of the server: requests by endpoint and status, latency, time to first
token, and the engine's queue, batch and token counters."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llamaforge_serve.streaming import StreamingEngine


class Metrics:
    def __init__(self, engine: StreamingEngine):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llamaforge_requests", "answered requests", ["endpoint", "status"], registry=r
        )
        """Every answer of /v1/ endpoints, by its HTTP status (4xx and 5xx included)."""
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
