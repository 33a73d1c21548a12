"""``DiskStore``: the embedded default store — one folder, loaded whole into memory.

Layout of the folder::

    meta.json            {"format", "dim", "encoder"}: written once when the store is created
    vectors.safetensors  tensor "vectors" (n, dim) float32; its metadata holds the row order
                         ("keys", a JSON list), repeats dim and encoder, and "sources": key →
                         digest of the text each vector was encoded from (when the writer said)

Why the keys live *inside* the safetensors file and not in a ``keys.json`` beside it: a flush
then replaces exactly one file with one atomic rename, so no crash can leave keys and rows out
of step. ``meta.json`` never changes after creation (only immutable facts: vector size and the
encoder that made the vectors), so it cannot go stale either; it exists so that ``cat`` tells
what a store is, and so that opening a store with a different encoder fails loudly instead of
mixing vectors from two models.

The digests let the embed stage tell a vector whose text has since changed (a renamed template, a
value description added to ``dataset.json``) from a current one: :meth:`DiskStore.stale`.

Puts go to memory and, with ``autoflush`` (the default), straight to disk. A bulk writer that
puts many small batches should open the store with ``autoflush=False`` inside ``with``: the
file is then written once, on exit (also after an error, so finished work survives a crash).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from larr.io import atomic_path, atomic_write_text
from larr.store.base import EmbeddingStore, StoreError, check_vectors, stored_meta

FORMAT = "larr-store/1"
VECTORS_FILE = "vectors.safetensors"
META_FILE = "meta.json"


class DiskStore(EmbeddingStore):
    """An embedding store in a folder (created on first flush if it does not exist).

    ``dim`` and ``encoder`` are optional when opening an existing store; when given they must
    match what the store holds, which catches a cache built by another model.
    """

    def __init__(self, path: Path | str, dim: int | None = None, encoder: str | None = None,
                 autoflush: bool = True) -> None:
        self.path = Path(path)
        self.autoflush = autoflush
        self._dim, self._encoder = dim, encoder
        self._index: dict[str, int] = {}
        self._sources: dict[str, str] = {}  # key → text_digest of what it was encoded from
        self._rows = np.zeros((0, dim or 0), np.float32)  # capacity >= len(self._index)
        self._dirty = False
        if (self.path / VECTORS_FILE).is_file() or (self.path / META_FILE).is_file():
            self._load()

    # ------------------------------------------------------------------ interface

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def encoder(self) -> str | None:
        return self._encoder

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> list[str]:
        return list(self._index)

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        found = [k for k in keys if k in self._index]
        rows = self._rows[[self._index[k] for k in found]]  # one gather, a copy
        return dict(zip(found, rows))

    def put_many(self, items: Mapping[str, np.ndarray], texts: Mapping[str, str] | None = None) -> None:
        """Add or overwrite vectors; ``texts`` (key → the text encoded) records where each came from."""
        keys, matrix = check_vectors(items, self._dim)
        if not keys:
            return
        for k in keys:
            if texts is not None and k in texts:
                self._sources[k] = text_digest(texts[k])
            else:
                self._sources.pop(k, None)  # an overwrite of unknown origin: no longer the old text's
        if self._dim is None:
            self._dim = matrix.shape[1]
            self._rows = np.zeros((0, self._dim), np.float32)
        new = [k for k in keys if k not in self._index]
        self._reserve(len(self._index) + len(new))
        for k in new:
            self._index[k] = len(self._index)
        self._rows[[self._index[k] for k in keys]] = matrix
        self._dirty = True
        if self.autoflush:
            self.flush()

    def stale(self, texts: Mapping[str, str]) -> list[str]:
        """Keys of ``texts`` that the store holds from *another* text (in input order). A key stored
        without a digest (older stores, or put without ``texts``) is taken as current."""
        return [k for k, t in texts.items() if (d := self._sources.get(k)) is not None and d != text_digest(t)]

    # ------------------------------------------------------------------ persistence

    def flush(self) -> None:
        """Write the store: ``meta.json`` once, then ``vectors.safetensors`` by one atomic rename."""
        if self._dim is None:
            raise StoreError(f"{self.path}: cannot write an empty store of unknown dim")
        if not (self.path / META_FILE).is_file():
            meta = {"format": FORMAT, "dim": self._dim, "encoder": self._encoder}
            atomic_write_text(self.path / META_FILE, json.dumps(meta, indent=2) + "\n")
        header = {"format": FORMAT, "dim": str(self._dim), "encoder": self._encoder or "",
                  "keys": json.dumps(list(self._index), ensure_ascii=False),
                  "sources": json.dumps(self._sources, ensure_ascii=False)}
        with atomic_path(self.path / VECTORS_FILE) as tmp:
            save_file({"vectors": np.ascontiguousarray(self._rows[: len(self._index)])}, tmp, metadata=header)
        self._dirty = False

    def __enter__(self) -> "DiskStore":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dirty:
            self.flush()

    def _reserve(self, n: int) -> None:
        """Grow the row buffer geometrically so that many small puts stay linear in total."""
        if n > self._rows.shape[0]:
            grown = np.zeros((max(n, 2 * self._rows.shape[0]), self._dim), np.float32)
            grown[: len(self._index)] = self._rows[: len(self._index)]
            self._rows = grown

    def _load(self) -> None:
        meta = self._read_meta()
        dim, encoder = int(meta["dim"]), meta.get("encoder") or None
        keys: list[str] = []
        rows = np.zeros((0, dim), np.float32)
        if (self.path / VECTORS_FILE).is_file():
            keys, rows, self._sources = self._read_vectors(dim, encoder)
        self._dim, self._encoder = stored_meta(self.path, dim, encoder, self._dim, self._encoder,
                                               "use another store folder or delete this one")
        self._index = {k: i for i, k in enumerate(keys)}
        self._rows = rows

    def _read_meta(self) -> dict:
        path = self.path / META_FILE
        try:
            meta = json.loads(path.read_text())
            int(meta["dim"])
            return meta
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise StoreError(f"{path}: unreadable store metadata ({e})") from None

    def _read_vectors(self, dim: int, encoder: str | None) -> tuple[list[str], np.ndarray, dict[str, str]]:
        path = self.path / VECTORS_FILE
        try:
            with safe_open(path, framework="np") as f:
                header = f.metadata() or {}
                rows = f.get_tensor("vectors")
            keys = json.loads(header["keys"])
            sources = json.loads(header.get("sources", "{}"))  # absent in stores written before digests
        except (OSError, SafetensorError, json.JSONDecodeError, KeyError) as e:
            raise StoreError(f"{path}: unreadable store vectors ({e})") from None
        if rows.dtype != np.float32 or rows.ndim != 2 or rows.shape != (len(keys), dim):
            raise StoreError(f"{path}: vectors of shape {rows.shape} and dtype {rows.dtype} do not match "
                             f"{len(keys)} keys of dim {dim}")
        if (header.get("encoder") or None) != encoder:
            raise StoreError(f"{path}: encoder '{header.get('encoder')}' differs from meta.json's '{encoder}'")
        return keys, rows, sources


def text_digest(text: str) -> str:
    """What a vector's source text is remembered by (64 bits of its SHA-1)."""
    return hashlib.sha1(text.encode()).hexdigest()[:16]
