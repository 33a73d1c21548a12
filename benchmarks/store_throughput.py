"""How many vectors per second do the embedding stores serve, one by one and in batches?

A serving replica looks up a request's scene values (a handful of keys) per request, while
`larr embed` and `larr store copy` move thousands at once. For each backend this prints
get_many and put_many throughput in vectors/s at batch 1 and batch 64:

* disk  — ``DiskStore`` in memory (puts with ``autoflush=False``, so the one file write is
          not counted: that is how bulk writers use it);
* redis — ``RedisStore`` over loopback TCP (every call is one round trip; a put is one
          atomic Lua script per batch).

    python benchmarks/store_throughput.py [--redis URL] [--n 4096] [--dim 576] [--repeats 3]

Without ``--redis`` a private redis-server is started with ``scripts/redis.sh`` (and stopped).
Timings are best-of ``--repeats``; keys are read in shuffled order.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from larr.store import DiskStore, EmbeddingStore
from larr.store.redis import RedisStore

ROOT = Path(__file__).resolve().parents[1]


def best_rate(fn: Callable[[], int], repeats: int) -> float:
    """Vectors per second of the fastest of ``repeats`` calls (``fn`` returns how many it moved)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return 1.0 / best


def measure(store: EmbeddingStore, vectors: dict[str, np.ndarray], batch: int, repeats: int) -> tuple[float, float]:
    keys = list(vectors)
    order = np.random.default_rng(0).permutation(len(keys))
    batches = [[keys[i] for i in order[s:s + batch]] for s in range(0, len(keys), batch)]

    def put() -> int:
        for b in batches:
            store.put_many({k: vectors[k] for k in b})
        return len(keys)

    def get() -> int:
        for b in batches:
            assert len(store.get_many(b)) == len(b)
        return len(keys)

    return best_rate(put, repeats), best_rate(get, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--redis", help="redis://host:port/db of a running server (default: start one)")
    ap.add_argument("--n", type=int, default=4096, help="vectors per pass")
    ap.add_argument("--dim", type=int, default=576, help="vector size (SmolLM2-135M's hidden size)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    vectors = {f"scene/bench/{i}": rng.normal(size=args.dim).astype(np.float32) for i in range(args.n)}
    env = {**os.environ, "LARR_REDIS_DIR": tempfile.mkdtemp(prefix="larr-bench-redis-")}
    url = args.redis or subprocess.run([str(ROOT / "scripts/redis.sh"), "start"], env=env, check=True,
                                       capture_output=True, text=True).stdout.strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stores = {
                "disk": lambda: DiskStore(Path(tmp) / f"s{uuid.uuid4().hex}", autoflush=False),
                "redis": lambda: RedisStore(url, namespace=f"bench-{uuid.uuid4().hex[:8]}"),
            }
            print(f"{args.n} vectors of dim {args.dim} (float32), best of {args.repeats}; redis at {url}")
            print(f"{'backend':8} {'batch':>5} {'put vec/s':>12} {'get vec/s':>12}")
            for name, make in stores.items():
                for batch in (1, 64):
                    with make() as store:
                        put, get = measure(store, vectors, batch, args.repeats)
                    print(f"{name:8} {batch:>5} {put:>12,.0f} {get:>12,.0f}")
    finally:
        if not args.redis:
            subprocess.run([str(ROOT / "scripts/redis.sh"), "stop"], env=env, check=False)


if __name__ == "__main__":
    main()
