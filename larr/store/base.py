"""The embedding-store interface: string key → float32 vector, nothing more.

The frozen LLM vectors of every scene value (and of shops and users) are computed once and
looked up at training and serving time. The interface is deliberately small — batched get,
batched put, membership, key listing, the vector size — so that a key-value server (Redis)
fits behind it as easily as the embedded on-disk default (:class:`larr.store.disk.DiskStore`).

Keys are plain strings with a kind prefix (``scene/weather/heavy rain``, ``shop/123``), built by
the helpers of :mod:`larr.data.scene` so that the stage that writes vectors and the stages that
read them spell them identically.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

import numpy as np

from larr.errors import LarrError


class StoreError(LarrError):
    """A store is unreadable, or a vector does not fit it (wrong size, wrong encoder, not finite)."""


class EmbeddingStore(ABC):
    """String key → 1-D float32 vector of a fixed size ``dim``.

    ``get_many`` leaves missing keys out of its answer instead of raising, so a caller can
    encode exactly the ``missing`` ones and ``put_many`` them.
    """

    @property
    @abstractmethod
    def dim(self) -> int | None:
        """Vector size; ``None`` only for a new, still empty store."""

    @abstractmethod
    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors of the keys that are present (missing keys are absent from the answer)."""

    @abstractmethod
    def put_many(self, items: Mapping[str, np.ndarray]) -> None:
        """Add or overwrite vectors; every vector must have size ``dim``."""

    @abstractmethod
    def __contains__(self, key: object) -> bool: ...

    @abstractmethod
    def keys(self) -> list[str]: ...

    def __len__(self) -> int:
        return len(self.keys())

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys not in the store, in input order, each once (what still has to be encoded)."""
        return [k for k in dict.fromkeys(keys) if k not in self]

    def flush(self) -> None:
        """Make earlier puts durable; nothing to do for a store that writes through."""

    def close(self) -> None:
        """Release connections or files; the store is not used after this."""

    def __enter__(self) -> "EmbeddingStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        self.close()


def stored_meta(where: object, dim: int, encoder: str | None, asked_dim: int | None, asked_encoder: str | None,
                remedy: str) -> tuple[int, str | None]:
    """The (dim, encoder) a store opens with: what it holds (``dim``, ``encoder``), refused when the
    caller asked for another size or another encoder's vectors; ``remedy`` ends that message."""
    if asked_dim is not None and asked_dim != dim:
        raise StoreError(f"{where}: store holds vectors of dim {dim}, asked for dim {asked_dim}")
    if asked_encoder is not None and encoder is not None and asked_encoder != encoder:
        raise StoreError(f"{where}: vectors were made by encoder '{encoder}', not '{asked_encoder}' ({remedy})")
    return dim, encoder or asked_encoder


def check_vectors(items: Mapping[str, np.ndarray], dim: int | None) -> tuple[list[str], np.ndarray]:
    """Validate vectors for ``put_many``: same size (``dim`` when known), finite; return keys and matrix.

    A NaN cached once would poison every later run that reads it, so it is refused here.
    """
    keys = list(items)
    if not keys:
        return [], np.zeros((0, dim or 0), np.float32)
    for k in keys:
        if not isinstance(k, str):
            raise StoreError(f"store keys are strings, got {type(k).__name__} {k!r}")
    rows = [np.asarray(items[k], dtype=np.float32) for k in keys]
    want = dim if dim is not None else rows[0].shape[-1] if rows[0].ndim == 1 else None
    for k, r in zip(keys, rows):
        if r.ndim != 1 or r.shape[0] != want:
            raise StoreError(f"vector for '{k}' has shape {r.shape}, store dim is {want}")
    matrix = np.stack(rows)
    if not np.isfinite(matrix).all():
        bad = keys[int(np.nonzero(~np.isfinite(matrix).all(axis=1))[0][0])]
        raise StoreError(f"vector for '{bad}' has non-finite values")
    return keys, matrix


def stack_vectors(store: EmbeddingStore, keys: list[str]) -> np.ndarray:
    """The vectors of ``keys`` as one ``(len(keys), dim)`` matrix; a missing key is an error."""
    found = store.get_many(keys)
    lost = [k for k in keys if k not in found]
    if lost:
        more = f" and {len(lost) - 3} more" if len(lost) > 3 else ""
        raise KeyError(f"{len(lost)} keys missing from the embedding store: {lost[:3]}{more} (run `larr embed`)")
    if not keys:
        return np.zeros((0, store.dim or 0), np.float32)
    return np.stack([found[k] for k in keys])
