"""Copy and inspect embedding stores. Copy one store into another, whatever the backends: push a
run's on-disk embeddings to the Redis that serving replicas share, or pull a Redis namespace back
to disk. Inspect a store: its size and encoder, or a key's nearest neighbours.

The destination is opened with the source's dim and encoder, so copying into a store that
already holds another model's vectors fails before anything is written.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from larr.data.scene import key_group
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


def _open_existing(location: Path | str) -> EmbeddingStore:
    if not is_redis_url(location) and not Path(location).is_dir():
        raise StoreError(f"{location}: no such store folder")
    return open_store(location)


def describe(location: Path | str, sample: int = 5) -> dict:
    """What a store holds: ``{"location", "vectors", "dim", "encoder", "keys"}`` (the first few keys)."""
    with _open_existing(location) as store:
        keys = store.keys()
        return {"location": str(location), "vectors": len(keys), "dim": store.dim,
                "encoder": store.encoder, "keys": keys[:sample]}


def neighbours(location: Path | str, key: str, k: int = 5, centre: bool = True) -> list[tuple[str, float]]:
    """The ``k`` keys nearest to ``key`` by cosine among the keys of its group (:func:`key_group`:
    ``scene/weather/typhoon`` is compared with the other weather values), best first, e.g. to
    check that an unseen scene value lands next to its kin.

    ``centre``: subtract the group's mean vector first, as stage 3 does (``SceneTable.standardize``):
    the texts of one feature share most of their words, so raw cosines are all close to 1 and
    only the differences between values carry meaning.
    """
    prefix = key_group(key)
    with _open_existing(location) as store:
        group = [x for x in store.keys() if x.startswith(prefix)]
        if key not in group:
            raise StoreError(f"{location}: no key '{key}' (see `larr store info`)")
        if len(group) < 2:
            raise StoreError(f"{location}: '{key}' is the only key under '{prefix}'")
        found = store.get_many(group)
    matrix = np.stack([found[x] for x in group]).astype(np.float64)
    if centre:
        matrix -= matrix.mean(0, keepdims=True)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    scores = matrix @ matrix[group.index(key)]
    order = [i for i in np.argsort(-scores, kind="stable") if group[i] != key][:k]
    return [(group[i], float(scores[i])) for i in order]
