"""A copy of a finished synthetic run whose scene vectors are the world's own answer (or noise): what can stage 3 do?

    python benchmarks/oracle_vectors.py --run RUN_DIR --out COPY_DIR [--kind oracle|random] [--store minilm]
    python benchmarks/stage3_variants.py --run COPY_DIR --variant orc_vec@generic_text=rec.scene_ids=false \\
        --variant orc_noimp@generic_text=rec.impute_unseen_ids=false --against base,base_scene_ids,generic_text

Every row that reads ``--store`` then reads, for each scene value, instead of its text's vector:

- ``oracle``: the value's *hidden attributes* (``data/scene_attributes.parquet``, the vectors the click model
  sums, already scaled per feature) in the first dimensions, and a whisper of noise (sd 0.01) in the others so
  no two values coincide — an LLM that knew exactly what "typhoon" means to a hungry customer;
- ``random``: a standard-normal vector per value — an encoder that tells values apart and knows nothing else.

Between the two lie the real encoders. Variants of a row reading that store on the copy (``stage3_variants.py``)
then say whether stage 3 *could* carry the scene's meaning: with the scene vector as the only scene input
(``rec.scene_ids=false``), and next to the scene IDs without the unseen-ID imputation
(``rec.impute_unseen_ids=false``, the paper's path) — if perfect vectors do not lift the unseen slice there, no
LLM will; ``orc_full@generic_text=rec.impute_unseen_ids=true`` (a no-op override) retrains the row itself on the
oracle, imputation included. The copy shares the finished comparison runs of ``RUN_DIR`` by symbolic links (they are read as the
references, trained on the real vectors) and re-labels the store's encoder, so nothing mistakes its vectors
for the encoder's. ``RUN_DIR`` is never written.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from larr import layout
from larr.data.scene import scene_key
from larr.llm.evaluate import SCENE_ATTRIBUTES_FILE, attribute_columns
from larr.store.disk import DiskStore

NOISE_SD = 0.01
KINDS = ("oracle", "random")


def scene_vectors(attributes: Path, keys: list[str], dim: int, kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Store key → vector of every scene key in ``keys`` (other keys are left out)."""
    table = pd.read_parquet(attributes)
    attr_cols = attribute_columns(table)
    if kind == "oracle" and dim < len(attr_cols):
        raise SystemExit(f"the store's vectors have {dim} dimensions, fewer than the {len(attr_cols)} hidden attributes")
    truth = {scene_key(f, v): row for f, v, row in zip(table["feature"], table["value"], table[attr_cols].to_numpy())}
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for k in (k for k in keys if k.startswith("scene/")):
        if kind == "random":
            out[k] = rng.standard_normal(dim).astype(np.float32)
            continue
        if k not in truth:
            raise SystemExit(f"{attributes}: no hidden attributes for {k!r} (not a synthetic world's run?)")
        v = np.zeros(dim, np.float32)
        v[: len(attr_cols)] = truth[k]
        v[len(attr_cols):] = NOISE_SD * rng.standard_normal(dim - len(attr_cols))
        out[k] = v
    return out


def _copy(src: Path, dst: Path) -> None:
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def build_copy(run: Path, out: Path, kind: str, store: str) -> int:
    """Copy ``run`` to ``out`` with ``store``'s scene vectors replaced; returns how many were replaced."""
    src_store = layout.store_dir(run, store)
    attributes = layout.data_dir(run) / SCENE_ATTRIBUTES_FILE
    for need in (src_store / "vectors.safetensors", attributes):
        if not need.is_file():
            raise SystemExit(f"{need}: not found (a finished synthetic run with a '{store}' store is needed)")
    if out.exists():
        raise SystemExit(f"{out}: exists; choose a new folder")
    out.mkdir(parents=True)
    for p in run.iterdir():
        if p.name == "stage3":
            continue
        if p.name in ("data", "embeddings") or p.is_file():
            _copy(p, out / p.name)
    stage3 = run / "stage3"
    if stage3.is_dir():
        (out / "stage3").mkdir()
        for p in stage3.iterdir():
            if p.is_file() or p.name == "features":  # the cached features: copied (a variant may rebuild them)
                _copy(p, out / "stage3" / p.name)
            elif p.name != "variants":  # a finished comparison run: shared, read-only by use
                (out / "stage3" / p.name).symlink_to(p.resolve())
    source = DiskStore(src_store)
    keys = source.keys()
    vectors = scene_vectors(attributes, keys, int(source.dim), kind)
    out_store = layout.store_dir(out, store)
    shutil.rmtree(out_store)  # a new store under its own label, not the encoder's
    target = DiskStore(out_store, dim=source.dim, encoder=f"{kind}:scene-attributes")
    target.put_many({**source.get_many(keys), **vectors})  # autoflush: one atomic write
    return len(vectors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="A finished synthetic run (`larr demo`, world_seeds.py).")
    ap.add_argument("--out", type=Path, required=True, help="New folder for the copy.")
    ap.add_argument("--kind", choices=KINDS, default="oracle")
    ap.add_argument("--store", default="minilm", help="The store whose scene vectors are replaced (rows reading it: "
                    "generic_text; 'larr' for the LARR rows).")
    args = ap.parse_args()
    n = build_copy(args.run, args.out, args.kind, args.store)
    print(f"{args.out}: {n} scene vectors of store '{args.store}' replaced ({args.kind}); now e.g.\n"
          f"  python benchmarks/stage3_variants.py --run {args.out} --variant orc_vec@generic_text=rec.scene_ids=false "
          f"--variant orc_noimp@generic_text=rec.impute_unseen_ids=false --against base,base_scene_ids,generic_text")


if __name__ == "__main__":
    main()
