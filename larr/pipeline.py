"""``larr demo``: every stage, in order, into one run directory.

Each stage is the same ``run(cfg, run_dir, ...)`` its own sub-command calls, so a demo run
is exactly ``larr data synth`` → ``corpus`` → ``pretrain`` → ``contrastive`` → ``embed`` →
``evaluate`` (→ ``sweep`` when ``sweep.in_demo``). Per-stage wall time goes to ``report.json`` under
``timings``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from larr import layout
from larr.config import Config
from larr.data.schema import validate_dir
from larr.display import row_pm, world_table
from larr.report import update_report


def run_data(cfg: Config, run_dir: Path) -> dict:
    """Stage 0: generate (or convert, or copy the user's folder) the data tables into ``RUN_DIR/data``
    and validate them."""
    data_dir = layout.data_dir(run_dir)
    if cfg.data.source == "dir":
        from larr.data.local import copy_dir

        return copy_dir(cfg.data.dir, data_dir)
    if cfg.data.source == "synth":
        from larr.data.synth import generate

        summary = generate(data_dir, preset=cfg.data.preset, seed=cfg.data_seed, descriptions=cfg.data.descriptions)
    else:
        from larr.data.movielens import convert

        summary = convert(data_dir)
    validate_dir(data_dir)
    return summary


def _stages(cfg: Config, run_dir: Path) -> list[tuple[str, Callable[[], object]]]:
    from larr import embed
    from larr.llm import contrastive, corpus, pretrain
    from larr.rec import experiment, sweep

    stages = [
        ("data", lambda: run_data(cfg, run_dir)),
        ("corpus", lambda: corpus.run(cfg, run_dir)),
        ("pretrain", lambda: pretrain.run(cfg, run_dir)),
        ("contrastive", lambda: contrastive.run(cfg, run_dir)),
        ("embed", lambda: embed.run(cfg, run_dir)),
        ("evaluate", lambda: experiment.run(cfg, run_dir)),
    ]
    if cfg.sweep.in_demo:
        stages.append(("sweep", lambda: sweep.run(cfg, run_dir)))
    return stages


def run_demo(cfg: Config, run_dir: Path, console: Console) -> None:
    run_dir = Path(run_dir)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    for name, stage in _stages(cfg, run_dir):
        console.rule(f"[bold]{name}[/]")
        t0 = time.perf_counter()
        result = stage()
        timings[name] = round(time.perf_counter() - t0, 1)
        if name == "data":
            Console().print(world_table(result))
        console.print(f"{name}: {timings[name]:.1f}s")
    timings["total"] = round(time.perf_counter() - t_all, 1)
    report = update_report(run_dir, "timings", timings)
    console.rule("[bold]summary[/]")
    Console().print(summary_table(report))
    console.print(
        f"[green]done[/] in {timings['total'] / 60:.1f} min: {run_dir}/report.md, {run_dir}/report.json, "
        f"{run_dir}/plots/"
    )


def summary_table(report: dict):
    """The demo's closing table: one row per CTR model (AUC overall and on unseen scenes)."""
    from rich.table import Table

    t = Table(title="CTR on the test split (mean ± std over seeds)")
    for col in ("model", "AUC", "GAUC", "logloss", "AUC unseen", "seeds"):
        t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)

    for name, row in report.get("ctr", {}).items():
        t.add_row(name, row_pm(row, "auc"), row_pm(row, "gauc"), row_pm(row, "logloss"), row_pm(row, "auc_unseen"),
                  str(row.get("n_seeds", "")))
    return t
