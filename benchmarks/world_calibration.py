"""Does the synthetic world reward reading scene values for their meaning? Two logistic regressions.

Both are trained on the train split with the same base features — shop, user and position
one-hots — plus one scene block:

* ``ids``   — cuisine × scene-value one-hots, one block per scene feature (what an ID model
              can learn: a value never seen in train has no weight, a value seen k times has
              a weight fitted on k rows);
* ``attrs`` — cuisine × the row's summed hidden scene attributes (``scene_attributes.parquet``,
              8 dimensions × 22 cuisines: what a model that understands every value could learn).

AUC is reported on the test rows and on its slices by the rarest scene value of the row:
``unseen`` (some value never in train), ``rare`` (rarest value has < 20 train rows), ``sparse``
(20-99) and ``frequent`` (all values ≥ 100 train rows), next to the generator's reference AUCs
(``world.json``: the exact logit, the shrinkage ID oracle and the logit without the scene). It
also checks the world's requirements on unseen values (≥ 15 test-only values over ≥ 5 features,
≥ 5 valid-first values, the long tail) and prints the per-feature summary.

    python benchmarks/world_calibration.py --preset demo --seed 0 [--data DIR]

Model settings are fixed (L2, C = 1, lbfgs, 300 iterations): this measures the world, not a model.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from larr.data import synth as S
from larr.data import world as W

BASE = ("shop_id", "user_id", "position")


def _onehot(codes: np.ndarray, n: int) -> sp.csr_matrix:
    rows = np.arange(len(codes))
    ok = codes >= 0
    return sp.csr_matrix((np.ones(ok.sum()), (rows[ok], codes[ok])), shape=(len(codes), n))


def _codes(col: pd.Series, vocab: list) -> np.ndarray:
    index = {v: i for i, v in enumerate(vocab)}
    return np.array([index.get(v, -1) for v in col.astype(str)], dtype=np.int64)


def slices(imp: pd.DataFrame, features: list[str]) -> dict[str, np.ndarray]:
    """Masks over the test rows by the train-row count of their rarest scene value."""
    train, test = imp[imp["split"] == "train"], imp[imp["split"] == "test"]
    rarest = np.full(len(test), np.iinfo(np.int64).max)
    for f in features:
        counts = train[f].astype(str).value_counts()
        rarest = np.minimum(rarest, test[f].astype(str).map(counts).fillna(0).to_numpy(np.int64))
    return {"test": np.ones(len(test), bool), "unseen": rarest == 0,
            "rare": (rarest > 0) & (rarest < S.RARE_ROWS),
            "sparse": (rarest >= S.RARE_ROWS) & (rarest < S.SPARSE_ROWS), "frequent": rarest >= S.SPARSE_ROWS}


def design(imp: pd.DataFrame, shops: pd.DataFrame, attrs: pd.DataFrame, features: list[str], kind: str,
           train_mask: np.ndarray) -> sp.csr_matrix:
    """Base one-hots (vocabularies from train) plus the ``ids`` or ``attrs`` scene block."""
    blocks = []
    for col in BASE:
        vocab = sorted(imp.loc[train_mask, col].unique())
        index = {v: i for i, v in enumerate(vocab)}
        blocks.append(_onehot(imp[col].map(index).fillna(-1).to_numpy(np.int64), len(vocab)))
    cuisine_names = sorted(shops["category"].unique())
    cuisine = _codes(imp["shop_id"].map(shops.set_index("shop_id")["category"]), cuisine_names)
    n_c = len(cuisine_names)
    if kind == "ids":
        for f in features:
            vocab = sorted(imp.loc[train_mask, f].astype(str).unique())
            code = _codes(imp[f], vocab)
            blocks.append(_onehot(np.where(code >= 0, cuisine * len(vocab) + code, -1), n_c * len(vocab)))
    else:
        need = np.zeros((len(imp), len(W.DIMS)))
        for f in features:
            table = attrs[attrs["feature"] == f].set_index("value")[list(W.DIMS)]
            need += table.loc[imp[f].astype(str)].to_numpy()
        rows = np.repeat(np.arange(len(imp)), len(W.DIMS))
        cols = (cuisine[:, None] * len(W.DIMS) + np.arange(len(W.DIMS))[None, :]).ravel()
        blocks.append(sp.csr_matrix((need.ravel(), (rows, cols)), shape=(len(imp), n_c * len(W.DIMS))))
    return sp.hstack(blocks, format="csr")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="demo", choices=list(S.PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, help="an existing `larr data synth` folder (else generated in a temp dir)")
    args = ap.parse_args()
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory()
        args.data = Path(tmp.name)
        S.generate(args.data, preset=args.preset, seed=args.seed, progress=False)
    facts = json.loads((args.data / "world.json").read_text())
    imp = pd.read_parquet(args.data / "impressions.parquet")
    shops = pd.read_parquet(args.data / "shops.parquet", columns=["shop_id", "category"])
    attrs = pd.read_parquet(args.data / "scene_attributes.parquet")
    features = [f.name for f in W.SCENE_FEATURES]

    train_mask = (imp["split"] == "train").to_numpy()
    test_mask = (imp["split"] == "test").to_numpy()
    y = imp["label"].to_numpy()
    masks = slices(imp, features)
    scores = {}
    for kind in ("ids", "attrs"):
        t0 = time.perf_counter()
        x = design(imp, shops, attrs, features, kind, train_mask)
        model = LogisticRegression(C=1.0, max_iter=300)
        model.fit(x[train_mask], y[train_mask])
        scores[kind] = model.decision_function(x[test_mask])
        print(f"fitted {kind}: {x.shape[1]} columns, {time.perf_counter() - t0:.0f} s")

    ref = facts["reference_auc"]
    yt = y[test_mask]
    print(f"\nworld {facts['preset']} seed {facts['seed']}: {facts['impressions']:,} rows "
          f"(train {facts['rows']['train']:,}, valid {facts['rows']['valid']:,}, test {facts['rows']['test']:,})\n")
    print("| test rows | rows | LR ids | LR attrs | attrs − ids | oracle | ID oracle | no scene |")
    print("|---|---|---|---|---|---|---|---|")
    for part, m in masks.items():
        if m.sum() == 0 or yt[m].min() == yt[m].max():
            print(f"| {part} | {int(m.sum()):,} | – | – | – | – | – | – |")
            continue
        a_ids, a_attrs = roc_auc_score(yt[m], scores["ids"][m]), roc_auc_score(yt[m], scores["attrs"][m])
        r = [ref.get(f"{part}_{k}") for k in ("oracle", "id_oracle", "no_scene")]
        print(f"| {part} | {int(m.sum()):,} | {a_ids:.4f} | {a_attrs:.4f} | {a_attrs - a_ids:+.4f} | "
              + " | ".join("–" if v is None else f"{v:.4f}" for v in r) + " |")

    print("\n| feature | values | occurring | in train | < 20 train rows | test-only | valid-first |")
    print("|---|---|---|---|---|---|---|")
    for f, s in facts["long_tail"].items():
        print(f"| {f} | {s['values']} | {s['occurring']} | {s['in_train']} | {s['share_under_20_train_rows']:.0%} | "
              f"{s['test_only']} | {s['valid_first']} |")
    test_only, valid_first = facts["test_only_values"], facts["valid_first_values"]
    n_test_only = sum(len(v) for v in test_only.values())
    n_valid_first = sum(len(v) for v in valid_first.values())
    checks = {
        "≥ 15 test-only values": n_test_only >= 15,
        "over ≥ 5 features": len(test_only) >= 5,
        "≥ 5 valid-first values": n_valid_first >= 5,
        "long tail: ≥ 30 % of landmark+event values < 20 train rows": _tail_share(facts) >= 0.3,
    }
    print(f"\ntest-only values: {n_test_only} over {len(test_only)} features; valid-first: {n_valid_first} over "
          f"{len(valid_first)} features; landmark+event values with < 20 train rows: {_tail_share(facts):.0%}")
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    if tmp is not None:
        tmp.cleanup()
    if not all(checks.values()):
        raise SystemExit(1)


def _tail_share(facts: dict) -> float:
    lt = [facts["long_tail"][f] for f in W.LONG_TAIL_FEATURES]
    return sum(s["share_under_20_train_rows"] * s["occurring"] for s in lt) / max(1, sum(s["occurring"] for s in lt))


if __name__ == "__main__":
    main()
