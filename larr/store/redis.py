"""``RedisStore``: the embedding store shared by several serving replicas, kept in one Redis.

Layout, all under a namespace ``NS`` (``?namespace=`` in the URL, default ``larr``)::

    NS:meta      hash {"format", "dim", "encoder"}: written once, by the first put
    NS:keys      sorted set: every key, scored by insertion order (what ``keys()`` lists)
    NS:seq       counter that hands out those scores
    NS:v:<key>   string: the vector as raw little-endian float32 bytes (no pickle, any reader)

Why a Lua script for ``put_many``: the metadata check ("this namespace holds dim 384 vectors
of encoder X"), the vector writes and the key index must change together even when two
replicas fill an empty namespace at the same moment, and a script runs atomically in one
round trip. Reads are ``MGET`` batches in one pipelined round trip. The semantics are those of
:class:`~larr.store.disk.DiskStore` method for method, so code never needs to know which
backend it talks to; writes go straight to the server, so ``flush`` has nothing to do.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import redis

from larr.store.base import EmbeddingStore, StoreError, check_vectors, stored_meta

FORMAT = "larr-store/1"
DEFAULT_NAMESPACE = "larr"
BATCH = 1024  # keys per command: bounded request size, still one round trip per call
WIRE = np.dtype("<f4")

# KEYS: meta, order, seq, then one vector key per item.
# ARGV: dim, encoder ("" = none), format, then the item names, then the vector blobs.
_PUT = """
local dim = redis.call('HGET', KEYS[1], 'dim')
if dim then
  if dim ~= ARGV[1] then return redis.error_reply('LARR_DIM ' .. dim) end
  local enc = redis.call('HGET', KEYS[1], 'encoder')
  if ARGV[2] ~= '' and enc and enc ~= '' and enc ~= ARGV[2] then
    return redis.error_reply('LARR_ENCODER ' .. enc)
  end
else
  redis.call('HSET', KEYS[1], 'dim', ARGV[1], 'encoder', ARGV[2], 'format', ARGV[3])
end
local n = #KEYS - 3
local seq = redis.call('INCRBY', KEYS[3], n) - n
for i = 1, n do
  redis.call('SET', KEYS[3 + i], ARGV[3 + n + i])
  redis.call('ZADD', KEYS[2], 'NX', seq + i, ARGV[3 + i])
end
return n
"""


def split_url(url: str) -> tuple[str, str | None]:
    """``redis://h:p/db?namespace=x&…`` → (the URL without ``namespace``, ``x`` or None).

    The Redis client would pass an unknown query argument on to its connection and fail.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [v for k, v in query if k == "namespace"]
    rest = urlencode([(k, v) for k, v in query if k != "namespace"])
    return urlunsplit(parts._replace(query=rest)), (names[-1] if names else None)


