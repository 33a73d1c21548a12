"""The hyper-parameter analysis (`larr sweep`, the paper's Figure 4).

    larr sweep --out RUN_DIR [--param align_weight ...]

The ``larr`` row of the comparison is trained with one hyper-parameter at a time set to each
value of its grid (``cfg.sweep.<param>``), every other one at its config value: alignment
temperature τ, alignment weight λ (0 = no alignment), scene-encoder layers, scene-vector size.
Everything else is the comparison's: the same split, features, vectors
(``experiment.larr_encoder``), epochs, early stopping, :func:`larr.rec.train.train_model`
and parallel workers (:mod:`larr.rec.jobs`).

Points that are the same run are trained once: the config's own value is a point of every
curve (added when a grid lacks it), and those points are one run, ``stage3/sweep/default_seed<k>``.
Before training anything the sweep looks for a finished run with the same hyper-parameters,
data and vectors (:func:`larr.rec.train.finished_run`): first among the comparison's rows (the
default point *is* ``stage3/larr_seed<k>``, λ = 0 *is* ``stage3/larr_noalign_seed<k>``), then
under ``stage3/sweep/<param>=<value>_seed<k>``. So a sweep after ``larr evaluate`` trains only the
new points, and an interrupted sweep resumes.

Outputs: ``report.json`` section ``sweep`` — ``{param: {values, valid_auc, auc, auc_unseen,
valid_auc_std, auc_std, auc_unseen_std, default, runs}}``, metrics as mean (± sample std) over
``sweep.seeds`` — and ``sweep_setup`` (seeds, encoder, runs trained and reused, seconds);
``plots/sweep_<param>.png``; ``report.md`` (a table per parameter).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from larr.config import SWEEP_PARAMS, Config, RecConfig
from larr.errors import LarrError
from larr.io import save_figure
from larr.rec.experiment import REFERENCE, aggregate, unavailable
from larr.rec.jobs import Job, run_jobs
from larr.layout import plot_path, run_name, sweep_run_id
from larr.rec.rows import ROWS
from larr.rec.train import finished_run, load_features, model_setup
from larr.report import update_report, write_markdown

MODEL = "larr"  # the row whose hyper-parameters are swept
SECTION, SETUP_SECTION = "sweep", "sweep_setup"
METRIC_KEYS = ("valid_auc", "auc", "auc_unseen")


class SweepError(LarrError):
    """An expected failure of the sweep (unknown parameter, bad grid value, no vectors): one line."""


def plot_file(run_dir: Path, param: str) -> Path:
    return plot_path(run_dir, f"sweep_{param}.png")


# ---------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Point:
    """One point of one curve: ``rec.<param> = value``, the rest of ``cfg`` unchanged."""

    param: str
    value: float | int
    cfg: Config

    def key(self, seed: int) -> str:
        """Identity of the run this point needs: what is trained (row hyper-parameters, vectors) and the seed.

        Two points with the same key (the default value of every curve, say) are one run.
        """
        rec, store = model_setup(self.cfg, MODEL)
        return json.dumps([rec.model_dump(mode="json", exclude={"threads"}), store, seed], sort_keys=True)


def check_params(params: list[str]) -> list[str]:
    """``params`` without repeats, or a one-line error naming the first unknown one."""
    for p in params:
        if p not in SWEEP_PARAMS:
            raise SweepError(f"unknown sweep parameter '{p}' (choose from {', '.join(SWEEP_PARAMS)})")
    return list(dict.fromkeys(params))


def values(cfg: Config, param: str) -> list[float | int]:
    """The grid of ``param`` plus the config's own value, ascending, without repeats."""
    return sorted({*getattr(cfg.sweep, param), getattr(cfg.rec, param)})


def point_config(cfg: Config, param: str, value: float | int) -> Config:
    """``cfg`` with ``rec.<param> = value``, validated like any config (a bad value is one line)."""
    try:
        rec = RecConfig.model_validate({**cfg.rec.model_dump(), param: value})
    except ValidationError as e:
        raise SweepError(f"sweep.{param}: value {value!r}: {e.errors()[0]['msg']}") from None
    return cfg.model_copy(update={"rec": rec})


def expand(cfg: Config, params: list[str]) -> list[Point]:
    """Every point of every curve: one parameter varied at a time, the others at their config value."""
    return [Point(p, v, point_config(cfg, p, v)) for p in check_params(params) for v in values(cfg, p)]


def run_id(point: Point, seed: int, default_key: str) -> str:
    """Folder of a sweep run under ``RUN_DIR/stage3``: ``sweep/<param>=<value>_seed<k>`` (or ``default_``)."""
    name = "default" if point.key(seed) == default_key else f"{point.param}={point.value:g}"
    return sweep_run_id(name, seed)


def plan(cfg: Config, params: list[str]) -> tuple[list[Point], dict[str, Job]]:
    """The points, and the distinct runs they need (by :meth:`Point.key`, first point names the run)."""
    points = expand(cfg, params)
    base = Point("", 0, cfg)
    jobs: dict[str, Job] = {}
    for point in points:
        for seed in cfg.sweep.seeds:
            key = point.key(seed)
            if key not in jobs:
                jobs[key] = Job(point.cfg, MODEL, seed, run_id(point, seed, base.key(seed)))
    return points, jobs


