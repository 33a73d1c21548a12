"""Stage-3 variants on a finished run: a row at other hyper-parameters, paired by seed with the comparison.

    python benchmarks/stage3_variants.py --run RUN_DIR [--run ...] --variant NAME[@ROW]=key=value[,key=value...] [--variant ...]
        [--row larr] [--seeds 0,1,2,3,4] [--workers 2] [--against base_scene_ids,larr]

Each variant trains its row (``@ROW``, else ``--row``) with the dotted overrides
(``rec.align_with=scene_ids,rec.align_stop_grad=true``; a ``rec`` field wins over the row's own overrides, so
``vec@larr=rec.scene_ids=false`` is `larr` without scene IDs) on the run's split, features and vectors, as
``RUN_DIR/stage3/variants/<NAME>_seed<k>`` (a finished run with the same config is reused, so an interrupted
call resumes). Then each variant is paired seed by seed with the rows named by ``--against`` (finished runs
of the comparison, ``larr evaluate``, or variants of this call: ``ids30@base_scene_ids=rec.id_drop_rows=30``
and ``--against ids30`` read every other variant against the ID row trained the same way) on every slice of
test and valid: mean Δ AUC and a 95 % t-interval, bold where it excludes 0. Defaults are chosen on the valid columns;
the test columns are reported, never selected on. It also prints each variant's scene-input probes (test
Δ AUC with the scene vector replaced by its batch mean / shuffled; larr.rec.probe) and mean epochs.

Several ``--run`` (the worlds of ``benchmarks/world_seeds.py``) pool the pairs over runs × seeds: a variant is
trained on each world, and its Δ is read over all of them. Writes ``variants.md`` (appending) and
``variants.json`` into the run directory (several: their common parent) and prints the same tables.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from larr import layout
from larr.config import load_config
from larr.io import atomic_write_text
from larr.rec.jobs import Job, run_jobs
from larr.rec.paired import paired_table
from larr.rec.probe import probe_saved_run
from larr.rec.rows import ROWS
from larr.rec.train import finished_run, load_features, split_slices
from larr.report_md import PAIRED_KEYS, interval_cell, table


def parse_variant(text: str, default_row: str) -> tuple[str, str, list[str]]:
    """``NAME[@ROW]=key=value[,key=value...]`` → (name, row, overrides)."""
    head, _, overrides = text.partition("=")
    name, _, row = head.partition("@")
    if not name or not overrides:
        raise SystemExit(f"--variant {text!r}: expected NAME[@ROW]=key=value[,key=value...]")
    row = row or default_row
    if row not in ROWS:
        raise SystemExit(f"--variant {text!r}: unknown row {row!r} (rows: {', '.join(ROWS)})")
    return name, row, overrides.split(",")


def finished_runs(run: Path, variants: dict, rows: dict[str, str], refs: tuple[str, ...], seeds: list[int],
                  workers: int) -> tuple[dict[tuple[str, int], dict], int]:
    """Metrics of every reference and variant on one run directory (training the variants not done yet)."""
    spec, splits, fp = load_features(run)
    test_slices = split_slices(spec, splits, "test", load_config(layout.config_file(run)).experiment.rare_below)
    done: dict[tuple[str, int], dict] = {}
    for ref in (r for r in refs if r not in variants):  # the comparison's runs as they were trained
        for s in seeds:
            path = layout.stage3_run(run, layout.run_name(ref, s)) / layout.METRICS_FILE
            if not path.is_file():
                raise SystemExit(f"{path}: not found (run `larr evaluate --out {run}`)")
            done[(ref, s)] = json.loads(path.read_text())
            if done[(ref, s)].get("data") != fp:
                raise SystemExit(f"{path}: trained on other data than {run} holds now")
            if done[(ref, s)].get("store") and "probe_test" not in done[(ref, s)]:
                done[(ref, s)]["probe_test"] = probe_saved_run(run, layout.run_name(ref, s), splits, test_slices)
    todo: list[tuple[str, Job]] = []
    for name, overrides in variants.items():
        # a variant's rec fields win over its row's own overrides (a row fixes e.g. scene_ids or align_weight)
        forced = [f"experiment.force_rec.{o.removeprefix('rec.')}" for o in overrides if o.startswith("rec.")]
        cfg = load_config(layout.config_file(run), [*overrides, *forced])
        for s in seeds:
            rid = f"variants/{name}_seed{s}"
            m = finished_run(cfg, run, rows[name], s, fp, run_id=rid)
            if m is None:
                todo.append((name, Job(cfg, rows[name], s, rid)))
            else:
                done[(name, s)] = m
    for (name, job), m in zip(todo, run_jobs([j for _, j in todo], run, workers)):
        done[(name, job.seed)] = m
    return done, len(todo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, action="append", required=True,
                    help="A run directory with a finished `larr evaluate` (repeatable: pooled over runs × seeds, "
                    "e.g. the worlds of benchmarks/world_seeds.py).")
    ap.add_argument("--variant", action="append", required=True,
                    help="NAME[@ROW]=key=value[,key=value...] (repeatable); ROW defaults to --row.")
    ap.add_argument("--row", default="larr", help="Row of the comparison the variants modify (when they name none).")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--against", default="base_scene_ids,larr",
                    help="Comparison rows (or variants of this call) to pair with.")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    refs = tuple(args.against.split(","))
    parsed = [parse_variant(v, args.row) for v in args.variant]
    variants = {name: o for name, _, o in parsed}
    rows = {name: row for name, row, _ in parsed}
    t0, trained = time.perf_counter(), 0
    done: dict[tuple[str, tuple[int, int]], dict] = {}  # (row or variant, (run index, seed)) → metrics
    for i, run in enumerate(args.run):
        one, n = finished_runs(run, variants, rows, refs, seeds, args.workers)
        done.update({(name, (i, s)): m for (name, s), m in one.items()})
        trained += n
    pairs = [(i, s) for i in range(len(args.run)) for s in seeds]
    names = list(variants)
    paired = paired_table(done, list(dict.fromkeys([*refs, *names])), pairs, references=refs)
    where = ", ".join(map(str, args.run))
    lines = [f"## Variants of {', '.join(sorted({f'`{r}`' for r in rows.values()}))} on {where} (seeds {seeds}; "
             f"{len(pairs)} pairs; {trained} runs trained in {time.perf_counter() - t0:.0f}s)", ""]
    described = {**{r: ["(the comparison's row)"] for r in refs}, **{n: [f"{rows[n]}:", *o] for n, o in variants.items()}}
    for name, what in described.items():
        runs = [done[(name, p)] for p in pairs]
        probe = {f"{p} {sl}": sum(r.get("probe_test", {}).get(p, {}).get(sl) or 0 for r in runs) / len(runs)
                 for p in ("vector_mean", "llm_shuffle") for sl in ("all", "unseen", "rare")}
        lines.append(f"- `{name}`: {', '.join(what)}; epochs {[r['epochs'] for r in runs]}, best "
                     f"{[r['best_epoch'] for r in runs]}; probes (test Δ AUC, mean): "
                     + ", ".join(f"{k} {v:+.4f}" for k, v in probe.items()))
    for ref_key, entries in paired.items():
        lines += ["", f"### Δ AUC vs `{ref_key.removeprefix('vs_')}`", "",
                  table(["variant", *(k for k, _ in PAIRED_KEYS)],
                        [[f"`{n}`", *(interval_cell(entries[n][k]) for _, k in PAIRED_KEYS)]
                         for n in names if n in entries and n != ref_key.removeprefix("vs_")])]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.run[0] if len(args.run) == 1 else Path(os.path.commonpath([r.resolve() for r in args.run]))
    with open(out / "variants.md", "a") as f:
        f.write(text + "\n")
    atomic_write_text(out / "variants.json", json.dumps({"runs": [str(r) for r in args.run], "paired": paired},
                                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