def redact(url: str) -> str:
    """The URL as it may appear in a message: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


class RedisStore(EmbeddingStore):
    """An embedding store in a Redis namespace, shared by every process that opens the same one.

    ``namespace`` defaults to the URL's ``?namespace=`` (else ``larr``); an explicit argument wins.
    ``dim`` and ``encoder`` are optional when opening an existing namespace; when given they
    must match what it holds, which catches a cache built by another model.
    """

    def __init__(self, url: str, namespace: str | None = None, dim: int | None = None,
                 encoder: str | None = None) -> None:
        server_url, url_namespace = split_url(str(url))
        self.namespace = namespace or url_namespace or DEFAULT_NAMESPACE
        self.url = f"{redact(server_url)}{'&' if '?' in server_url else '?'}namespace={self.namespace}"
        self._dim, self._encoder = dim, encoder
        try:
            self._db = redis.Redis.from_url(server_url, socket_connect_timeout=3, socket_timeout=30)
        except ValueError as e:
            raise StoreError(f"{self.url}: not a Redis URL ({e})") from None
        p = f"{self.namespace}:"
        self._meta, self._order, self._seq, self._vec = p + "meta", p + "keys", p + "seq", p + "v:"
        self._put = self._db.register_script(_PUT)
        self._load()

    # ------------------------------------------------------------------ interface

    @property
    def dim(self) -> int | None:
        if self._dim is None:  # another replica may have filled the namespace since we opened it
            with self._errors("read metadata"):
                dim = self._db.hget(self._meta, "dim")
            self._dim = int(dim) if dim is not None else None
        return self._dim

    @property
    def encoder(self) -> str | None:
        return self._encoder

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with self._errors("check a key"):
            return self._db.zscore(self._order, key) is not None

    def __len__(self) -> int:
        with self._errors("count keys"):
            return int(self._db.zcard(self._order))

    def keys(self) -> list[str]:
        with self._errors("list keys"):
            return [k.decode() for k in self._db.zrange(self._order, 0, -1)]

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Batched: one ``ZMSCORE`` per ``BATCH`` keys, all in one round trip."""
        todo = list(dict.fromkeys(keys))
        asked = [k for k in todo if isinstance(k, str)]
        with self._errors("check keys"), self._db.pipeline(transaction=False) as pipe:
            for chunk in _chunks(asked):
                pipe.zmscore(self._order, chunk)
            scores = [s for part in pipe.execute() for s in part]
        present = {k for k, s in zip(asked, scores) if s is not None}
        return [k for k in todo if k not in present]

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        asked = [k for k in keys if isinstance(k, str)]
        with self._errors("read vectors"), self._db.pipeline(transaction=False) as pipe:
            for chunk in _chunks(asked):
                pipe.mget([self._vec + k for k in chunk])
            blobs = [b for part in pipe.execute() for b in part]
        found = [(k, b) for k, b in zip(asked, blobs) if b is not None]
        if not found:
            return {}
        dim = self.dim
        bad = next((k for k, b in found if dim is None or len(b) != dim * WIRE.itemsize), None)
        if bad is not None:
            raise StoreError(f"{self.url}: vector of '{bad}' is not {dim} float32 values (corrupt namespace?)")
        rows = np.frombuffer(b"".join(b for _, b in found), WIRE).astype(np.float32).reshape(len(found), dim)
        return dict(zip((k for k, _ in found), rows))

    def put_many(self, items: Mapping[str, np.ndarray]) -> None:
        keys, matrix = check_vectors(items, self.dim)
        if not keys:
            return
        blobs = [row.tobytes() for row in matrix.astype(WIRE, copy=False)]
        dim, encoder = str(matrix.shape[1]), self._encoder or ""
        calls = [([self._meta, self._order, self._seq, *(self._vec + k for k in keys[s:s + BATCH])],
                  [dim, encoder, FORMAT, *keys[s:s + BATCH], *blobs[s:s + BATCH]])
                 for s in range(0, len(keys), BATCH)]
        with self._errors("write vectors", dim=matrix.shape[1]):
            if len(calls) == 1:  # one EVALSHA; a pipeline would add a SCRIPT EXISTS round trip
                self._put(keys=calls[0][0], args=calls[0][1])
            else:
                with self._db.pipeline(transaction=False) as pipe:
                    for ks, args in calls:
                        self._put(keys=ks, args=args, client=pipe)
                    pipe.execute()
        self._dim = matrix.shape[1]

    # ------------------------------------------------------------------ lifecycle

    def flush(self) -> None:
        """Nothing to do: every put is on the server when ``put_many`` returns."""

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "RedisStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load(self) -> None:
        """Read the namespace's metadata (this is also where an unreachable server shows up)."""
        with self._errors("read metadata"):
            try:
                raw = self._db.hgetall(self._meta)
            except TypeError as e:  # the client passes unknown URL options to its connection
                raise StoreError(f"{self.url}: unknown option in the Redis URL ({e})") from None
        meta = {k.decode(): v.decode() for k, v in raw.items()}
        if not meta:
            return
        try:
            dim = int(meta["dim"])
        except (KeyError, ValueError):
            raise StoreError(f"{self.url}: unreadable store metadata in '{self._meta}': {meta}") from None
        encoder = meta.get("encoder") or None
        self._dim, self._encoder = stored_meta(self.url, dim, encoder, self._dim, self._encoder,
                                               "use another namespace or delete this one")

    @contextmanager
    def _errors(self, what: str, dim: int | None = None) -> Iterator[None]:
        """Any Redis failure becomes a one-line ``StoreError`` naming the URL and namespace."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise StoreError(f"{self.url}: cannot reach Redis ({_one_line(e)})") from None
        except redis.ResponseError as e:
            msg = str(e)
            if m := re.search(r"LARR_DIM (\d+)", msg):  # another writer created the namespace first
                raise StoreError(f"{self.url}: store holds vectors of dim {m[1]}, "
                                 f"asked for dim {dim or self._dim}") from None
            if m := re.search(r"LARR_ENCODER (.*)", msg):
                raise StoreError(f"{self.url}: vectors were made by encoder '{m[1].strip()}', "
                                 f"not '{self._encoder}' (use another namespace or delete this one)") from None
            raise StoreError(f"{self.url}: Redis refused to {what} ({_one_line(e)})") from None
        except redis.RedisError as e:
            raise StoreError(f"{self.url}: cannot {what} ({type(e).__name__}: {_one_line(e)})") from None


def _chunks(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), BATCH):
        yield keys[start:start + BATCH]


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())