def reusable(job: Job, run_dir: Path, fingerprint: str) -> dict | None:
    """A finished run that is this job: a comparison row with the same setup, or the job's own folder."""
    setup = model_setup(job.cfg, MODEL)
    for name in ROWS:
        if model_setup(job.cfg, name) == setup:
            if (m := finished_run(job.cfg, run_dir, name, job.seed, fingerprint)) is not None:
                return {**m, "run_id": run_name(name, job.seed)}
    m = finished_run(job.cfg, run_dir, MODEL, job.seed, fingerprint, run_id=job.run_id)
    return None if m is None else {**m, "run_id": job.run_id}


# ---------------------------------------------------------------------------- running


def run(cfg: Config, run_dir: Path, data_dir: Path | None = None, params: list[str] | None = None,
        progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train (or reuse) every point; write report.json (``sweep``, ``sweep_setup``), report.md and the plots."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    params = check_params(params or list(cfg.sweep.params))
    points, jobs = plan(cfg, params)
    features = load_features(run_dir, data_dir)
    spec, _, fingerprint = features
    if (why := unavailable(cfg, run_dir, MODEL, spec)) is not None:
        raise SweepError(f"cannot sweep the {MODEL} row: {why}")
    done: dict[str, dict] = {}
    if cfg.experiment.reuse:
        done = {k: m for k, job in jobs.items() if (m := reusable(job, run_dir, fingerprint)) is not None}
    if done:
        log(f"sweep: reusing {len(done)} finished run(s): {', '.join(sorted(m['run_id'] for m in done.values()))}")
    todo = [k for k in jobs if k not in done]
    log(f"sweep: {len(points)} points of {len(params)} parameter(s) × {len(cfg.sweep.seeds)} seed(s) = "
        f"{len(jobs)} distinct runs, {len(todo)} to train")
    for key, m in zip(todo, run_jobs([jobs[k] for k in todo], run_dir, cfg.sweep.workers, features, progress, log)):
        done[key] = {**m, "run_id": jobs[key].run_id}
    results = {p: curve([pt for pt in points if pt.param == p], done, cfg) for p in params}
    setup = {"model": MODEL, "params": params, "seeds": list(cfg.sweep.seeds),
             "larr_encoder": cfg.experiment.larr_encoder, "backbone": cfg.experiment.backbone or cfg.rec.backbone,
             "runs": len(jobs), "trained_runs": len(todo), "reused_runs": len(jobs) - len(todo),
             "workers": cfg.sweep.workers, "seconds": round(time.perf_counter() - t0, 1)}
    update_report(run_dir, SECTION, results)
    report = update_report(run_dir, SETUP_SECTION, setup)
    write_outputs(run_dir, report, params)
    return {"results": results, **setup}


def curve(points: list[Point], done: dict[str, dict], cfg: Config) -> dict:
    """One parameter's entry of the ``sweep`` section: per value, mean (± std) of each metric over the seeds."""
    out: dict = {"values": [p.value for p in points], "default": getattr(model_setup(cfg, MODEL)[0], points[0].param),
                 "seeds": list(cfg.sweep.seeds), "runs": []}
    for key in METRIC_KEYS:
        out[key], out[f"{key}_std"] = [], []
    for p in points:
        runs = [done[p.key(s)] for s in cfg.sweep.seeds]
        row = aggregate(runs)
        for key in METRIC_KEYS:
            out[key].append(row[key])
            out[f"{key}_std"].append(row[f"{key}_std"])
        out["runs"].append([m["run_id"] for m in runs])
    return out


# ---------------------------------------------------------------------------- outputs


def write_outputs(run_dir: Path, report: dict, params: list[str]) -> None:
    """``report.md`` from the whole report, and the plot of each swept parameter."""
    write_markdown(run_dir, report)
    ref = (report.get("ctr") or {}).get(REFERENCE)
    for p in params:
        plot_curve(p, report[SECTION][p], plot_file(run_dir, p), ref)


def plot_curve(param: str, entry: dict, path: Path, reference: dict | None = None) -> Path:
    """Test AUC and unseen-slice AUC against the value (evenly spaced, so λ = 0 and log-like grids both read),
    seed-std error bars, the default value marked, and :data:`REFERENCE` as dashed lines when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(entry["values"]))
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for key, label, color in (("auc", "test AUC", "C0"), ("auc_unseen", "unseen-scene AUC", "C1")):
        y = np.array([np.nan if v is None else v for v in entry[key]], dtype=float)
        err = [s or 0.0 for s in entry[f"{key}_std"]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color, label=label)
        if reference is not None and reference.get(key) is not None:
            ax.axhline(reference[key], ls="--", lw=1, color=color, label=f"{REFERENCE} ({label})")
    if entry["default"] in entry["values"]:
        ax.axvline(entry["values"].index(entry["default"]), ls=":", color="gray", lw=1, label="config value")
    ax.set_xticks(x, [f"{v:g}" for v in entry["values"]])
    ax.set_xlabel(f"{SWEEP_PARAMS[param]} (rec.{param})")
    ax.set_ylabel("AUC" + (" (mean ± std over seeds)" if len(entry["seeds"]) > 1 else ""))
    ax.set_title(f"LARR sweep: {SWEEP_PARAMS[param]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


def rich_table(param: str, entry: dict, reference: dict | None = None):
    """One parameter's curve as a rich Table (printed by the CLI)."""
    from rich.table import Table

    from larr.report_md import sweep_rows

    t = Table(title=f"sweep: {SWEEP_PARAMS[param]} (rec.{param})")
    head, rows = sweep_rows(entry, reference)
    for col in head:
        t.add_column(col, justify="right")
    for row in rows:
        t.add_row(*row)
    return t
