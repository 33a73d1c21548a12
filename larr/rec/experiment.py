"""The stage-3 comparison (`larr evaluate`): every row of the table, every seed, one split.

Every row (:data:`larr.rec.rows.ROWS`) is trained with the same hyper-parameters
(``cfg.rec`` plus only what its row overrides), the same epochs, embedding sizes, split and
seeds, and is scored on the test split and on its unseen-scene slice (test rows with a scene
value never seen in training — where reading the scene as text should pay off). Each metric
is the mean over seeds ± the sample standard deviation (ddof = 1; null with a single seed).

Outputs, all in the run directory:

- ``report.json`` section ``ctr``: ``{row: {auc, auc_std, gauc, gauc_std, logloss, logloss_std,
  auc_unseen, auc_unseen_std, gauc_unseen, gauc_unseen_std, valid_auc, n_seeds, ...}}``, and
  section ``stage3`` with the setup (seeds, encoder of the LARR rows, hyper-parameters, time,
  skipped rows and why);
- ``report.md`` (:func:`larr.report_md.render_markdown`), ``plots/ctr_auc.png``;
- ``stage3/<row>_seed<k>/``: each trained model with its ``metrics.json``. A finished run whose
  config, data and vectors still match is reused, so an interrupted comparison resumes.

Runs of different (row, seed) are independent; ``experiment.workers = 2`` trains two at a time
in separate processes with one thread each (:mod:`larr.rec.jobs`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from larr import layout
from larr.config import Config
from larr.display import row_pm
from larr.rec.jobs import Job, run_jobs
from larr.rec.paired import PLOT_FILE as PAIRED_PLOT
from larr.rec.paired import paired_table, plot_paired
from larr.rec.per_value import PLOT_FILE as PER_VALUE_PLOT
from larr.rec.per_value import nearest_seen, per_value_table, plot_per_value
from larr.rec.probe import probe_table
from larr.rec.rows import REFERENCE, ROWS
from larr.rec.slices import SLICES, metric_key
from larr.rec.train import TrainError, finished_run, llm_table, load_features, model_setup
from larr.report import update_report, write_markdown

PLOT_FILE = "ctr_auc.png"  # in RUN_DIR/plots


def row_key(metric: str, split: str, name: str) -> str:
    """Key of a metric in a ``ctr`` row: ``auc`` (test, all rows), ``auc_unseen``, ``valid_auc_rare``, ..."""
    return ("" if split == "test" else f"{split}_") + metric + ("" if name == "all" else f"_{name}")


# (row key, key of the run's metrics, metric): every metric on every slice of test and valid
METRICS = tuple((row_key(m, split, name), metric_key(split, name), m)
                for split in ("test", "valid") for name in SLICES for m in ("auc", "gauc", "logloss"))


# ---------------------------------------------------------------------------- aggregation


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None  # one seed: no spread to report
    return float(np.mean(vals)), std


def aggregate(runs: list[dict]) -> dict:
    """One row of the table from its per-seed metrics: mean and std of every metric."""
    row: dict = {"n_seeds": len(runs), "seeds": [r["seed"] for r in runs]}
    for key, split, metric in METRICS:
        row[key], row[f"{key}_std"] = _mean_std([r[split][metric] for r in runs])
    for name in SLICES:
        row[row_key("n", "test", name)] = runs[0][metric_key("test", name)]["n"]
        row[row_key("n", "valid", name)] = runs[0][metric_key("valid", name)]["n"]
    row["epochs"] = float(np.mean([r["epochs"] for r in runs]))
    row["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
    return row


def add_deltas(rows: dict[str, dict]) -> None:
    """Δ AUC vs :data:`REFERENCE` (overall and unseen slice), for the table and the targets."""
    ref = rows.get(REFERENCE)
    if ref is None:
        return
    for row in rows.values():
        for key in ("auc", "auc_unseen", "gauc", "gauc_unseen"):
            if row.get(key) is not None and ref.get(key) is not None:
                row[f"delta_{key}"] = row[key] - ref[key]


# ---------------------------------------------------------------------------- running


def unavailable(cfg: Config, run_dir: Path, name: str, spec) -> str | None:
    """Why row ``name`` cannot be trained here (missing or incomplete vectors), or None."""
    rec, store = model_setup(cfg, name)
    try:
        llm_table(spec, run_dir, store, whole=rec.scene_encoder == "whole_text")
    except TrainError as e:
        return str(e)
    return None


def run(cfg: Config, run_dir: Path, data_dir: Path | None = None, progress: bool = True,
        log: Callable[[str], None] = print) -> dict:
    """Train and score every row × seed; write report.json (``ctr``, ``stage3``), report.md and the plot."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    unknown = [m for m in cfg.experiment.models if m not in ROWS]
    if unknown:
        raise TrainError(f"unknown model(s) {', '.join(unknown)} in experiment.models (choose from {', '.join(ROWS)})")
    features = load_features(run_dir, data_dir)
    spec, _, fingerprint = features
    skipped = {n: why for n in cfg.experiment.models if (why := unavailable(cfg, run_dir, n, spec))}
    for name, why in skipped.items():
        log(f"stage3: warning: skipping {name}: {why}")
    names = [n for n in cfg.experiment.models if n not in skipped]
    done: dict[tuple[str, int], dict] = {}
    if cfg.experiment.reuse:
        for n in names:
            for s in cfg.experiment.seeds:
                if (m := finished_run(cfg, run_dir, n, s, fingerprint)) is not None:
                    done[(n, s)] = m
    if done:
        log(f"stage3: reusing {len(done)} finished run(s) from {run_dir / 'stage3'}")
    jobs = [(n, s) for n in names for s in cfg.experiment.seeds if (n, s) not in done]
    for m in run_jobs([Job(cfg, n, s) for n, s in jobs], run_dir, cfg.experiment.workers, features, progress, log):
        done[(m["model"], m["seed"])] = m
    rows = {n: aggregate([done[(n, s)] for s in cfg.experiment.seeds]) for n in names}
    add_deltas(rows)
    seconds = round(time.perf_counter() - t0, 1)
    setup = {"models": names, "seeds": list(cfg.experiment.seeds), "larr_encoder": cfg.experiment.larr_encoder,
             "stores": {n: model_setup(cfg, n)[1] for n in names}, "rec": cfg.rec.model_dump(mode="json"),
             "backbone": cfg.experiment.backbone or cfg.rec.backbone, "skipped": skipped, "seconds": seconds,
             "trained_runs": len(jobs), "reused_runs": len(cfg.experiment.seeds) * len(names) - len(jobs),
             "workers": cfg.experiment.workers}
    update_report(run_dir, "ctr", rows)
    update_report(run_dir, "paired", paired_table(done, names, list(cfg.experiment.seeds)))
    update_report(run_dir, "probe", probe_table(done, names, list(cfg.experiment.seeds)))
    update_report(run_dir, "per_value", per_value_results(run_dir, features, names, list(cfg.experiment.seeds),
                                                          layout.data_dir(run_dir, data_dir)))
    report = update_report(run_dir, "stage3", setup)
    write_outputs(run_dir, report)
    return {"rows": rows, **setup}


