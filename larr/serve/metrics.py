"""Prometheus metrics of one server: requests, latency, the scene cache, LLM fallbacks, unknowns.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (not the global one), so
several apps in one process (tests) never share or double-register counters. With several
uvicorn workers each process counts its own requests; scrape them behind one address only
with prometheus_client's multiprocess mode (not set up here).

Scene look-ups, by where the vector came from (``larr_scene_values_total{source}``):
``table`` (a value the model was trained with), ``cache`` (a new value already in memory),
``store`` (a new value another process or an earlier run encoded), ``encoded`` (the LLM encoded
it while the request waited: only with ``encode_timeout_s`` > 0), ``pending`` (never seen: the
unknown row now, encoded in the background), ``fallback`` (encoding refused — queue full, no
encoder, a cap — or failed or timed out while waiting: the unknown row), ``missing`` (the
request left the feature out: the unknown row). Hits are the first three, misses are the
look-ups that needed the LLM (``encoded`` + ``pending`` + ``fallback``).

Faults: ``larr_store_calls_total{op,result}`` (a store read, write or key listing: ok, timeout,
error, skipped while the circuit is open), ``larr_store_circuit_open``, vectors refused on read
or encode, background encode failures, requests whose client went away (status 499).
"""
from __future__ import annotations

import threading

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)

disable_created_metrics()  # no *_created series: they double the output and nobody graphs them

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HIT_SOURCES = ("table", "cache", "store")


class ServeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("larr_requests", "HTTP requests by route and status code", ["route", "status"],
                                registry=r)
        self.latency = Histogram("larr_request_latency_seconds", "Request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.candidates = Counter("larr_candidates", "Candidates scored", registry=r)
        self.scene_values = Counter("larr_scene_values", "Scene value look-ups by source of the vector", ["source"],
                                    registry=r)
        self.cache_hits = Counter("larr_scene_cache_hits", "Scene values served without an LLM call", registry=r)
        self.cache_misses = Counter("larr_scene_cache_misses", "Scene values that needed the LLM", registry=r)
        self.hit_ratio = Gauge("larr_scene_cache_hit_ratio", "hits / (hits + misses) since start", registry=r)
        self.llm_encodes = Counter("larr_llm_encodes", "Texts encoded by the LLM on the serving path", registry=r)
        self.llm_fallbacks = Counter("larr_llm_fallbacks", "Scene values served the unknown row instead of an "
                                     "LLM vector", ["reason"], registry=r)
        self.unknown_users = Counter("larr_unknown_users", "Requests whose user is out of vocabulary", registry=r)
        self.unknown_shops = Counter("larr_unknown_shops", "Candidates whose shop is out of vocabulary", registry=r)
        self.missing_features = Counter("larr_missing_scene_features", "Scene features left out of a request "
                                        "(unknown row used)", ["feature"], registry=r)
        self.unknown_features = Counter("larr_unknown_scene_features", "Requests rejected for naming a scene "
                                        "feature the model does not have", registry=r)
        self.store_calls = Counter("larr_store_calls", "Embedding-store calls by operation and result (ok, timeout, "
                                   "error, skipped: circuit open or store busy)", ["op", "result"], registry=r)
        self.store_circuit = Gauge("larr_store_circuit_open", "1 while the store's circuit is open (degraded)",
                                   registry=r)
        self.unsaved = Gauge("larr_scene_vectors_unsaved", "New scene vectors not yet written to the store",
                             registry=r)
        self.flushed = Counter("larr_scene_vectors_flushed", "New scene vectors written to the store", registry=r)
        self.vectors_rejected = Counter("larr_scene_vectors_rejected", "Vectors refused (wrong size, not finite, "
                                        "too large) by where they came from", ["where"], registry=r)
        self.llm_encode_failures = Counter("larr_llm_encode_failures", "Background LLM encodes that failed",
                                           registry=r)
        self.rejected_values = Counter("larr_rejected_scene_values", "Requests refused (422) for a scene value "
                                       "out of its feature's range or a key over the length limit", ["reason"],
                                       registry=r)
        self.client_disconnects = Counter("larr_client_disconnects", "Requests whose client went away before the "
                                          "response (counted as status 499, not 500)", ["route"], registry=r)
        self.model_info = Gauge("larr_model_info", "The model being served (value 1)", ["model", "version", "backend"],
                                registry=r)
        self._hits = self._misses = 0
        self._lock = threading.Lock()

    def scene_lookup(self, source: str, needed_llm: bool = False) -> None:
        """Count one scene-value look-up (see the module docstring for the sources)."""
        self.scene_values.labels(source).inc()
        hit = source in HIT_SOURCES
        if not hit and not needed_llm:
            return
        (self.cache_hits if hit else self.cache_misses).inc()
        with self._lock:
            self._hits += hit
            self._misses += not hit
            self.hit_ratio.set(self._hits / (self._hits + self._misses))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
