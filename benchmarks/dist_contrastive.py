"""What gathering in-batch negatives across processes does to the stage-2 loss: 1 process vs N with
``dist.gather_negatives`` on and off, same global batch.

    python benchmarks/dist_contrastive.py [--run /tmp/larr_dist_c] [--procs 2] [--steps 60] [--tiny]

Runs ``larr contrastive`` (no evaluation) on the quick world three times — one process; N processes
gathering negatives (every rank's pairs in every InfoNCE: the one-process loss); N processes each
contrasting only its own ``batch_size / N`` pairs — and prints the first and last loss, the
seconds, and the mean cosine between the vectors the N-process models give to the heldout texts and
the one-process model's. Without gathering an InfoNCE over B/N candidates is an easier task (its
loss at chance is log(B/N) instead of log B), so its loss is lower while each step teaches less.
``--tiny`` uses a tiny random Llama instead of the prepared backbone (seconds, for a smoke run).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def contrastive(run: Path, procs: int, sets: list[str]) -> tuple[dict, float, str]:
    from larr.distributed import launch_command

    cmd = launch_command(procs, ["-m", "larr", "contrastive", "--out", str(run), *[x for s in sets for x in ("--set", s)]])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=run, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads((run / "report.json").read_text())["stage2"], time.perf_counter() - t0, " ".join(cmd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("/tmp/larr_dist_c"))
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    import numpy as np

    from larr.data.synth import generate
    from larr.llm.encode import Encoder

    data = args.run / "data"
    if not (data / "dataset.json").is_file():
        generate(data, preset="quick", seed=0, progress=False)
    sets = ["device=cpu", f"contrastive.max_steps={args.steps}", f"contrastive.batch_size={args.batch}",
            "contrastive.evaluate=false"]
    if args.tiny:
        from larr.llm.backbone import make_tiny_model

        sets.append(f"llm.model={make_tiny_model(args.run / 'tiny_lm', vocab_size=400, num_layers=2)}")
    texts = [f"weather: {w}" for w in ("heavy rain", "sunny", "snow", "typhoon", "heatwave")] + [
        f"time slot: {t}" for t in ("breakfast", "lunch", "dinner", "late night")]
    rows = []
    for name, procs, extra in (("1 process", 1, []),
                               (f"{args.procs} processes, gathered negatives", args.procs, ["dist.gather_negatives=true"]),
                               (f"{args.procs} processes, local negatives", args.procs, ["dist.gather_negatives=false"])):
        run = args.run / name.replace(" ", "_").replace(",", "")
        (run / "data").mkdir(parents=True, exist_ok=True)
        for f in data.iterdir():
            target = run / "data" / f.name
            if not target.exists():
                target.symlink_to(f)
        stats, wall, cmd = contrastive(run, procs, [*sets, *extra])
        vecs = Encoder.from_pretrained(run / "stage2", device="cpu").encode(texts)
        rows.append((name, stats, wall, vecs, cmd))
        print(f"  {cmd}\n{name}: loss {stats['first_loss']:.4f} → {stats['last_loss']:.4f}, {wall:.0f}s", flush=True)
    ref = rows[0][3]
    print(f"\nbatch {args.batch} pairs per type and step, {args.steps} steps; the loss is the weighted sum of the "
          f"pair types' InfoNCE terms, each at chance "
          f"log {args.batch} = {np.log(args.batch):.3f}, log {args.batch // args.procs} = "
          f"{np.log(args.batch // args.procs):.3f}")
    print("| run | first loss | last loss | wall s | mean cosine to the 1-process vectors |")
    print("|---|---|---|---|---|")
    for name, stats, wall, vecs, _ in rows:
        cos = float(np.mean(np.sum(vecs * ref, axis=1)))
        print(f"| {name} | {stats['first_loss']:.4f} | {stats['last_loss']:.4f} | {wall:.0f} | {cos:.4f} |")


if __name__ == "__main__":
    main()
