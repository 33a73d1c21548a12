"""Latency of ranking 200 candidates: LARR's cached scene vectors vs an LLM call per request.

    python benchmarks/serve_latency.py [--run RUN_DIR] [--candidates 200] [--n 300] [--whole-n 40]

Three ways to serve the same request (a test-split scene, a user, 200 random shops):

* ``larr (torch)``  — stage3/larr_seed0: every scene value's LLM vector from the cache, the
                      scene module once per request, all candidates in one batched forward;
* ``larr (onnx)``   — the same graph exported by ``larr export``, run by onnxruntime;
* ``whole_text``    — stage3/whole_text_seed0 served the way that design must be served: the
                      run's stage-2 LLM encodes the whole concatenated scene text per request
                      (a whole scene is a combination of ~10 features: caching it per value is
                      exactly what the design cannot do).

With ``--llm smollm2`` (or a model folder) a fourth row times the whole_text design with that
LLM's per-request cost: the quick run's stage-2 model is a toy Llama (~100k parameters) whose
encode costs about as much as the CTR model, so it says nothing about a real LLM. The stand-in
encodes the same whole-scene text with SmolLM2-135M (raw last-token mode) and truncates or pads
its vector to the model's width: its *scores* are meaningless, its *latency* is the design's.

Each is timed in-process (``Ranker.rank``) and over HTTP (uvicorn on 127.0.0.1, one request at
a time, JSON both ways). Prints p50/p99 per path and the speed-up of each LARR path over
``whole_text``. Default run: /tmp/runs/demo when its stage-2 and larr row exist, else /tmp/serve_run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import httpx  # noqa: E402
import torch  # noqa: E402

from serve_common import ThreadServer, pct, pick_run, requests  # noqa: E402

from larr import layout  # noqa: E402


def time_in_process(ranker, reqs: list[dict], warmup: int = 10) -> list[float]:
    for r in reqs[:warmup]:
        ranker.rank(r["user_id"], r["scene"], r["candidates"])
    out = []
    for r in reqs:
        t = time.perf_counter()
        ranker.rank(r["user_id"], r["scene"], r["candidates"])
        out.append(time.perf_counter() - t)
    return out


def time_http(ranker, reqs: list[dict], warmup: int = 10) -> list[float]:
    """Sequential POSTs to uvicorn on 127.0.0.1 serving ``ranker`` (client and server in this process)."""
    from larr.serve.app import create_app

    out = []
    with ThreadServer(create_app(ranker)) as base, httpx.Client(base_url=base) as client:
        for i, r in enumerate(reqs[:warmup] + reqs):
            t = time.perf_counter()
            resp = client.post("/v1/rank", json=r)
            dt = time.perf_counter() - t
            resp.raise_for_status()
            if i >= warmup:
                out.append(dt)
    return out


class StandInEncoder:
    """Encodes with another LLM (timing only): its vectors cut or zero-padded to ``dim``."""

    def __init__(self, model: str, dim: int) -> None:
        from larr.llm.backbone import resolve_model
        from larr.llm.encode import Encoder

        folder = resolve_model(model)
        self.encoder, self.dim, self.name = Encoder.from_causal_lm(folder, device="cpu", max_length=256), dim, "stand-in"
        self.label = folder.name

    def encode(self, texts: list[str]):
        import numpy as np

        v = self.encoder.encode(texts, batch_size=64)
        out = np.zeros((len(texts), self.dim), np.float32)
        out[:, : min(self.dim, v.shape[1])] = v[:, : self.dim]
        return out


class WholeTextCost:
    """The whole_text design's per-request work when the run has no trained whole_text model (the
    demo skips that row on CPU): the stage-2 LLM encodes the whole rendered scene, then the
    candidates are scored (by the cached LARR path — the scoring cost of either design is the same
    small forward). Timed in-process only."""

    def __init__(self, larr, run: Path) -> None:
        from larr.data.schema import read_scene_features
        from larr.rec.features import WHOLE_SEP

        self.larr, self.sep = larr, WHOLE_SEP
        self.features = {f.name: f for f in read_scene_features(layout.data_dir(run))}

    def rank(self, user_id, scene: dict, candidates: list):
        text = self.sep.join(self.features[k].render(v) for k, v in scene.items() if k in self.features)
        self.larr.scenes.encoder.encode([text])
        return self.larr.rank(user_id, scene, candidates)

    def close(self) -> None: ...


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="run directory (default: /tmp/runs/demo if finished, else /tmp/serve_run)")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--n", type=int, default=300, help="timed requests per LARR path and mode")
    ap.add_argument("--whole-n", type=int, default=40, help="timed requests of the whole_text path (LLM per request)")
    ap.add_argument("--threads", type=int, default=1, help="torch/onnxruntime threads (the server's default: 1)")
    ap.add_argument("--llm", default=None, help="also time whole_text with this LLM's encode cost (e.g. smollm2)")
    args = ap.parse_args()

    from larr.serve.artifacts import ServeError, read_export
    from larr.serve.export import export_onnx
    from larr.serve.ranker import Ranker
    from larr.serve.settings import ServeSettings

    run = pick_run(args.run)
    settings = ServeSettings(threads=args.threads)
    torch.set_num_threads(args.threads)
    reqs = requests(run, args.n, args.candidates)
    try:
        read_export(run, "larr_seed0")
    except ServeError:
        print(f"exporting larr_seed0 to ONNX ({run}/export) ...", flush=True)
        export_onnx(run, "larr_seed0")
    print(f"run {run}; {args.candidates} candidates per request; {os.cpu_count()} CPUs; {args.threads} thread(s)",
          flush=True)
    # the LARR paths share one encoder with the whole_text path (the run's stage-2 model)
    larr = Ranker.load(run, "larr_seed0", "torch", settings=settings)
    onnx = Ranker.load(run, "larr_seed0", "onnx", settings=settings, encoder=larr.scenes.encoder)
    try:
        whole = Ranker.load(run, "whole_text_seed0", "torch", settings=settings, encoder=larr.scenes.encoder,
                            cache=False)
        whole_name = "whole_text (stage-2 LLM per request)"
    except ServeError:  # no whole_text row trained here: time its LLM call + scoring, in-process only
        whole, whole_name = WholeTextCost(larr, run), "whole_text (stage-2 LLM encode + scoring, in-process)"
    paths = [("larr (torch, cached)", larr, args.n), ("larr (onnx, cached)", onnx, args.n),
             (whole_name, whole, args.whole_n)]
    if args.llm and isinstance(whole, Ranker):
        stand_in = StandInEncoder(args.llm, whole.graph.model.dims.llm_dim)
        stand_in.name = larr.scenes.encoder.name  # passes the ranker's encoder check: timing only
        big = Ranker.load(run, "whole_text_seed0", "torch", settings=settings, encoder=stand_in, cache=False)
        paths.append((f"whole_text ({stand_in.label} per request, timing stand-in)", big, args.whole_n))
    rows = []
    for name, ranker, n in paths:
        inproc = time_in_process(ranker, reqs[:n])
        http = time_http(ranker, reqs[:n]) if isinstance(ranker, Ranker) else [float("nan")]
        rows.append((name, n, pct(inproc, 50), pct(inproc, 99), pct(http, 50), pct(http, 99)))
        print(f"  measured {name}", flush=True)
    base = rows[2]  # whole_text with the run's own stage-2 LLM
    print()
    print("speed-up: whole_text (stage-2 LLM) p50 / this path's p50; with --llm, also vs the last row")
    print("| path | n | in-process p50 ms | in-process p99 ms | HTTP p50 ms | HTTP p99 ms | speed-up (in-proc / HTTP) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, n, a50, a99, h50, h99 in rows:
        ratio = f"{base[2] / a50:.3g}x / {base[4] / h50:.3g}x"
        print(f"| {name} | {n} | {a50:.2f} | {a99:.2f} | {h50:.2f} | {h99:.2f} | {ratio} |")
    print()
    if args.llm:
        last = rows[-1]
        for name, n, a50, a99, h50, h99 in rows[:2]:
            print(f"{name}: {last[2] / a50:.0f}x faster in-process (p50), {last[3] / a99:.0f}x (p99), "
                  f"{last[4] / h50:.0f}x over HTTP (p50) than {last[0]}")
    print(f"models: {larr.version} ; {getattr(whole, 'version', whole_name)} ; encoder {larr.scenes.encoder.name if larr.scenes.encoder else None}")
    for _, r, _ in paths:
        r.close()


if __name__ == "__main__":
    main()
