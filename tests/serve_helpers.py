"""A tiny trained run directory for the serving tests, built once per test session (~10 s).

The quick synthetic world, a tiny random Llama saved as a real stage-2 folder (so the server
loads its encoder exactly as in production), the embed stage with that encoder, and one tiny
``larr`` row trained for one epoch. Shared by test_serve.py and test_export.py through a
module-level cache instead of conftest.py, which other suites own.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_REC = ["rec.embed_dim=4", "rec.hidden=[16]", "rec.cross_layers=1", "rec.scene_dim=8", "rec.scene_heads=2",
            "rec.scene_layers=1", "rec.scene_size=8", "rec.align_dim=8", "rec.batch_size=512", "rec.lr=1e-2",
            "rec.epochs=1", "rec.threads=1", "rec.patience=5"]
_RUN: dict[str, Path] = {}


def build_run(root: Path) -> Path:
    from larr import embed
    from larr.config import load_config, save_config
    from larr.data.synth import generate
    from larr.llm.backbone import make_tiny_model
    from larr.llm.embedding_model import EmbeddingModel
    from larr.rec.train import train_model

    run = root / "run"
    generate(run / "data", preset="quick", seed=0, progress=False)
    lm = make_tiny_model(root / "tiny_lm", vocab_size=300, hidden_size=32, num_layers=1, num_heads=2)
    torch.manual_seed(0)
    EmbeddingModel.from_causal_lm_folder(lm, head_dim=16, max_length=64).save_pretrained(run / "stage2")
    cfg = load_config(None, ["device=cpu", "embed.encoders=[larr]", "embed.whole_scene=[]", "embed.shops=none",
                             *TINY_REC])
    save_config(cfg, run)
    embed.run(cfg, run, progress=False, log=lambda m: None)
    train_model(cfg, run, "larr", seed=0)
    return run


def serve_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny run (built on first use). Tests must not write into it: copy what they change."""
    if "run" not in _RUN:
        torch.set_num_threads(1)
        _RUN["run"] = build_run(tmp_path_factory.mktemp("serve"))
    return _RUN["run"]


def copy_store(run: Path, dest: Path) -> Path:
    """A private copy of the run's embedding store (so a test's new vectors stay its own)."""
    return Path(shutil.copytree(run / "embeddings" / "larr", dest))


class CountingEncoder:
    """Wraps a ``TextEncoder``; records every text, optionally sleeps or fails first."""

    def __init__(self, inner, delay: float = 0.0, fail: bool = False) -> None:
        self.inner, self.name, self.delay, self.fail = inner, inner.name, delay, fail
        self.calls: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        import time

        self.calls.extend(texts)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("encoder down")
        return self.inner.encode(texts)


def settle(ranker, timeout: float = 20) -> None:
    """Wait until the ranker's background encodes are done (a never-seen value is answered at once and encoded
    behind the request)."""
    import time

    deadline = time.monotonic() + timeout
    while ranker.scenes._inflight:
        assert time.monotonic() < deadline, "background encodes did not finish"
        time.sleep(0.01)


def request_rows(run: Path, unseen: bool, n: int = 1) -> list[dict]:
    """``n`` test requests of the quick world: user, scene values, shops and row indices of the test split."""
    import pandas as pd

    from larr.rec.features import FeatureSpec

    spec = FeatureSpec.load(run / "stage3" / "larr_seed0" / "features.json")
    imps = pd.read_parquet(run / "data" / "impressions.parquet")
    test = imps[imps["split"] == "test"].reset_index(drop=True)
    out = []
    for rid in test[test["unseen_scene"] == unseen]["request_id"].unique()[:n]:
        rows = test[test["request_id"] == rid]
        first = rows.iloc[0]
        scene = {f.name: (first[f.name].item() if hasattr(first[f.name], "item") else first[f.name])
                 for f in spec.scene}
        out.append({"user_id": int(first["user_id"]), "scene": scene, "candidates": rows["shop_id"].tolist(),
                    "rows": rows.index.to_numpy()})
    return out


def metric(text: str, name: str) -> float:
    """Value of one sample line of Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate a server a test started; kill it if it does not exit in ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, store: Path, env: dict | None = None, args: list[str] = (),
                 ready_s: float = 300) -> tuple[subprocess.Popen, str]:
    """``python -m larr serve`` on a free 127.0.0.1 port with ``store``; (process, base URL) once /healthz is 200.
    The caller stops it with :func:`stop_process`. ``ready_s`` only bounds the wait (a loaded 2-core machine
    has taken over 90 s to import torch and load the model); a healthy start returns in a few seconds."""
    import sys
    import time

    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "larr", "serve", "--run", str(run), "--port", str(port),
                             "--store", str(store), "--no-access-log", *args],
                            env={**os.environ, "LARR_API_KEY": "", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read().decode()[-2000:])
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"server did not become ready in {ready_s} s")
        time.sleep(0.2)


def run_encoder(run: Path):
    """The run's real (tiny) stage-2 encoder, as serving builds it (the test modules load it once each)."""
    from larr.config import load_config
    from larr.encoders import load_encoder

    return load_encoder("larr", load_config(run / "config.yaml", ["device=cpu"]), run)
