"""Encoding throughput (real tokens/s) of the frozen backbone: 1 process vs N under torchrun.

    python benchmarks/dist_encode.py [--model DIR] [--texts 256] [--procs 1 2] [--threads 1]

``larr embed`` under torchrun gives each rank a contiguous share of the distinct texts
(:meth:`larr.distributed.Dist.shard`) and gathers the vectors in order (``embed._encode_shared``);
this does the same on the benchmark texts of ``encode_throughput.py`` (half long shop texts, half
short scene texts) with the prepared backbone in raw last-token mode (``larr.Encoder``, packed
float32), each process on ``--threads`` torch threads. Per N it prints the real tokens encoded,
the slowest rank's wall time, tokens/s = all tokens ÷ that time, and checks that the gathered
vectors equal the one-process ones (max |Δ|). Figures, not a test.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from larr.distributed import distributed
    from larr.llm.encode import Encoder

    sys.path.insert(0, str(Path(__file__).parent))
    from encode_throughput import synthetic_texts

    torch.set_num_threads(args.threads)
    texts = synthetic_texts(args.texts, seed=0)
    with distributed("cpu") as (dist, _):
        enc = Encoder.from_causal_lm(args.model, device="cpu")
        mine = texts[dist.shard(len(texts))]
        enc.encode(mine[:8])  # warm-up
        tokens = sum(len(x) for x in enc.model.tokenize(texts, padding=False)["input_ids"])
        dist.barrier()
        t0 = time.perf_counter()
        vecs = enc.encode(mine)
        wall = time.perf_counter() - t0
        walls = dist.sum([0.0] * dist.rank + [wall] + [0.0] * (dist.world - dist.rank - 1))
        allv = dist.gather_array(vecs)
        if dist.main:
            np.save(args.out, allv)
            print(f"RESULT {dist.world} {tokens} {max(walls):.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="causal-LM folder (default: the prepared llm.model)")
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model is None:
        from larr.config import load_config
        from larr.llm.backbone import resolve_model

        args.model = resolve_model(load_config(None).llm.model)
    if args.child:
        return child(args)
    import tempfile

    import numpy as np

    from larr.distributed import launch_command

    print(f"model {args.model}, {args.texts} texts, {args.threads} thread(s) per process, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    rows, ref = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.procs:
            out = Path(tmp) / f"v{n}.npy"
            cmd = launch_command(n, [__file__, "--child", "--model", str(args.model), "--texts", str(args.texts),
                                     "--threads", str(args.threads), "--out", str(out)])
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
            if proc.returncode or not line:
                raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
            _, world, tokens, wall = line[0].split()
            vecs = np.load(out)
            ref = vecs if ref is None else ref
            rows.append((int(world), int(tokens), float(wall), float(np.abs(vecs - ref).max())))
            print(f"  {' '.join(cmd)}", flush=True)
            print(f"N={world}: {int(tokens):,} tokens in {float(wall):.2f}s = {int(tokens) / float(wall):,.0f} tokens/s, "
                  f"max |Δ| to N={args.procs[0]}: {rows[-1][3]:.2e}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("| processes | tokens | slowest rank s | tokens/s | max abs diff |")
    print("|---|---|---|---|---|")
    for world, tokens, wall, diff in rows:
        print(f"| {world} | {tokens:,} | {wall:.2f} | {tokens / wall:,.0f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
