"""Shared by the serving benchmarks: which run to measure, realistic requests, percentiles, a local server."""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from larr import layout

DEMO_RUN = Path("/tmp/runs/demo")  # the full demo (SmolLM2 stage 2), when it has finished
QUICK_RUN = Path("/tmp/serve_run")  # `larr demo --quick --out /tmp/serve_run` (toy LLM)


def pick_run(arg: str | None) -> Path:
    """``--run``, else the full demo run if its larr row and stage-2 model exist, else the quick run."""
    if arg:
        return Path(arg)
    if layout.stage3_run(DEMO_RUN, "larr_seed0").is_dir() and layout.stage2_dir(DEMO_RUN).is_dir():
        return DEMO_RUN
    return QUICK_RUN


def scenes_and_shops(run: Path, n: int, seed: int = 0) -> tuple[list[dict], list[int], list[int]]:
    """``n`` real scenes of the test split (as JSON values), and the shop and user ids of the world."""
    from larr.data.schema import read_scene_features

    data = layout.data_dir(run)
    feats = read_scene_features(data)
    imps = pd.read_parquet(data / "impressions.parquet", columns=["request_id", "user_id", "split",
                                                                   *[f.name for f in feats]])
    firsts = imps[imps["split"] == "test"].drop_duplicates("request_id")
    rows = firsts.sample(n=min(n, len(firsts)), random_state=seed, replace=len(firsts) < n)
    scenes = [{f.name: (v.item() if hasattr(v, "item") else v) for f, v in zip(feats, r)}
              for r in rows[[f.name for f in feats]].itertuples(index=False)]
    shops = pd.read_parquet(data / "shops.parquet", columns=["shop_id"])["shop_id"].tolist()
    users = rows["user_id"].tolist()
    return scenes, shops, users


def requests(run: Path, n: int, candidates: int, seed: int = 0) -> list[dict]:
    """``n`` ranking requests: a test-split scene and user, ``candidates`` random shops each."""
    scenes, shops, users = scenes_and_shops(run, n, seed)
    rng = random.Random(seed)
    return [{"user_id": u, "scene": s, "candidates": rng.sample(shops, min(candidates, len(shops)))}
            for u, s in zip(users, scenes)]


def pct(times_s: list[float], q: float) -> float:
    """Percentile in milliseconds."""
    return float(np.percentile(np.asarray(times_s) * 1e3, q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """uvicorn serving an app object in a background thread on 127.0.0.1 (for in-process apps)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo += [c for c, (ppid, _) in stats.items() if ppid == p]
    return total


class ProcessServer:
    """``larr serve`` in its own process(es) on a free 127.0.0.1 port; stopped on exit.

    Its output goes to a temporary log whose tail is shown if it fails to start; a start that
    fails (e.g. the chosen port was taken meanwhile) is retried once on another port.
    """

    def __init__(self, args: list[str], env: dict | None = None, ready_s: float = 180) -> None:
        self.args, self.env, self.ready_s = args, env, ready_s

    def __enter__(self) -> str:
        try:
            return self._start()
        except RuntimeError as e:
            print(f"server start failed, retrying once: {e}", file=sys.stderr)
            return self._start()

    def _start(self) -> str:
        import tempfile

        import httpx

        self.port = free_port()
        cmd = [sys.executable, "-m", "larr", "serve", *self.args, "--host", "127.0.0.1", "--port", str(self.port)]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, env={**os.environ, **(self.env or {})}, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + self.ready_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                tail = self.log.read().decode(errors="replace")[-1500:]
                self.log.close()
                raise RuntimeError(f"server exited with {self.proc.returncode}: {' '.join(cmd)}\n{tail}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.__exit__()
        raise RuntimeError("server did not become ready")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
