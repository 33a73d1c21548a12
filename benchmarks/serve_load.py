"""Bounded load on a real `larr serve` process: req/s, latency, errors, 5xx.

    python benchmarks/serve_load.py [--run RUN_DIR] [--seconds 60] [--concurrency 16] [--candidates 50]
                                    [--new-share 0.1] [--workers 1] [--backend torch] [--redis URL]

Starts its own server (``python -m larr serve`` on a free 127.0.0.1 port, a private copy of the
run's embedding store, or a ``--redis`` namespace that several ``--workers`` share) and stops
it at the end. ``--concurrency`` asyncio tasks (httpx, keep-alive) send requests back to back
for ``--seconds``: each a real test-split scene, a user and ``--candidates`` random shops; a
``--new-share`` of them carries a weather value never seen before (``"weather: storm variant
N"``, each new value reused by a few later requests), which the server must encode with the
LLM once and then serve from its cache. Nothing but 127.0.0.1 is ever contacted.

Prints requests, req/s, p50/p99 latency, errors (transport errors and non-200s) and 5xx, and the
server's own scene-cache counters scraped from /metrics.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import httpx  # noqa: E402

from serve_common import ProcessServer, pct, pick_run, requests, tree_cpu_seconds  # noqa: E402

from larr import layout  # noqa: E402


async def load(base: str, reqs: list[dict], seconds: float, concurrency: int, new_share: float,
               seed: int = 0) -> dict:
    rng = random.Random(seed)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = {"transport": 0}
    counter = {"n": 0, "new": 0}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    def next_request() -> dict:
        counter["n"] += 1
        r = dict(reqs[counter["n"] % len(reqs)])
        if rng.random() < new_share:  # a never-seen weather; each new value is asked for ~3 times in a row
            counter["new"] += 1
            r["scene"] = {**r["scene"], "weather": f"storm variant {counter['new'] // 3}"}
        return r

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            body = next_request()
            t = time.perf_counter()
            try:
                resp = await client.post("/v1/rank", json=body)
                latencies.append(time.perf_counter() - t)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            except httpx.TransportError:
                errors["transport"] += 1

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        metrics = (await client.get("/metrics")).text
    done = sum(statuses.values())
    return {"requests": done, "elapsed": elapsed, "rps": done / elapsed, "p50": pct(latencies, 50),
            "p99": pct(latencies, 99), "errors": errors["transport"] + sum(n for s, n in statuses.items() if s != 200),
            "5xx": sum(n for s, n in statuses.items() if s >= 500), "statuses": statuses, "new_values": counter["new"],
            "metrics": metrics}


def scrape(text: str, *names: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        for name in names:
            if line.startswith(name) and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="run directory (default: /tmp/runs/demo if finished, else /tmp/serve_run)")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--new-share", type=float, default=0.1, help="share of requests with a never-seen scene value")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--access-log", action="store_true", help="keep uvicorn's per-request log (off: /metrics counts)")
    ap.add_argument("--redis", default=None, help="redis://127.0.0.1:PORT/0?namespace=NS as the shared store")
    args = ap.parse_args()

    run = pick_run(args.run)
    reqs = requests(run, 500, args.candidates, seed=1)
    tmp = Path(tempfile.mkdtemp(prefix="larr-load-"))
    try:
        if args.redis:
            from larr.store.copy import copy_location

            copy_location(layout.store_dir(run, "larr"), args.redis)
            store = args.redis
        else:
            store = str(shutil.copytree(layout.store_dir(run, "larr"), tmp / "larr"))  # the run's store stays as it was
        server_args = ["--run", str(run), "--workers", str(args.workers), "--backend", args.backend, "--store", store,
                       "--access-log" if args.access_log else "--no-access-log"]
        server = ProcessServer(server_args, env={"LARR_API_KEY": ""})
        with server as base:
            cpu0, load0 = tree_cpu_seconds(server.proc.pid), os.getloadavg()[0]
            result = asyncio.run(load(base, reqs, args.seconds, args.concurrency, args.new_share))
            cpu = tree_cpu_seconds(server.proc.pid) - cpu0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    m = scrape(result["metrics"], "larr_scene_cache", "larr_llm_", "larr_scene_values_total")
    print(f"run {run}; backend {args.backend}; {args.workers} worker(s); {args.concurrency} concurrent clients; "
          f"{args.candidates} candidates/request; {args.seconds:.0f} s; {os.cpu_count()} CPUs (client and server share them)")
    print(f"requests {result['requests']:,} in {result['elapsed']:.1f} s = {result['rps']:.0f} req/s; "
          f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms; errors {result['errors']}, 5xx {result['5xx']}; "
          f"statuses {result['statuses']}")
    per_req = cpu / max(1, result["requests"]) * 1e3
    print(f"server CPU {cpu:.1f} s = {per_req:.2f} ms per request (capacity of one free core ≈ {1e3 / per_req:.0f} "
          f"req/s); machine load average at start {load0:.1f} on {os.cpu_count()} CPUs")
    print(f"never-seen scene values sent in {result['new_values']:,} requests "
          f"(metrics of {'the last worker scraped' if args.workers > 1 else 'the server'}):")
    for k, v in m.items():
        print(f"  {k} {v:g}")


if __name__ == "__main__":
    main()
