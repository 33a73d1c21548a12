"""The LLM side of a request: each scene value's (standardised) frozen LLM vector.

LARR keeps the LLM off the request path by encoding every scene value once and caching it.
A served model already holds the vectors of every value it was trained with (its
``scene_llm`` table). A value it has never seen — a new district, a "blizzard" — is looked up
in this order, each step only when the previous one has nothing:

1. an in-memory LRU of new values (``ServeSettings.cache_size`` entries);
2. the embedding store (shared with other replicas when it is Redis), raw vectors;
3. the frozen encoder that made the model's store (the stage-2 LLM), run in a small thread
   pool off the request path: the request waits at most ``encode_timeout_s``; at most
   ``max_pending_encodes`` values are queued; a value already being encoded is not queued
   twice (concurrent requests share one encode). The raw vector goes into the store and the
   LRU, so the LLM runs once per new value, whatever happens to the request that asked;
4. else the unknown row (zeros, row 0 of the table: what training used for a missing value),
   counted as an LLM fallback by reason: ``timeout``, ``error``, ``busy``, ``no_encoder``.

Raw store vectors are mapped into the model's table the way training standardised it
(:class:`~larr.rec.scene_table.TableStats`, ``llm_stats.safetensors``: subtract the feature's
mean, divide by its scale), because the scene encoder never saw raw vectors. Which key sits in
which row of the table is the model's :class:`~larr.rec.scene_table.SceneTable`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from larr.encoders import TextEncoder
from larr.rec.scene_table import SceneTable, TableStats
from larr.serve.metrics import ServeMetrics
from larr.serve.settings import ServeSettings
from larr.store.base import EmbeddingStore

log = logging.getLogger("larr.serve")


@dataclass(frozen=True)
class SceneItem:
    """One vector a request needs: its store key, the text the LLM would encode, its stats group."""

    key: str  # scene/<feature>/<value> or scene_whole/<text>
    text: str
    group: str  # the feature name, or "whole"


class SceneVectors:
    """Scene items → (n, D) float32 vectors, from the table, the caches or the LLM (module docstring)."""

    def __init__(self, vectors: np.ndarray, table: SceneTable, stats: TableStats,
                 store: EmbeddingStore | None, encoder: TextEncoder | None, settings: ServeSettings,
                 metrics: ServeMetrics) -> None:
        """``vectors``: the model's (standardised) table, rows as ``table`` orders them; ``stats``: how raw
        vectors map into it."""
        self.vectors, self.table, self.stats = vectors, table, stats
        self.store, self.encoder, self.settings, self.metrics = store, encoder, settings, metrics
        self.dim = vectors.shape[1]
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._inflight: dict[str, Future] = {}
        self._lock = threading.Lock()  # LRU and in-flight map
        self._store_lock = threading.Lock()  # the store is not required to be thread-safe
        self._executor = ThreadPoolExecutor(max(1, settings.encode_workers), thread_name_prefix="larr-encode")
        self._dirty, self._last_flush = False, float("-inf")  # the first new value is written at once

    # ------------------------------------------------------------------ look-up

    def lookup(self, items: list[SceneItem | None]) -> tuple[np.ndarray, list[str]]:
        """Vectors of ``items`` (None = feature absent: the unknown row) and where each came from."""
        out = np.zeros((len(items), self.dim), np.float32)
        sources = ["missing"] * len(items)
        need: list[tuple[int, SceneItem]] = []
        for i, item in enumerate(items):
            if item is None:
                continue
            row = self.table.rows.get(item.key)
            if row is not None:
                out[i], sources[i] = self.vectors[row], "table"
                continue
            cached = self._cache_get(item.key)
            if cached is not None:
                out[i], sources[i] = cached, "cache"
            else:
                need.append((i, item))
        if need:
            self._resolve(need, out, sources)
        for s in sources:
            self.metrics.scene_lookup(s, needed_llm=s in ("encoded", "fallback"))
        return out, sources

    def encode_now(self, items: list[SceneItem]) -> np.ndarray:
        """Encode ``items`` with the LLM in the calling thread, no cache (the ``whole_text`` baseline's
        serving design: one LLM call per request)."""
        if self.encoder is None:
            raise RuntimeError("no encoder loaded")
        raw = np.asarray(self.encoder.encode([it.text for it in items]), np.float32)
        self.metrics.llm_encodes.inc(len(items))
        return np.stack([self.stats.apply(it.group, r) for it, r in zip(items, raw)])

    def _resolve(self, need: list[tuple[int, SceneItem]], out: np.ndarray, sources: list[str]) -> None:
        if self.store is not None:
            try:
                with self._store_lock:
                    found = self.store.get_many([it.key for _, it in need])
            except Exception as e:  # a store outage must not fail the request: go on to the LLM
                log.warning("embedding store read failed: %s", e)
                found = {}
            rest = []
            for i, it in need:
                if it.key in found:
                    vec = self.stats.apply(it.group, found[it.key])
                    self._cache_put(it.key, vec)
                    out[i], sources[i] = vec, "store"
                else:
                    rest.append((i, it))
            need = rest
        if not need:
            return
        futures = self._submit([it for _, it in need])
        pending = {f for f in futures.values() if isinstance(f, Future)}
        done = wait(pending, timeout=self.settings.encode_timeout_s).done if pending else set()
        for i, it in need:
            fut = futures[it.key]
            reason = fut if isinstance(fut, str) else "timeout" if fut not in done else \
                "error" if fut.exception() is not None else None
            if reason is None:
                out[i], sources[i] = fut.result()[it.key], "encoded"
            else:
                sources[i] = "fallback"
                self.metrics.llm_fallbacks.labels(reason).inc()

    # ------------------------------------------------------------------ the encode queue

    def _submit(self, items: list[SceneItem]) -> dict[str, Future | str]:
        """A future per key (an encode already under way is shared), or the reason there is none."""
        out: dict[str, Future | str] = {}
        new: dict[str, SceneItem] = {}
        with self._lock:
            for it in items:
                if it.key in self._inflight:
                    out[it.key] = self._inflight[it.key]
                elif self.encoder is None:
                    out[it.key] = "no_encoder"
                elif len(self._inflight) + len(new) >= self.settings.max_pending_encodes:
                    out[it.key] = "busy"
                else:
                    new[it.key] = it
            if new:
                fut = self._executor.submit(self._encode, list(new.values()))
                for k in new:
                    self._inflight[k] = out[k] = fut
        if new:  # outside the lock: an already finished future runs the callback right here
            fut.add_done_callback(lambda _f, keys=list(new): self._forget(keys))
        return out

    def _forget(self, keys: list[str]) -> None:
        with self._lock:
            for k in keys:
                self._inflight.pop(k, None)

    def _encode(self, items: list[SceneItem]) -> dict[str, np.ndarray]:
        """Worker thread: LLM → raw vectors → store (raw) and LRU (standardised)."""
        raw = np.asarray(self.encoder.encode([it.text for it in items]), np.float32)
        self.metrics.llm_encodes.inc(len(items))
        if raw.shape != (len(items), self.dim) or not np.isfinite(raw).all():
            raise ValueError(f"encoder returned {raw.shape} vectors with non-finite values or of the wrong size")
        result = {it.key: self.stats.apply(it.group, r) for it, r in zip(items, raw)}
        for k, v in result.items():
            self._cache_put(k, v)
        if self.store is not None:
            try:
                with self._store_lock:
                    self.store.put_many({it.key: r for it, r in zip(items, raw)})
                    self._dirty = True
                    self._maybe_flush()
            except Exception as e:  # served from the LRU all the same; the next process re-encodes
                log.warning("could not write %d new scene vectors to the store: %s", len(items), e)
        return result

    # ------------------------------------------------------------------ helpers

    def _cache_get(self, key: str) -> np.ndarray | None:
        with self._lock:
            vec = self._lru.get(key)
            if vec is not None:
                self._lru.move_to_end(key)
            return vec

    def _cache_put(self, key: str, vec: np.ndarray) -> None:
        with self._lock:
            self._lru[key] = vec
            self._lru.move_to_end(key)
            while len(self._lru) > self.settings.cache_size:
                self._lru.popitem(last=False)

    def _maybe_flush(self, force: bool = False) -> None:
        """Write an on-disk store at most every ``flush_interval_s`` (a flush rewrites its whole file)."""
        now = time.monotonic()
        if self._dirty and (force or now - self._last_flush >= self.settings.flush_interval_s):
            flush = getattr(self.store, "flush", None)
            if flush is not None:
                flush()
            self._dirty, self._last_flush = False, now

    def close(self) -> None:
        """Finish queued encodes and write what is new to the store."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self.store is not None:
            with self._store_lock:
                try:
                    self._maybe_flush(force=True)
                except Exception as e:
                    log.warning("could not flush the embedding store: %s", e)
