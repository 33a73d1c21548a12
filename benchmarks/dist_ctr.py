"""CTR training throughput and peak memory on the `large` world, streamed: 1 process vs N under torchrun.

    python benchmarks/dist_ctr.py [--run /tmp/larr_large] [--steps 300] [--procs 1 2] [--row larr]

Makes (once) the `large` synthetic world (≥ 20M impressions) and, for rows that read LLM vectors,
a store of random stand-in vectors for every scene value (training cost does not depend on what
the vectors mean). Then, for each process count, runs

    python -m torch.distributed.run --nproc_per_node N -m larr train --out RUN --model ROW \\
        --set stream.mode=stream --set stream.max_steps_per_epoch=STEPS --set rec.epochs=1 ...

(a plain ``python -m larr train`` for N = 1) and prints, per N: trained samples/s (the epoch's
``train_samples_per_s``: global batch rows ÷ seconds of the training loop, reading and encoding the
stream included, validation not), the fit time (with its validation pass over ``stream.eval_rows``
rows), the command's wall time (with the one-pass vocabularies and the
valid/test encoding), the peak RSS of the largest process (``getrusage(RUSAGE_CHILDREN)`` of a fresh parent per run) and the
peak of all processes together (psutil, sampled every 0.2 s). Figures, not a test: the same rows
train in both cases (the ranks share each global batch), so only time and memory differ.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def ensure_world(run: Path, row: str) -> None:
    if not (run / "data" / "dataset.json").is_file():
        from larr.data.synth import generate

        print(f"generating the large world into {run / 'data'} ...", flush=True)
        generate(run / "data", preset="large", seed=0, progress=False)
    from larr.config import load_config
    from larr.rec.train import model_setup

    _, store = model_setup(load_config(None, ["experiment.larr_encoder=minilm"]), row)
    if store is None or (run / "embeddings" / store / "vectors.safetensors").is_file():
        return
    from larr.rec.stream import build_spec_streamed
    from larr.store import DiskStore

    spec, _ = build_spec_streamed(run / "data")
    keys = list(spec.scene_table().key_texts())
    rng = np.random.default_rng(0)
    with DiskStore(run / "embeddings" / store, encoder="random:bench", autoflush=False) as s:
        s.put_many(dict(zip(keys, rng.normal(size=(len(keys), 64)).astype(np.float32))))
    print(f"stand-in store: {len(keys)} scene vectors of dim 64", flush=True)


RUSAGE_WRAPPER = """import resource, subprocess, sys
rc = subprocess.run(sys.argv[1:]).returncode
print("maxrss_kib", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
sys.exit(rc)"""


def tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_train(run: Path, row: str, procs: int, sets: list[str]) -> dict:
    from larr.distributed import launch_command

    cmd = launch_command(procs, ["-m", "larr", "train", "--out", str(run), "--model", row,
                                 *[x for s in sets for x in ("--set", s)]])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    # a fresh parent per run, so its RUSAGE_CHILDREN peak is this run's alone
    proc = subprocess.Popen([sys.executable, "-c", RUSAGE_WRAPPER, *cmd], env=env, cwd=run, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"train failed ({' '.join(cmd)}):\n{out[-3000:]}")
    largest = int(out.strip().splitlines()[-1].split()[-1])  # KiB: the largest process of the run
    m = json.loads((run / "stage3" / f"{row}_seed0" / "metrics.json").read_text())
    return {"procs": procs, "world_size": m["world_size"], "streamed": m["streamed"], "steps": m["steps"],
            "samples_per_s": m["history"][-1]["train_samples_per_s"], "train_seconds": m["train_seconds"],
            "wall_s": wall, "peak_rss_gib": largest / 2**20,
            "peak_rss_all_gib": peak[0] / 2**30, "test_auc": m["test"]["auc"],
            "cmd": " ".join(cmd)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("/tmp/larr_large"))
    ap.add_argument("--row", default="larr")
    ap.add_argument("--steps", type=int, default=300, help="stream.max_steps_per_epoch (one epoch)")
    ap.add_argument("--eval-rows", type=int, default=200_000, help="stream.eval_rows; 0 = every valid/test row")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--set", action="append", default=[], help="more --set overrides for larr train")
    args = ap.parse_args()
    args.run.mkdir(parents=True, exist_ok=True)
    ensure_world(args.run, args.row)
    from larr.rec.stream import count_rows

    print(f"{count_rows(args.run / 'data'):,} impressions in {args.run / 'data'}; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    sets = ["device=cpu", "experiment.larr_encoder=minilm", "stream.mode=stream", "rec.epochs=1",
            f"stream.max_steps_per_epoch={args.steps}", f"stream.eval_rows={args.eval_rows or 'null'}", *args.set]
    results = []
    for n in args.procs:
        r = run_train(args.run, args.row, n, sets)
        results.append(r)
        print(f"  {r['cmd']}", flush=True)
        print(f"N={n}: {r['samples_per_s']:,.0f} samples/s ({r['steps']} steps in {r['train_seconds']:.1f}s), "
              f"wall {r['wall_s']:.1f}s, peak RSS {r['peak_rss_gib']:.2f} GiB per process, "
              f"{r['peak_rss_all_gib']:.2f} GiB all processes, test AUC {r['test_auc']:.4f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("| processes | samples/s | fit s | wall s | peak RSS / process (GiB) | peak RSS all (GiB) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['procs']} | {r['samples_per_s']:,.0f} | {r['train_seconds']:.1f} | {r['wall_s']:.1f} | "
              f"{r['peak_rss_gib']:.2f} | {r['peak_rss_all_gib']:.2f} |")


if __name__ == "__main__":
    main()
