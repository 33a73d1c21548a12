"""Per-value results: how each row does on each never-seen scene value and on rare values by frequency.

The slices (:mod:`larr.rec.slices`) pool every unseen or rare row; this table splits them again:

- one line per scene value that never occurs in train but does in test (``test only``, or
  ``valid first`` when valid has it too — the case model selection can see), with its test rows,
  each row's AUC (mean over seeds) and its Δ vs the ID baseline (mean of the per-seed Δ), and
  the nearest seen value the data's ``world.json`` names, when it has one;
- one line per frequency band of the rows' rarest seen scene value (:data:`BANDS`, train rows).

Predictions come from each run's ``predictions.safetensors`` (test rows, in split order).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from larr.metrics import auc
from larr.rec.slices import rarest_count, train_counts

BANDS = ((1, 5), (5, 20), (20, 100), (100, None))  # train rows of the rarest seen value: [lo, hi)
MIN_ROWS = 30  # fewer test rows (or a single class) → no AUC
PLOT_FILE = "per_value.png"  # in RUN_DIR/plots


def band_label(lo: int, hi: int | None) -> str:
    return f"≥{lo}" if hi is None else f"{lo}–{hi - 1}"


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    if len(y) < MIN_ROWS or y.min() == y.max():
        return None
    return auc(y, p)


def _score(mask: np.ndarray, y: np.ndarray, preds: dict[str, list[np.ndarray]], reference: str) -> dict:
    """Rows, positives, per-row mean AUC over seeds and mean per-seed Δ vs ``reference``."""
    out: dict = {"rows": int(mask.sum()), "positives": int(y[mask].sum()), "auc": {}, "delta": {}}
    per_seed = {row: [_auc(y[mask], p[mask]) for p in ps] for row, ps in preds.items()}
    for row, aucs in per_seed.items():
        vals = [a for a in aucs if a is not None]
        out["auc"][row] = float(np.mean(vals)) if vals else None
    ref = per_seed.get(reference)
    if ref is not None:
        for row, aucs in per_seed.items():
            if row == reference:
                continue
            d = [a - r for a, r in zip(aucs, ref) if a is not None and r is not None]
            out["delta"][row] = float(np.mean(d)) if d else None
    return out


def nearest_seen(data_dir: Path | None) -> dict[str, str]:
    """``"feature: value" → nearest seen value`` from the data's ``world.json`` (synthetic worlds only)."""
    path = Path(data_dir) / "world.json" if data_dir is not None else None
    if path is None or not path.is_file():
        return {}
    facts = json.loads(path.read_text())
    out: dict[str, str] = {}
    for key in ("nearest_seen_value", "valid_first_nearest_seen"):
        out.update({str(k): str(v) for k, v in (facts.get(key) or {}).items()})
    return out


def per_value_table(spec, splits: dict[str, dict[str, torch.Tensor]], preds: dict[str, list[np.ndarray]],
                    reference: str, nearest: dict[str, str] | None = None) -> dict:
    """``{"values": [...], "bands": [...]}`` (see the module docstring); ``preds[row]`` = test predictions per seed."""
    test, train, valid = splits["test"], splits["train"], splits["valid"]
    y = test["label"].numpy()
    cols = spec.scene_cols
    counts = train_counts(train["x"], cols, spec.vocab_sizes)
    table = spec.scene_table()
    values = []
    for k, feat in enumerate(spec.scene_names):
        unseen_rows = test["x"][:, cols[k]] == 0
        table_rows = test["scene"][:, k]
        in_valid = set(valid["scene"][:, k][valid["x"][:, cols[k]] == 0].tolist())
        for r in sorted(set(table_rows[unseen_rows & (table_rows > 0)].tolist())):
            value = spec.scene_values[feat][r - table.start(feat)]
            mask = (unseen_rows & (table_rows == r)).numpy()
            entry = {"feature": feat, "value": value, "kind": "valid first" if r in in_valid else "test only",
                     "nearest_seen": (nearest or {}).get(f"{feat}: {value}"), **_score(mask, y, preds, reference)}
            values.append(entry)
    rarest = rarest_count(test["x"], cols, counts).numpy()
    seen_rows = ~test["unseen"].numpy().astype(bool)
    bands = []
    for lo, hi in BANDS:
        mask = seen_rows & (rarest >= lo) & (rarest < (hi if hi is not None else np.iinfo(np.int64).max))
        bands.append({"band": band_label(lo, hi), "lo": lo, "hi": hi, **_score(mask, y, preds, reference)})
    values.sort(key=lambda e: (e["feature"], -e["rows"]))
    return {"reference": reference, "min_rows": MIN_ROWS, "values": values, "bands": bands}


def plot_per_value(table: dict, rows: list[str], path: Path) -> Path | None:
    """Δ AUC vs the ID baseline per never-seen value (left) and per rarity band (right), one marker per row."""
    lines = [e for e in table["values"] if any(v is not None for v in e["delta"].values())]
    bands = [b for b in table["bands"] if any(v is not None for v in b["delta"].values())]
    if not lines and not bands:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from larr.io import save_figure

    shown = [r for r in rows if r != table["reference"]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.33 * max(len(lines), len(bands)) + 2.8),
                             gridspec_kw={"width_ratios": [3, 2]})
    for ax, items, label in ((axes[0], lines, lambda e: f"{e['feature']}: {e['value']} ({e['rows']})"),
                             (axes[1], bands, lambda b: f"rarest value seen {b['band']}× ({b['rows']})")):
        y = np.arange(len(items))[::-1]
        for j, row in enumerate(shown):
            xs = [e["delta"].get(row) for e in items]
            ys = [yi for yi, x in zip(y, xs) if x is not None]
            ax.scatter([x for x in xs if x is not None], ys, s=22, label=row, marker="osD^v<>p*h"[j % 10])
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, [label(e) for e in items], fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(f"Δ test AUC vs {table['reference']}, mean over seeds", fontsize=9)
    axes[0].set_title("never seen in train (test rows)", fontsize=10)
    axes[1].set_title("seen rows by rarity of their rarest value", fontsize=10)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=min(len(shown), 5), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, path)
