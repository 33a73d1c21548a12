"""Bounded load on a real `larr serve` process: req/s, latency, errors, 5xx.

    python benchmarks/serve_load.py [--run RUN_DIR] [--seconds 60] [--concurrency 16] [--candidates 50]
                                    [--new-share 0.02,0.1] [--workers 1] [--backend onnx] [--redis URL]

Starts its own server (``python -m larr serve`` on a free 127.0.0.1 port, a private copy of the
run's embedding store, or a ``--redis`` namespace that several ``--workers`` share) and stops
it at the end. ``--concurrency`` asyncio tasks (httpx, keep-alive) send requests back to back
for ``--seconds``: each a real test-split scene, a user and ``--candidates`` random shops; a
``--new-share`` of them carries a weather value never seen before (``"weather: storm variant
N"``, each new value reused by a few later requests), which the server must encode with the
LLM once and then serve from its cache. Nothing but 127.0.0.1 is ever contacted.

Each ``--new-share`` (comma-separated: 2 % and 10 % by default) gets a fresh server; prints one
table row per mix (requests, req/s, p50/p99 latency, errors, 5xx, server CPU per request) and the
server's own scene-cache counters scraped from /metrics. Targets (issue #16): ≥ 600 req/s at 10 %
with p99 ≤ 50 ms and zero 5xx.
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
               seed: int = 0, tag: str = "") -> dict:
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
            r["scene"] = {**r["scene"], "weather": f"storm variant {tag}{counter['new'] // 3}"}
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
    ap.add_argument("--new-share", default="0.02,0.1", help="shares of requests with a never-seen scene value "
                    "(comma-separated; one server each)")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes")
    ap.add_argument("--backend", default="onnx", choices=["torch", "onnx"])
    ap.add_argument("--access-log", action="store_true", help="keep uvicorn's per-request log (off: /metrics counts)")
    ap.add_argument("--redis", default=None, help="redis://127.0.0.1:PORT/0?namespace=NS as the shared store")
    args = ap.parse_args()

    run = pick_run(args.run)
    reqs = requests(run, 500, args.candidates, seed=1)
    if args.backend == "onnx" and not (layout.export_dir(run, "larr_seed0") / "model.onnx").is_file():
        from larr.serve.export import export_onnx

        export_onnx(run, "larr_seed0")
    print(f"run {run}; backend {args.backend}; {args.workers} worker(s); {args.concurrency} concurrent clients; "
          f"{args.candidates} candidates/request; {args.seconds:.0f} s per mix; {os.cpu_count()} CPUs (client and "
          f"server share them)")
    rows = []
    for share in [float(x) for x in args.new_share.split(",")]:
        result, cpu = one_mix(run, reqs, args, share)
        m = scrape(result["metrics"], "larr_scene_cache", "larr_llm_", "larr_scene_values_total")
        per_req = cpu / max(1, result["requests"]) * 1e3
        rows.append((share, result, per_req))
        print(f"\nnever-seen share {share:.0%}: statuses {result['statuses']}; {result['new_values']:,} requests "
              f"with a never-seen value; server metrics:")
        for k, v in m.items():
            print(f"  {k} {v:g}")
    print("\n| never-seen | requests | req/s | p50 ms | p99 ms | errors | 5xx | server CPU ms/req |")
    print("|---|---|---|---|---|---|---|---|")
    for share, r, per_req in rows:
        print(f"| {share:.0%} | {r['requests']:,} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} "
              f"| {r['5xx']} | {per_req:.2f} |")


def one_mix(run: Path, reqs: list[dict], args, share: float) -> tuple[dict, float]:
    """A fresh server (a private store copy, or the --redis namespace), loaded for --seconds at ``share``."""
    tmp = Path(tempfile.mkdtemp(prefix="larr-load-"))
    try:
        if args.redis:
            from larr.store.copy import copy_location

            copy_location(layout.store_dir(run, "larr"), args.redis)
            store = args.redis
        else:
            store = str(shutil.copytree(layout.store_dir(run, "larr"), tmp / "larr"))  # the run's store stays as it was
        server_args = ["--run", str(run), "--workers", str(args.workers), "--backend", args.backend, "--store", store,
                       "--access-log" if args.access_log else "--no-access-log", "--max-new-values", "100000",
                       "--max-new-per-feature", "100000"]
        server = ProcessServer(server_args, env={"LARR_API_KEY": ""})
        with server as base:
            cpu0 = tree_cpu_seconds(server.proc.pid)
            result = asyncio.run(load(base, reqs, args.seconds, args.concurrency, share, tag=f"{share:g}-"))
            cpu = tree_cpu_seconds(server.proc.pid) - cpu0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result, cpu


if __name__ == "__main__":
    main()
