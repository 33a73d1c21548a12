"""An append-only journal of the scene vectors a server encoded, beside an on-disk store.

A :class:`~larr.store.disk.DiskStore` flush rewrites its whole ``vectors.safetensors`` (every
vector of the run), which is the right thing for ``larr embed`` but not for a server that adds
a handful of values a minute. So the server appends its new values here every
``flush_interval_s`` (one ``write`` + ``fsync``, cost proportional to what is new), replays the
journal when it starts (a ``kill -9`` loses at most the last interval) and folds it into the
store file once, at a clean shutdown, then empties it.

Format (little-endian): ``b"LARRJ1\\n"`` then records ``<u32 key bytes><u32 dim><key utf-8><dim float32>``.
A torn last record (a crash in the middle of a write) is ignored on replay.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"LARRJ1\n"
JOURNAL_FILE = "serve-journal.bin"
_HEAD = struct.Struct("<II")


def journal_path(store_dir: Path) -> Path:
    return Path(store_dir) / JOURNAL_FILE


def append(path: Path, items: dict[str, np.ndarray]) -> None:
    """Append ``items`` (key → 1-D float32) durably: one write, then fsync."""
    if not items:
        return
    parts = []
    for key, vec in items.items():
        k, v = key.encode("utf-8"), np.ascontiguousarray(vec, "<f4")
        parts += [_HEAD.pack(len(k), v.shape[0]), k, v.tobytes()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size == 0:
            parts.insert(0, MAGIC)
        os.write(fd, b"".join(parts))
        os.fsync(fd)
    finally:
        os.close(fd)


def replay(path: Path, dim: int | None) -> dict[str, np.ndarray]:
    """Every complete record of the journal (later records win); {} when there is none."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return {}
    if not data.startswith(MAGIC):
        return {}
    out, at = {}, len(MAGIC)
    while at + _HEAD.size <= len(data):
        klen, d = _HEAD.unpack_from(data, at)
        end = at + _HEAD.size + klen + 4 * d
        if end > len(data) or (dim is not None and d != dim):
            break  # torn or foreign record: stop here
        key = data[at + _HEAD.size: at + _HEAD.size + klen].decode("utf-8", errors="replace")
        out[key] = np.frombuffer(data, "<f4", d, at + _HEAD.size + klen).astype(np.float32)
        at = end
    return out


def clear(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