# ---------------------------------------------------------------------------- outputs


def write_outputs(run_dir: Path, report: dict) -> None:
    """``report.md`` from the whole report, and the AUC bar chart of the ``ctr`` section."""
    from larr.report_md import ordered_rows

    write_markdown(run_dir, report)
    if report.get("ctr"):
        plot_auc(ordered_rows(report), layout.plot_path(run_dir, PLOT_FILE))
    if report.get("paired"):
        plot_paired(report["paired"], layout.plot_path(run_dir, PAIRED_PLOT), list(ordered_rows(report)))
    if report.get("per_value"):
        plot_per_value(report["per_value"], list(ordered_rows(report)), layout.plot_path(run_dir, PER_VALUE_PLOT))


def per_value_results(run_dir: Path, features, names: list[str], seeds: list[int], data_dir: Path) -> dict:
    """:func:`larr.rec.per_value.per_value_table` from the saved test predictions of every (row, seed)."""
    from safetensors.numpy import load_file

    spec, splits, _ = features
    preds = {n: [load_file(layout.stage3_run(run_dir, layout.run_name(n, s)) / layout.PREDICTIONS_FILE)["test"]
                 for s in seeds] for n in names}
    return per_value_table(spec, splits, preds, REFERENCE, nearest_seen(data_dir))


def plot_auc(rows: dict[str, dict], path: Path) -> Path:
    """Bar chart: AUC per row, overall and on the unseen-scene slice, with seed-std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from larr.io import save_figure

    names = list(rows)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.2))
    lows = []
    for i, (key, label) in enumerate((("auc", "test"), ("auc_unseen", "unseen-scene slice"))):
        vals = [rows[n].get(key) or np.nan for n in names]
        errs = [rows[n].get(f"{key}_std") or 0.0 for n in names]
        ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, yerr=errs, capsize=3, label=label)
        lows += [v - e for v, e in zip(vals, errs) if np.isfinite(v)]
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("AUC (mean ± std over seeds)")
    if lows:
        ax.set_ylim(max(0.0, min(lows) - 0.02), min(1.0, ax.get_ylim()[1] + 0.005))
    ax.set_title("Stage 3: CTR AUC per model")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def rich_table(rows: dict[str, dict], title: str = "stage 3: CTR on the test split"):
    """The comparison as a rich Table (printed by the CLI)."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("model", "AUC", "GAUC", "logloss", "AUC unseen", "GAUC unseen", f"Δ unseen vs {REFERENCE}", "seeds"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for name, r in rows.items():
        delta = r.get("delta_auc_unseen")
        t.add_row(name, row_pm(r, "auc"), row_pm(r, "gauc"), row_pm(r, "logloss"), row_pm(r, "auc_unseen"),
                  row_pm(r, "gauc_unseen"), "" if delta is None else f"{delta:+.4f}", str(r["n_seeds"]))
    return t

