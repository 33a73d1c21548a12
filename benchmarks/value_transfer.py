"""Scene-transfer probe of every store of finished synthetic runs, between a random and an oracle bound.

    python benchmarks/value_transfer.py --run RUN_DIR [--run ...] [--rare-below 100]

For each run (a ``larr demo`` or a world of ``benchmarks/world_seeds.py``) and each embedding store under
``RUN_DIR/embeddings`` (``larr``, ``untuned``, ``minilm``, an oracle copy's store …), the scene vectors the
CTR model reads are scored by :func:`larr.llm.value_probe.value_transfer`: R² of a map vector → hidden
attributes learnt on the frequent values, on the rare and the never-seen ones, and of the imputer's
neighbour mix. Two bounds are scored on the same values: ``random`` (a standard-normal vector per
value: tells values apart, knows nothing) and ``oracle`` (the attributes themselves, as ``benchmarks/oracle_vectors.py`` writes them). Seconds per run, no
training: the first check of a stage-2 change, before any stage-3 run. Prints one table (rows: run × store)
and writes ``value_transfer.json`` into the common parent of the runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from larr import layout
from larr.data.scene import scene_key
from larr.io import atomic_write_text
from larr.llm.evaluate import SCENE_ATTRIBUTES_FILE, attribute_columns, scene_value_table
from larr.llm.value_probe import DEFAULT_TEMPERATURE, TransferScores, value_transfer
from larr.report_md import table
from larr.store.disk import DiskStore

sys.path.insert(0, str(Path(__file__).parent))
from oracle_vectors import scene_vectors  # noqa: E402  (a sibling script, not a package)

BOUNDS = ("random", "oracle")


def store_scores(run: Path, rare_below: int, temperature: float = DEFAULT_TEMPERATURE,
                 dim: int = 256) -> dict[str, TransferScores]:
    """Store name (and the two bounds) → its transfer scores on ``run``'s scene values."""
    data = layout.data_dir(run)
    values = scene_value_table(data)
    if values is None:
        raise SystemExit(f"{data}: no hidden scene attributes (only `larr data synth` worlds have them)")
    values = values[values["occurs"]].reset_index(drop=True)  # what the stores hold: values some request has
    cols = attribute_columns(values)
    keys = [scene_key(f, v) for f, v in zip(values["feature"], values["value"])]
    out: dict[str, TransferScores] = {}
    for kind in BOUNDS:
        vec = scene_vectors(data / SCENE_ATTRIBUTES_FILE, keys, dim, kind)
        out[kind] = value_transfer(values, np.stack([vec[k] for k in keys]), cols, rare_below, temperature=temperature)
    for folder in sorted((Path(run) / layout.EMBEDDINGS).glob("*/")):
        if not (folder / "vectors.safetensors").is_file():
            continue
        got = DiskStore(folder).get_many(keys)
        have = np.array([k in got for k in keys])
        if have.any():
            out[folder.name] = value_transfer(values[have].reset_index(drop=True),
                                              np.stack([got[k] for k in np.array(keys)[have]]), cols, rare_below,
                                              temperature=temperature)
    return out


def _cell(x: float | None) -> str:
    return "–" if x is None else f"{x:+.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, action="append", required=True, help="A finished synthetic run (repeatable).")
    ap.add_argument("--rare-below", type=int, default=100,
                    help="Frequent values (the map's fit) have at least this many train rows (experiment.rare_below).")
    ap.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                    help="τ of the neighbour mix (rec.impute_temperature, the imputer's).")
    args = ap.parse_args()
    result: dict[str, dict[str, dict]] = {}
    rows = []
    for run in args.run:
        for name, s in store_scores(run, args.rare_below, args.temperature).items():
            result.setdefault(str(run), {})[name] = s.__dict__
            rows.append([str(run), name, _cell(s.rare), _cell(s.unseen), _cell(s.knn_rare), _cell(s.knn_unseen),
                         str(s.n_fit), str(s.n_rare), str(s.n_unseen)])
    print(table(["run", "store", "map R² rare", "map R² unseen", "neighbours R² rare", "neighbours R² unseen",
                 "fit values", "rare values", "unseen values"], rows))
    parent = Path(os.path.commonpath([str(r.resolve()) for r in args.run]))
    parent = parent if len(args.run) > 1 else args.run[0]
    atomic_write_text(parent / "value_transfer.json", json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
