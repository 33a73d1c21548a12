"""Embedding store: string key → vector. One small interface, an embedded on-disk default.

    from larr.store import DiskStore, scene_key
    with DiskStore(run_dir / "embeddings", encoder="stage2", autoflush=False) as store:
        todo = store.missing(keys)
        store.put_many(dict(zip(todo, encoder.encode(texts_of(todo)))))
"""
from __future__ import annotations

from pathlib import Path

from larr.store.base import (
    EmbeddingStore,
    StoreError,
    canonical_value,
    scene_key,
    shop_key,
    stack_vectors,
    user_key,
    whole_scene_key,
)
from larr.store.disk import DiskStore


def open_store(location: Path | str, dim: int | None = None, encoder: str | None = None,
               autoflush: bool = True) -> EmbeddingStore:
    """A store by location: a folder path (``DiskStore``); ``redis://`` URLs are reserved."""
    if str(location).startswith("redis://"):
        raise StoreError(f"{location}: the Redis backend is not built yet; use a folder path")
    return DiskStore(location, dim=dim, encoder=encoder, autoflush=autoflush)


__all__ = [
    "DiskStore", "EmbeddingStore", "StoreError", "canonical_value", "open_store", "scene_key",
    "shop_key", "stack_vectors", "user_key", "whole_scene_key",
]
