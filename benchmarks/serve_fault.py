"""Faults under load on a real `larr serve` process: a frozen Redis, and a kill -9.

    python benchmarks/serve_fault.py [--run RUN_DIR] [--backend onnx] [--outage 10] [--flush-interval 1]

1. **Redis stopped for ``--outage`` s under load.** A private ``redis-server`` (``scripts/redis.sh
   start``, in a temporary state folder) holds the run's store; the server uses it as ``--store``.
   16 clients send requests for ``--before + --outage + --after`` seconds, 10 % of them with a
   never-seen weather; in the middle the Redis process is frozen (SIGSTOP: connections hang,
   the worst case) and resumed (SIGCONT). Prints p50/p99 of requests whose scene was fully
   cached (every value in the model's table) before, during and after the outage, 5xx, and
   what /healthz and /metrics said during it.
2. **kill -9 and restart.** A server on a private copy of the on-disk store (``--flush-interval``)
   gets never-seen values; once they are encoded it waits two flush intervals, encodes a second
   batch right before the kill, and is killed with SIGKILL. A new server on the same store is
   asked for every value: ``store`` means it survived, ``pending`` that it was lost. Target: no
   value encoded more than one flush interval before the kill is lost.

Nothing but 127.0.0.1 is contacted; every server and the redis-server are stopped at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import httpx  # noqa: E402

from serve_common import ProcessServer, pct, pick_run, requests  # noqa: E402

from larr import layout  # noqa: E402

REDIS_SH = Path(__file__).parents[1] / "scripts" / "redis.sh"


# ---------------------------------------------------------------------------- 1. Redis outage


async def outage_load(base: str, reqs: list[dict], phases: list[tuple[str, float]], concurrency: int,
                      on_phase, new_share: float = 0.1) -> dict:
    rng = random.Random(0)
    lat: dict[str, list[float]] = {name: [] for name, _ in phases}
    statuses: dict[int, int] = {}
    transport = [0]
    phase = [phases[0][0]]
    n = [0]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    def next_request() -> tuple[dict, bool]:
        n[0] += 1
        r = dict(reqs[n[0] % len(reqs)])
        if rng.random() < new_share:
            return {**r, "scene": {**r["scene"], "weather": f"outage storm {n[0] // 3}"}}, False
        return r, True

    async def worker(client, stop) -> None:
        while not stop.is_set():
            body, cached = next_request()
            at = phase[0]
            t = time.perf_counter()
            try:
                resp = await client.post("/v1/rank", json=body)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                if cached and resp.status_code == 200:
                    lat[at].append(time.perf_counter() - t)
            except httpx.TransportError:
                transport[0] += 1

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(worker(client, stop)) for _ in range(concurrency)]
        notes = {}
        for name, seconds in phases:
            phase[0] = name
            on_phase(name)
            await asyncio.sleep(seconds / 2)
            notes[name] = {"healthz": (await client.get("/healthz")).json(),
                           "metrics": (await client.get("/metrics")).text}
            await asyncio.sleep(seconds / 2)
            notes[name]["end"] = (await client.get("/healthz")).json()
        stop.set()
        await asyncio.gather(*tasks)
    return {"lat": lat, "statuses": statuses, "transport": transport[0], "notes": notes}


def redis_outage(run: Path, args, reqs: list[dict]) -> None:
    state = Path(tempfile.mkdtemp(prefix="larr-fault-redis-"))
    env = {**os.environ, "LARR_REDIS_DIR": str(state)}
    url = subprocess.run([str(REDIS_SH), "start"], env=env, check=True, capture_output=True, text=True).stdout.strip()
    pid = int((state / "redis.pid").read_text())
    store = f"{url}?namespace=fault"
    try:
        from larr.store.copy import copy_location

        copy_location(layout.store_dir(run, "larr"), store)
        server = ProcessServer(["--run", str(run), "--backend", args.backend, "--store", store, "--no-access-log"],
                               env={"LARR_API_KEY": ""})

        def on_phase(name: str) -> None:
            if name == "during":
                os.kill(pid, signal.SIGSTOP)
            elif name == "after":
                os.kill(pid, signal.SIGCONT)

        with server as base:
            phases = [("before", args.before), ("during", args.outage), ("after", args.after)]
            try:
                out = asyncio.run(outage_load(base, reqs, phases, args.concurrency, on_phase))
            finally:
                os.kill(pid, signal.SIGCONT)
    finally:
        subprocess.run([str(REDIS_SH), "stop"], env=env, check=False)
        shutil.rmtree(state, ignore_errors=True)
    five = sum(c for s, c in out["statuses"].items() if s >= 500)
    print(f"\n## Redis frozen (SIGSTOP) for {args.outage:g} s under load: {args.concurrency} clients, 10 % never-seen; "
          f"backend {args.backend}")
    print(f"statuses {out['statuses']}; transport errors {out['transport']}; 5xx {five}\n")
    print("| phase | cached-scene requests | p50 ms | p99 ms | /healthz mid / end of phase | store calls (timeout / "
          "skipped), mid-phase |")
    print("|---|---|---|---|---|---|")
    for name, lat in out["lat"].items():
        note = out["notes"][name]
        m = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in note["metrics"].splitlines()
             if line.startswith("larr_store_calls_total")}
        timeouts = sum(v for k, v in m.items() if 'result="timeout"' in k)
        skipped = sum(v for k, v in m.items() if 'result="skipped"' in k)
        p50, p99 = (pct(lat, 50), pct(lat, 99)) if lat else (float("nan"), float("nan"))
        print(f"| {name} | {len(lat):,} | {p50:.1f} | {p99:.1f} | {note['healthz'].get('status')} / "
              f"{note['end'].get('status')} | "
              f"{timeouts:g} / {skipped:g} |")


# ---------------------------------------------------------------------------- 2. kill -9


def _ask(base: str, values: list[str], scene: dict) -> list[str]:
    out = []
    for v in values:
        r = httpx.post(f"{base}/v1/rank", json={"user_id": 0, "scene": {**scene, "weather": v}, "candidates": [0]},
                       timeout=10)
        out.append(r.json()["scene_sources"]["weather"])
    return out


def _wait_cached(base: str, values: list[str], scene: dict, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s == "cache" for s in _ask(base, values, scene)):
            return
        time.sleep(0.2)
    raise RuntimeError("values were not encoded in time")


def kill_restart(run: Path, args, reqs: list[dict]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="larr-fault-kill-"))
    scene = reqs[0]["scene"]
    try:
        store = str(shutil.copytree(layout.store_dir(run, "larr"), tmp / "larr"))
        server_args = ["--run", str(run), "--backend", args.backend, "--store", store, "--no-access-log",
                       "--flush-interval", str(args.flush_interval)]
        old = [f"kill test old {i}" for i in range(args.values)]
        late = [f"kill test late {i}" for i in range(args.values)]
        first = ProcessServer(server_args, env={"LARR_API_KEY": ""})
        with first as base:
            _ask(base, old, scene)
            _wait_cached(base, old, scene)
            time.sleep(2 * args.flush_interval)  # encoded more than one flush interval before the kill
            _ask(base, late, scene)
            _wait_cached(base, late, scene)  # encoded right before the kill
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait()
        second = ProcessServer(server_args, env={"LARR_API_KEY": ""})
        with second as base:
            got_old, got_late = _ask(base, old, scene), _ask(base, late, scene)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lost_old = sum(s != "store" for s in got_old)
    lost_late = sum(s != "store" for s in got_late)
    print(f"\n## kill -9 and restart (on-disk store, --flush-interval {args.flush_interval:g} s)\n")
    print("| values | encoded before the kill | lost after restart |")
    print("|---|---|---|")
    print(f"| {len(old)} | more than one flush interval | {lost_old} (target 0) |")
    print(f"| {len(late)} | less than one flush interval | {lost_late} (may be lost: the last interval) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None)
    ap.add_argument("--backend", default="onnx", choices=["torch", "onnx"])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--before", type=float, default=10)
    ap.add_argument("--outage", type=float, default=10)
    ap.add_argument("--after", type=float, default=10)
    ap.add_argument("--flush-interval", type=float, default=1.0)
    ap.add_argument("--values", type=int, default=20, help="never-seen values per batch in the kill test")
    ap.add_argument("--skip-redis", action="store_true")
    ap.add_argument("--skip-kill", action="store_true")
    args = ap.parse_args()
    run = pick_run(args.run)
    if args.backend == "onnx" and not (layout.export_dir(run, "larr_seed0") / "model.onnx").is_file():
        from larr.serve.export import export_onnx

        export_onnx(run, "larr_seed0")
    reqs = requests(run, 500, args.candidates, seed=1)
    print(f"run {run}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    if not args.skip_redis:
        if shutil.which("redis-server") is None:
            print("redis-server not installed (scripts/redis.sh install): skipping the Redis outage")
        else:
            redis_outage(run, args, reqs)
    if not args.skip_kill:
        kill_restart(run, args, reqs)


if __name__ == "__main__":
    main()
