"""Across worlds: the full pipeline on several world seeds, then paired Δ pooled over worlds × seeds.

    python benchmarks/world_seeds.py --worlds 0,1,2 [--preset demo] [--root /tmp/world_seeds] [--set k=v ...]
                                     [--refs base_scene_ids,generic_text,larr]

Each world seed gets its own run directory (``ROOT/world<k>``), built by ``larr demo --set data.seed=k`` in a
fresh process, so nothing is reused across worlds (a finished world is reused when the script runs again:
delete its folder to redo it). Then every (row, world, model seed) is paired with the reference row of the
same world and model seed, and the per-pair Δ AUC are pooled: mean and 95 % t-interval over all worlds ×
seeds, per slice (test all / unseen / rare / frequent, valid all / unseen / rare), one table per reference
row (``--refs``; with ``larr`` among them, every ablation of the method is read as ``row − larr``). One
world's split can favour a row by luck; a difference that survives three worlds is a property of the method.

It is a benchmark, not part of the demo: 17-20 minutes per world of the demo preset on 2 quiet CPU cores
(a loaded machine can make it several times that: stage 1 is sensitive to competing processes).
Prints a table per reference and writes ``ROOT/world_seeds.json`` and ``ROOT/world_seeds.md``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from larr import layout
from larr.config import load_config
from larr.io import atomic_write_text
from larr.rec.paired import REFERENCES, paired_table
from larr.rec.rows import ROWS
from larr.report_md import PAIRED_KEYS, interval_cell, ordered_rows, table


def run_world(root: Path, world: int, preset: str, config: str, overrides: list[str]) -> Path:
    """``larr demo`` for one world seed (skipped when its report already has a ``ctr`` section)."""
    run = root / f"world{world}"
    report = layout.report_json(run)
    if report.is_file() and json.loads(report.read_text()).get("ctr"):
        print(f"world {world}: reusing {run}", flush=True)
        return run
    cmd = [sys.executable, "-m", "larr", "demo", "--out", str(run), "--config", config,
           "--set", f"data.seed={world}", "--set", f"data.preset={preset}", *sum((["--set", o] for o in overrides), [])]
    print(f"world {world}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"world {world}: done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return run


def world_runs(run: Path) -> tuple[dict[tuple[str, int], dict], list[str], list[int]]:
    """Every finished (row, seed) of one world's comparison: its metrics.json."""
    report = json.loads(layout.report_json(run).read_text())
    setup = report["stage3"]
    rows, seeds = list(ordered_rows(report)), list(setup["seeds"])
    done = {}
    for r in rows:
        for s in seeds:
            done[(r, s)] = json.loads((layout.stage3_run(run, layout.run_name(r, s)) / layout.METRICS_FILE).read_text())
    return done, rows, seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", default="0,1,2", help="Comma-separated world (data) seeds.")
    ap.add_argument("--preset", default="demo", help="World size: quick | demo | large.")
    ap.add_argument("--root", type=Path, default=Path("/tmp/world_seeds"), help="Folder of the per-world runs.")
    ap.add_argument("--config", default="configs/demo.yaml", help="Config of every world's demo run.")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="Extra dotted override, repeatable.")
    ap.add_argument("--refs", default=None,
                    help="Comma-separated reference rows: a table of every other row minus each, e.g. "
                    f"{','.join(REFERENCES)},larr (default: {','.join(REFERENCES)}, those trained).")
    args = ap.parse_args()
    refs = tuple(args.refs.split(",")) if args.refs else REFERENCES
    if bad := [r for r in refs if r not in ROWS]:
        ap.error(f"--refs: unknown row {', '.join(bad)} (rows: {', '.join(ROWS)})")
    load_config(args.config, args.overrides)  # a bad override fails here, before the long runs
    worlds = [int(w) for w in args.worlds.split(",")]
    pooled: dict[tuple[str, tuple[int, int]], dict] = {}
    rows: list[str] = []
    for w in worlds:
        done, w_rows, seeds = world_runs(run_world(args.root, w, args.preset, args.config, args.overrides))
        rows = rows or w_rows
        pooled.update({(r, (w, s)): m for (r, s), m in done.items()})
    keys = sorted({k for _, k in pooled})
    rows = [r for r in rows if all((r, k) in pooled for k in keys)]
    unknown = [r for r in refs if r not in rows]
    if unknown and args.refs:
        raise SystemExit(f"--refs: {', '.join(unknown)} not trained in every world (rows: {', '.join(rows)})")
    paired = paired_table(pooled, rows, keys, references=refs)
    result = {"worlds": worlds, "preset": args.preset, "pairs": [list(k) for k in keys], "paired": paired}
    lines = [f"# Across worlds {worlds} (preset {args.preset}): Δ AUC paired by (world, seed), "
             f"{len(keys)} pairs per row; mean [95 % t-interval], bold: excludes 0", ""]
    for ref_key, entries in paired.items():
        names = [r for r in rows if r in entries]
        lines += [f"## {ref_key.replace('_', ' ', 1)}", "",
                  table(["model", *(k for k, _ in PAIRED_KEYS)],
                        [[f"`{n}`", *(interval_cell(entries[n][k]) for _, k in PAIRED_KEYS)] for n in names]), ""]
    text = "\n".join(lines)
    atomic_write_text(args.root / "world_seeds.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.root / "world_seeds.md", text + "\n")
    print(text)
    print(f"\nwritten {args.root / 'world_seeds.md'}")


if __name__ == "__main__":
    main()
