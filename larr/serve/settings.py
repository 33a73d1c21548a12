"""What a server is allowed to do: request limits, LLM-call bounds, the API key.

One frozen dataclass, built by ``larr serve`` from its options and passed to the app factory,
so that tests can start an app with tight limits without touching the environment. Limits are
part of the published contract: the request model (:mod:`larr.serve.schemas`) is built from
them, so ``/openapi.json`` shows exactly what the server accepts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

API_KEY_ENV = "LARR_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    max_candidates: int = 1000  # shops per request: one batched forward, so this bounds its cost
    max_body_bytes: int = 256 * 1024  # rejected with 413 before the JSON is parsed
    max_string_length: int = 256  # any id, feature name or scene value
    max_scene_features: int = 64  # entries in the request's scene dict
    encode_timeout_s: float = 0.0  # a request may wait this long for a new value's encode (0: answered at once)
    encode_workers: int = 1  # LLM encodes run in this many threads, off the request path
    max_pending_encodes: int = 64  # new values queued for the LLM at once; beyond that: fallback vector
    cache_size: int = 10_000  # new scene values kept in memory (LRU); the store keeps them all
    flush_interval_s: float = 10.0  # new vectors are written to the store this often (and at shutdown)
    store_timeout_s: float = 0.1  # a request waits at most this long for a store read
    store_write_timeout_s: float = 10.0  # the flusher waits this long for a store write
    store_failures: int = 3  # timeouts or errors in a row that open the store's circuit (degraded mode)
    store_retry_s: float = 5.0  # an open circuit sends one probe read after this long
    store_queue: int = 8  # store calls waiting for the store thread; beyond that a read is skipped
    max_new_values: int = 5000  # never-seen values encoded and stored in all; beyond: rejected (unknown row)
    max_new_per_feature: int = 1000  # the same, per scene feature
    range_margin: float = 0.1  # numeric scene values within the train range ± this share of its span
    threads: int = 1  # torch / onnxruntime threads per process: the models are small, requests run in parallel
    position: int = 0  # display position every candidate is scored at (position is a bias feature)
    api_key: str | None = None  # None: no authentication

    @classmethod
    def from_env(cls, **kwargs: object) -> "ServeSettings":
        """Settings with ``api_key`` taken from ``$LARR_API_KEY`` (empty = none) unless given."""
        if "api_key" not in kwargs:
            kwargs["api_key"] = os.environ.get(API_KEY_ENV) or None
        return cls(**kwargs)  # type: ignore[arg-type]
