"""Shared fixtures: a tiny, valid data directory written with pyarrow (no generator needed),
and a real, throw-away ``redis-server`` for the Redis store and serving tests."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from larr.data.schema import SceneFeature, write_dataset_meta
from larr.io import write_parquet
from serve_helpers import stop_process

SCENE = [
    SceneFeature("weather", "str", "weather: {value}", "Weather at request time."),
    SceneFeature("hour", "int", "hour: {value}:00", "Local hour."),
]


def write_tiny_data(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    shops = pa.table(
        {
            "shop_id": [0, 1],
            "name": ["Hot Pot House", "Ice Dream"],
            "category": ["hotpot", "ice cream"],
            "district": ["Old Town", "Riverside"],
            "price_level": [3, 1],
            "rating": [4.5, 4.1],
            "description": ["A warming spicy broth.", "Iced treats for hot days."],
            "menu": ["beef broth ¥68", "vanilla cone ¥9"],
            "open_day": [0, 0],
        }
    )
    users = pa.table(
        {
            "user_id": [0],
            "home_district": ["Old Town"],
            "work_district": ["Riverside"],
            "price_sensitivity": [0.3],
            "profile": ["An office worker who likes spicy food."],
        }
    )
    imps = pa.table(
        {
            "request_id": [0, 0, 1, 1],
            "ts": [100, 100, 200, 200],
            "day": [0, 0, 1, 1],
            "user_id": [0, 0, 0, 0],
            "shop_id": [0, 1, 0, 1],
            "position": [0, 1, 0, 1],
            "label": [1, 0, 0, 1],
            "split": ["train", "train", "test", "test"],
            "unseen_scene": [False, False, True, True],
            "weather": ["heavy rain", "heavy rain", "heatwave", "heatwave"],
            "hour": [12, 12, 19, 19],
        }
    )
    write_parquet(shops, d / "shops.parquet")
    write_parquet(users, d / "users.parquet")
    write_parquet(imps, d / "impressions.parquet")
    write_dataset_meta(d, SCENE, name="tiny")
    return d


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_tiny_data(tmp_path / "data")


# ---------------------------------------------------------------------------- redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a private ``redis-server`` started for this test session.

    No persistence (``--save '' --appendonly no``), stopped at teardown. Tests share the server,
    so each one must use its own namespace: append ``?namespace=…`` or use ``fresh_redis_url``.
    Skips (not fails) where ``redis-server`` is not installed; ``.ci/run`` installs it.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (apt-get install redis-server; .ci/run installs it)")
    workdir = tmp_path_factory.mktemp("redis")
    for _ in range(3):  # a free port can be taken between choosing and binding it: retry
        port = _free_port()
        log = open(workdir / f"redis-{port}.log", "wb")
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline and not _pings(port):
            time.sleep(0.05)
        if proc.poll() is None and _pings(port):
            break
        proc.kill()
        proc.wait()
        log.close()
    else:
        pytest.fail(f"redis-server did not start: {(workdir / f'redis-{port}.log').read_text()[-500:]}")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def fresh_redis_url(redis_url: str) -> str:
    """``redis_url`` with a namespace of its own, so one test never sees another's keys."""
    return f"{redis_url}?namespace=test-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------- stage 3


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    """The quick world (≈20k rows) plus stub per-feature and whole-scene vectors as the 'minilm' store."""
    from larr import embed
    from larr.config import load_config
    from larr.data.synth import generate
    from test_embed import StubEncoder

    run = tmp_path_factory.mktemp("run")
    generate(run / "data", preset="quick", seed=0, progress=False)
    cfg = load_config(None, ["device=cpu", "embed.encoders=[minilm]", "embed.whole_scene=[minilm]",
                             "embed.shops=none"])
    embed.run(cfg, run, encoders={"minilm": StubEncoder("stub:1", dim=8)}, log=lambda m: None)
    return run
