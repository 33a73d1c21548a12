"""Embedding store: string key → vector. One small interface, an embedded on-disk default,
and a Redis backend that several serving replicas share (``open_store("redis://…")``).

    from larr.store import DiskStore  # keys: larr.data.scene.scene_key and kin
    with DiskStore(run_dir / "embeddings", encoder="stage2", autoflush=False) as store:
        todo = store.missing(keys)
        store.put_many(dict(zip(todo, encoder.encode(texts_of(todo)))))
"""
from __future__ import annotations

from pathlib import Path

from larr.store.base import EmbeddingStore, StoreError, stack_vectors
from larr.store.disk import DiskStore


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(REDIS_SCHEMES)


def open_store(location: Path | str, dim: int | None = None, encoder: str | None = None,
               autoflush: bool = True) -> EmbeddingStore:
    """A store by location: a folder path (``DiskStore``) or ``redis://host:port/db?namespace=NS``
    (``RedisStore``, which writes through, so ``autoflush`` does not apply to it)."""
    if is_redis_url(location):
        from larr.store.redis import RedisStore  # the client is only needed for Redis locations

        return RedisStore(str(location), dim=dim, encoder=encoder)
    if "://" in str(location):
        raise StoreError(f"{location}: not a store location (a folder, or redis://host:port/db?namespace=NS)")
    return DiskStore(location, dim=dim, encoder=encoder, autoflush=autoflush)


__all__ = [
    "DiskStore", "EmbeddingStore", "StoreError", "is_redis_url", "open_store", "stack_vectors",
]
