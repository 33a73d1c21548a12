"""The LLM side of a request: each scene value's (standardised) frozen LLM vector.

LARR keeps the LLM off the request path by encoding every scene value once and caching it.
A served model already holds the vectors of every value it was trained with (its
``scene_llm`` table). A value it has never seen — a new district, a "blizzard" — is looked up
in this order, and **nothing slow happens while a request waits**:

1. an in-memory LRU of new values (``ServeSettings.cache_size`` entries);
2. the embedding store (shared with other replicas when it is Redis), raw vectors, read on
   one store thread with a deadline (``store_timeout_s``) behind a circuit breaker: after
   ``store_failures`` timeouts or errors in a row the store is not asked again for
   ``store_retry_s`` seconds (then one probe read). While it is open the server is *degraded*
   (``/healthz`` says so, still 200): new values come from the LRU, else as in 3–4;
3. else the value is answered at once with the feature's unknown row (source ``pending``; the
   model's LLM-neighbour ID imputation applies as soon as a vector exists) and queued for the
   frozen encoder that made the model's store, in a small thread pool: at most
   ``max_pending_encodes`` values queued, one encode per value however many requests ask. A
   request may opt in to wait ``encode_timeout_s`` for it (default 0: never waits);
4. else (queue full, no encoder, a cap reached) the unknown row, counted as an LLM fallback
   by reason: ``busy``, ``no_encoder``, ``cap``, ``timeout`` or ``error`` (the last two only
   when waiting).

Growth is bounded: a never-seen value is encoded and stored only while its feature has fewer
than ``max_new_per_feature`` new values and the server fewer than ``max_new_values`` in all
(counted from the store at start, then as values are added); past that, new values are
*rejected* (unknown row, reason ``cap``) and the store stops growing — existing values keep
being served.

Every vector is checked when read from the store and when the encoder returns it: the right
size, finite, and standardised within ``VECTOR_LIMIT`` × the largest magnitude of the model's
table. A bad one is dropped (counted, ``larr_scene_vectors_rejected_total``) and never served.

New raw vectors are written behind: every ``flush_interval_s`` a flusher thread writes what is
new (Redis: one ``put_many``; an on-disk store: appended to its journal, :mod:`larr.serve.journal`,
instead of rewriting the whole file) and once more at shutdown. Raw store vectors are mapped
into the model's table the way training standardised it (:class:`~larr.rec.scene_table.TableStats`,
``llm_stats.safetensors``: subtract the feature's mean, divide by its scale), because the scene
encoder never saw raw vectors. Which key sits in which row of the table is the model's
:class:`~larr.rec.scene_table.SceneTable`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np

from larr.encoders import TextEncoder
from larr.rec.scene_table import SceneTable, TableStats
from larr.serve import journal
from larr.serve.metrics import ServeMetrics
from larr.serve.settings import ServeSettings
from larr.data.scene import key_group
from larr.store.base import EmbeddingStore
from larr.store.disk import DiskStore

log = logging.getLogger("larr.serve")
VECTOR_LIMIT = 100.0  # a standardised vector larger than this × the table's largest |value| is refused


@dataclass(frozen=True)
class SceneItem:
    """One vector a request needs: its store key, the text the LLM would encode, its stats group."""

    key: str  # scene/<feature>/<value> or scene_whole/<text>
    text: str
    group: str  # the feature name, or "whole"


class StoreUnavailable(Exception):
    """The store did not answer in time, failed, or its circuit is open."""


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
        self.max_abs = VECTOR_LIMIT * max(1.0, float(np.abs(vectors).max()) if vectors.size else 1.0)
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._inflight: dict[str, Future] = {}
        self._lock = threading.Lock()  # LRU, in-flight map, unsaved vectors, new-value counts, breaker
        self._executor = ThreadPoolExecutor(max(1, settings.encode_workers), thread_name_prefix="larr-encode")
        # one thread does every store call (the store is not required to be thread-safe); callers wait on it
        self._store_pool = ThreadPoolExecutor(1, thread_name_prefix="larr-store")
        self._store_queue = 0  # store calls submitted and not finished
        self._failures, self._open_until, self._probing = 0, 0.0, False
        self.store_error: str | None = None  # the last store failure, while degraded
        self.flush_error: str | None = None
        self._unsaved: dict[str, np.ndarray] = {}  # raw vectors encoded here, not yet in the store
        self._new: dict[str, set[str]] = {}  # group → new (non-table) keys known to exist
        self._journal = journal.journal_path(store.path) if isinstance(store, DiskStore) else None
        self._stop = threading.Event()
        self._count_new_values()
        self._flusher = threading.Thread(target=self._flush_loop, name="larr-flush", daemon=True)
        self._flusher.start()

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
            self.metrics.scene_lookup(s, needed_llm=s in ("encoded", "fallback", "pending"))
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
            keys = [it.key for _, it in need]
            try:
                found = self._store_call("read", lambda st: st.get_many(keys), self.settings.store_timeout_s)
            except StoreUnavailable:  # degraded: the LRU, the encoder and the unknown row still answer
                found = {}
            rest = []
            for i, it in need:
                vec = self._checked(it, found[it.key], "read") if it.key in found else None
                if vec is not None:
                    self._cache_put(it.key, vec)
                    self._note_new(it)
                    out[i], sources[i] = vec, "store"
                else:
                    rest.append((i, it))
            need = rest
        if not need:
            return
        futures = self._submit([it for _, it in need])
        pending = {f for f in futures.values() if isinstance(f, Future)}
        waited = self.settings.encode_timeout_s > 0
        done = wait(pending, timeout=self.settings.encode_timeout_s).done if pending and waited else set()
        for i, it in need:
            fut = futures[it.key]
            if isinstance(fut, str):
                reason = fut
            elif not waited:
                sources[i] = "pending"  # answered now with the unknown row; the next request gets the vector
                continue
            else:
                reason = "timeout" if fut not in done else "error" if fut.exception() is not None else None
            if reason is None:
                out[i], sources[i] = fut.result()[it.key], "encoded"
            else:
                sources[i] = "fallback"
                self.metrics.llm_fallbacks.labels(reason).inc()

    def vector(self, item: SceneItem) -> tuple[np.ndarray | None, str]:
        """One item's vector (None while it is pending or fell back) and its source."""
        vecs, src = self.lookup([item])
        return (vecs[0] if src[0] in ("table", "cache", "store", "encoded") else None), src[0]

    # ------------------------------------------------------------------ the store: deadline + circuit breaker

    def _store_call(self, what: str, fn: Callable[[EmbeddingStore], object], timeout: float | None):
        """``fn(store)`` on the store thread, waited for at most ``timeout`` s; ``StoreUnavailable`` when the
        circuit is open, the call times out or fails (each counted in ``larr_store_calls_total``)."""
        with self._lock:
            now = time.monotonic()
            if self._open_until > now or self._probing or self._store_queue >= self.settings.store_queue:
                self.metrics.store_calls.labels(what, "skipped").inc()
                raise StoreUnavailable("circuit open" if self._open_until > now else "store busy")
            if self._open_until:  # past the retry time: this call is the one probe
                self._probing = True
            self._store_queue += 1
        store = self.store

        def call():
            try:
                return fn(store)
            finally:
                with self._lock:
                    self._store_queue -= 1

        fut = self._store_pool.submit(call)
        try:
            result = fut.result(timeout=timeout)
        except FutureTimeout:
            self._store_failed(what, "timeout", f"no answer in {timeout:g} s")
            raise StoreUnavailable("timeout") from None
        except Exception as e:  # a store outage must not fail the request
            self._store_failed(what, "error", f"{type(e).__name__}: {e}")
            raise StoreUnavailable(str(e)) from None
        with self._lock:
            if self._open_until:
                log.info("embedding store is back")
            self._failures, self._open_until, self._probing, self.store_error = 0, 0.0, False, None
            self.metrics.store_circuit.set(0)
        self.metrics.store_calls.labels(what, "ok").inc()
        return result

    def _store_failed(self, what: str, result: str, why: str) -> None:
        self.metrics.store_calls.labels(what, result).inc()
        with self._lock:
            self._failures += 1
            self.store_error = f"embedding store {what} failed: {why}"
            if self._probing or self._failures >= self.settings.store_failures:
                if not self._open_until or self._probing:
                    log.warning("%s; not asking it again for %g s", self.store_error, self.settings.store_retry_s)
                self._open_until = time.monotonic() + self.settings.store_retry_s
                self._probing = False
                self.metrics.store_circuit.set(1)

    @property
    def degraded(self) -> list[str]:
        """Why the server is degraded (empty when it is not)."""
        with self._lock:
            why = [f"{self.store_error} (circuit open)"] if self._open_until and self.store_error else []
        if self.flush_error:
            why.append(self.flush_error)
        return why

    # ------------------------------------------------------------------ the encode queue

    def _submit(self, items: list[SceneItem]) -> dict[str, Future | str]:
        """A future per key (an encode already under way is shared), or the reason there is none."""
        out: dict[str, Future | str] = {}
        new: dict[str, SceneItem] = {}
        with self._lock:
            total = sum(len(v) for v in self._new.values())
            for it in items:
                if it.key in self._inflight:
                    out[it.key] = self._inflight[it.key]
                elif self.encoder is None:
                    out[it.key] = "no_encoder"
                elif len(self._inflight) + len(new) >= self.settings.max_pending_encodes:
                    out[it.key] = "busy"
                elif it.key not in self._new.get(it.group, ()) and (
                        total >= self.settings.max_new_values
                        or len(self._new.get(it.group, ())) >= self.settings.max_new_per_feature):
                    out[it.key] = "cap"
                else:  # counted from now on (an encode under way holds its place under the caps)
                    new[it.key] = it
                    total += it.key not in self._new.get(it.group, ())
                    self._new.setdefault(it.group, set()).add(it.key)
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
        """Worker thread: LLM → checked raw vectors → LRU (standardised) and the unsaved set (raw)."""
        try:
            raw = np.asarray(self.encoder.encode([it.text for it in items]), np.float32)
            self.metrics.llm_encodes.inc(len(items))
            if raw.shape != (len(items), self.dim):
                raise ValueError(f"encoder returned vectors of shape {raw.shape}, want {(len(items), self.dim)}")
        except Exception as e:
            self.metrics.llm_encode_failures.inc(len(items))
            log.warning("could not encode %d new scene values: %s", len(items), e)
            self._unnote(items)
            raise
        result = {}
        for it, r in zip(items, raw):
            vec = self._checked(it, r, "encode")
            if vec is None:
                self._unnote([it])
                continue
            result[it.key] = vec
            self._cache_put(it.key, vec)
            self._note_new(it)
            if self.store is not None:
                with self._lock:
                    self._unsaved[it.key] = r
                    self.metrics.unsaved.set(len(self._unsaved))
        if len(result) < len(items):
            raise ValueError("encoder returned non-finite or out-of-range vectors")
        return result

    # ------------------------------------------------------------------ flushing

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.settings.flush_interval_s):
            self.flush()

    def flush(self, timeout: float | None = None) -> int:
        """Write the vectors encoded since the last flush to the store (see the module docstring);
        the number written. Kept for the next flush when the store cannot take them."""
        with self._lock:
            batch = dict(self._unsaved)
        if not batch or self.store is None:
            return 0
        path = self._journal

        def write(st: EmbeddingStore) -> None:
            st.put_many(batch)  # a DiskStore opened with autoflush=False: memory only
            if path is not None:
                journal.append(path, batch)

        try:
            self._store_call("write", write, timeout if timeout is not None else self.settings.store_write_timeout_s)
        except StoreUnavailable as e:
            self.flush_error = f"{len(batch)} new scene vectors not yet written to the store ({e})"
            return 0
        with self._lock:
            for k, v in batch.items():
                if self._unsaved.get(k) is v:
                    del self._unsaved[k]
            self.metrics.unsaved.set(len(self._unsaved))
        self.flush_error = None
        self.metrics.flushed.inc(len(batch))
        return len(batch)

    def _count_new_values(self) -> None:
        """Replay an on-disk store's journal, then count the store's new (non-table) values per group."""
        if self.store is None:
            return
        try:
            if self._journal is not None:
                replayed = journal.replay(self._journal, self.store.dim)
                if replayed:
                    self.store.put_many(replayed)
                    log.info("replayed %d scene vectors from %s", len(replayed), self._journal)
            keys = self._store_call("keys", lambda st: st.keys(), self.settings.store_write_timeout_s)
        except Exception as e:
            log.warning("could not count the store's new scene values: %s", e)
            return
        for k in keys:
            if k not in self.table.rows and k.startswith("scene"):
                group = key_group(k).split("/")[1] if k.startswith("scene/") else "whole"
                self._new.setdefault(group, set()).add(k)

    # ------------------------------------------------------------------ helpers

    def _checked(self, item: SceneItem, raw: np.ndarray, where: str) -> np.ndarray | None:
        """The standardised vector, or None (counted) when it is of the wrong size, not finite or huge."""
        raw = np.asarray(raw)
        if raw.shape == (self.dim,) and np.isfinite(raw).all():
            vec = self.stats.apply(item.group, raw)
            if np.isfinite(vec).all() and float(np.abs(vec).max(initial=0.0)) <= self.max_abs:
                return vec
        self.metrics.vectors_rejected.labels(where).inc()
        log.warning("refused the %s vector of '%s' (shape %s, not finite or too large)", where, item.key[:80],
                    raw.shape)
        return None

    def _note_new(self, item: SceneItem) -> None:
        with self._lock:
            self._new.setdefault(item.group, set()).add(item.key)

    def _unnote(self, items: list[SceneItem]) -> None:
        with self._lock:
            for it in items:
                self._new.get(it.group, set()).discard(it.key)

    def cached(self, key: str) -> bool:
        return key in self._lru

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

    def close(self) -> None:
        """Finish queued encodes, write what is new to the store; fold an on-disk store's journal into it.
        Closing again does nothing (a ranker shared by two callers is closed by both)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._flusher.join(5)
        if self.store is None:
            return
        self.flush(timeout=30)
        if self._unsaved:
            log.warning("%d new scene vectors could not be written to the store: %s", len(self._unsaved),
                        self.flush_error)
        if self._journal is not None and not self._unsaved:
            path = self._journal

            def compact(st: EmbeddingStore) -> None:
                st.put_many(journal.replay(path, st.dim))  # other workers' values too
                st.flush()
                journal.clear(path)

            try:
                self._store_call("write", compact, 60)
            except StoreUnavailable as e:
                log.warning("could not write the embedding store (the journal keeps the new values): %s", e)
        self._store_pool.shutdown(wait=False)
