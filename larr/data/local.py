"""A data source that is a folder the user already has: ``data.source: dir`` + ``data.dir: PATH``.

Nothing is generated. The folder must pass ``larr data validate`` (:func:`larr.data.schema.validate_dir`);
it is then **copied** into ``RUN_DIR/data`` (every file and sub-folder, timestamps kept), so a run
directory stays self-contained: every later stage, ``larr train``/``evaluate``/``serve``/``export``
without ``--data``, and the stage-3 reuse check (a hash of the tables) read the same bytes that this
run trained on, even if the user's folder changes afterwards. The cost is one copy of compact
Parquet files; a folder that *is* ``RUN_DIR/data`` is used in place.

The synthetic-only parts are skipped with one line each when their files are absent:
``world.json`` (written by ``larr data synth`` / ``movielens``: the world summary with the
generator's reference AUCs) and ``scene_attributes.parquet`` (hidden attributes, scored by the
stage-2 evaluation, :mod:`larr.llm.evaluate`).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from larr.data.schema import SPLITS, SchemaError, validate_dir

WORLD_FILE = "world.json"


def note(msg: str) -> None:
    """One line on stderr for a part of the pipeline that this data set does not have."""
    print(f"larr: note: {msg}", file=sys.stderr, flush=True)


def copy_dir(src: Path, dst: Path) -> dict:
    """Validate ``src``, copy it into ``dst`` (atomically; ``dst`` is replaced) and return its summary."""
    from larr.io import atomic_dir

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise SchemaError(f"{src}: data directory not found")
    counts = validate_dir(src)
    if src.resolve() != dst.resolve():
        with atomic_dir(dst) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    return summarize(dst, counts, source=src)


def summarize(data_dir: Path, counts: dict[str, int] | None = None, source: Path | None = None) -> dict:
    """Counts, CTR and unseen-scene share per split; plus world.json's reference AUCs when present."""
    data_dir = Path(data_dir)
    counts = counts or validate_dir(data_dir)
    imps = pq.read_table(data_dir / "impressions.parquet", columns=["split", "label", "unseen_scene"])
    split = imps["split"].cast("string")
    out: dict = {"source": str(source or data_dir), **counts, "rows": {}, "ctr": {}, "unseen_share": {}}
    for s in SPLITS:
        part = imps.filter(pc.equal(split, s))
        n = part.num_rows
        out["rows"][s] = n
        out["ctr"][s] = round(pc.mean(part["label"]).as_py(), 4) if n else 0.0
        out["unseen_share"][s] = round(pc.mean(part["unseen_scene"].cast("int8")).as_py(), 4) if n else 0.0
    world = data_dir / WORLD_FILE
    if world.is_file():
        ref = json.loads(world.read_text()).get("reference_auc")
        if ref:
            out["reference_auc"] = ref
    else:
        note(f"no {WORLD_FILE} in {source or data_dir} (written by `larr data synth`): "
             "world summary and reference AUCs skipped")
    return out
