"""Copy one embedding store into another, whatever the backends: push a run's on-disk
embeddings to the Redis that serving replicas share, or pull a Redis namespace back to disk.

The destination is opened with the source's dim and encoder, so copying into a store that
already holds another model's vectors fails before anything is written.
"""
from __future__ import annotations

from pathlib import Path

from larr.store import EmbeddingStore, StoreError, is_redis_url, open_store

BATCH = 4096  # keys per get/put: bounded memory, few round trips


def copy_store(src: EmbeddingStore, dst: EmbeddingStore, batch: int = BATCH) -> int:
    """Put every vector of ``src`` into ``dst`` (existing keys are overwritten); return the count."""
    keys = src.keys()
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        found = src.get_many(chunk)
        if len(found) != len(chunk):  # deleted under us: say so rather than copy a partial store
            raise StoreError(f"{len(chunk) - len(found)} keys vanished from the source while copying")
        dst.put_many(found)
    dst.flush()
    return len(keys)


def copy_location(src: Path | str, dst: Path | str) -> dict:
    """``copy_store`` between two locations (folders or ``redis://`` URLs); the source must hold vectors.

    Returns what was copied: ``{"vectors", "dim", "encoder"}``.
    """
    with open_store(src) as source:
        if source.dim is None or len(source) == 0:
            raise StoreError(f"{src}: no embedding store there, or it is empty")
        with open_store(dst, dim=source.dim, encoder=source.encoder, autoflush=False) as target:
            n = copy_store(source, target)
        return {"vectors": n, "dim": source.dim, "encoder": source.encoder}


def describe(location: Path | str, sample: int = 5) -> dict:
    """What a store holds: ``{"location", "vectors", "dim", "encoder", "keys"}`` (the first few keys)."""
    if not is_redis_url(location) and not Path(location).is_dir():
        raise StoreError(f"{location}: no such store folder")
    with open_store(location) as store:
        keys = store.keys()
        return {"location": str(location), "vectors": len(keys), "dim": store.dim,
                "encoder": store.encoder, "keys": keys[:sample]}
