"""Paired comparisons of stage-3 rows: per-seed differences, their mean and a 95 % t-interval.

Every row of the comparison is trained on the same seeds, split and budget, so two rows are
compared seed by seed: ``Δ_k = AUC(row, seed k) − AUC(reference, seed k)``. The spread of the
Δ's, not of each row's AUC, says whether a difference is real: two rows that differ by −0.0002
on every seed are the same model; one whose Δ swings from −0.008 to +0.011 is unstable whatever
its mean. The interval is ``mean ± t(0.975, n−1) · sd / √n`` over the n seeds both rows have; a
row whose interval excludes 0 is marked (``significant``). With one seed there is no interval.

References: :data:`REFERENCES` — the ID baseline (what LARR must beat) and the generic sentence
encoder (what the domain-tuned LLM must beat), each on every slice of valid and test.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from larr.rec.slices import SLICES, metric_key

REFERENCES = ("base_scene_ids", "generic_text")
SPLITS = ("test", "valid")
PLOT_FILE = "paired_delta.png"  # in RUN_DIR/plots


def t_interval(deltas: list[float], level: float = 0.95) -> dict:
    """Mean, 95 % t-interval and significance of paired differences (``lo``/``hi`` None below 2 values)."""
    n = len(deltas)
    out: dict = {"deltas": [round(d, 6) for d in deltas], "n": n, "mean": None, "lo": None, "hi": None,
                 "significant": False}
    if n == 0:
        return out
    mean = float(np.mean(deltas))
    out["mean"] = mean
    if n > 1:
        from scipy.stats import t

        half = float(t.ppf(0.5 + level / 2, n - 1)) * float(np.std(deltas, ddof=1)) / math.sqrt(n)
        out["lo"], out["hi"] = mean - half, mean + half
        out["significant"] = out["lo"] > 0 or out["hi"] < 0
    return out


def paired_table(done: dict[tuple[str, int], dict], rows: list[str], seeds: list,
                 metric: str = "auc", references: tuple[str, ...] = REFERENCES) -> dict:
    """``{vs_<reference>: {row: {<split>[_<slice>]: t_interval(...)}}}`` for each reference that was trained."""
    out: dict = {}
    for ref in references:
        if ref not in rows:
            continue
        table: dict = {}
        for row in rows:
            if row == ref:
                continue
            entry = {}
            for split in SPLITS:
                for name in SLICES:
                    key = metric_key(split, name)
                    deltas = [done[(row, s)][key][metric] - done[(ref, s)][key][metric] for s in seeds
                              if (done[(row, s)].get(key) or {}).get(metric) is not None
                              and (done[(ref, s)].get(key) or {}).get(metric) is not None]
                    entry[key] = t_interval(deltas)
            table[row] = entry
        out[f"vs_{ref}"] = table
    return out


def plot_paired(paired: dict, path: Path, order: list[str] | None = None, reference: str = REFERENCES[0],
                split: str = "test") -> Path | None:
    """One panel per slice, one line per row: mean Δ AUC vs ``reference`` with its 95 % interval,
    the per-seed Δ as dots; a filled marker where the interval excludes 0."""
    table = paired.get(f"vs_{reference}")
    if not table:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from larr.io import save_figure

    names = [r for r in (order or []) if r in table] + sorted(set(table) - set(order or []))
    fig, axes = plt.subplots(1, len(SLICES), figsize=(3.2 * len(SLICES) + 1.5, 0.42 * len(names) + 1.6),
                             sharey=True)
    y = np.arange(len(names))[::-1]
    for ax, name in zip(axes, SLICES):
        key = metric_key(split, name)
        for yi, row in zip(y, names):
            e = table[row][key]
            if e["mean"] is None:
                continue
            ax.scatter(e["deltas"], [yi] * len(e["deltas"]), s=9, color="0.6", zorder=2)
            if e["lo"] is not None:
                ax.plot([e["lo"], e["hi"]], [yi, yi], color="C0", lw=2, zorder=3)
            ax.scatter([e["mean"]], [yi], s=36, zorder=4, color="C3" if e["significant"] else "white",
                       edgecolors="C3")
        ax.axvline(0, color="k", lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_title(f"{split} · {name}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(f"Δ AUC vs {reference}")
    axes[0].set_yticks(y, names)
    fig.suptitle("Paired by seed: mean Δ with 95 % t-interval (filled: interval excludes 0; dots: seeds)",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
