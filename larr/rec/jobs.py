"""Training many stage-3 runs: sequentially, or in parallel worker processes.

Shared by the comparison (:mod:`larr.rec.experiment`: every row × seed) and the
hyper-parameter sweep (:mod:`larr.rec.sweep`: the ``larr`` row at many configs). A :class:`Job`
carries its own config, so one batch can mix runs of different hyper-parameters.

Why processes: these models are small, and on a few CPU cores two single-threaded runs side
by side finish sooner than one run with two threads (which spends much of its time
synchronising). Workers are *spawned*, so no forked torch thread pool is inherited.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from larr.config import Config
from larr.rec.train import train_model


@dataclass(frozen=True)
class Job:
    """One run: row ``name`` with ``seed`` under ``cfg``, saved as ``RUN_DIR/stage3/<run_id>``.

    ``run_id`` None is the comparison's own ``<name>_seed<k>``; the sweep names its runs
    ``sweep/<param>=<value>_seed<k>`` so they never overwrite a row of the comparison.
    """

    cfg: Config
    name: str
    seed: int
    run_id: str | None = None

    @property
    def label(self) -> str:
        return self.run_id or f"{self.name} seed {self.seed}"


def _worker(cfg_dump: dict, run_dir: str, name: str, seed: int, run_id: str | None) -> dict:
    """One run in a fresh process with one torch thread (two of them share 2 cores)."""
    cfg = Config.model_validate(cfg_dump)
    cfg = cfg.model_copy(update={"rec": cfg.rec.model_copy(update={"threads": 1})})
    return train_model(cfg, Path(run_dir), name, seed, run_id=run_id)


def run_jobs(jobs: list[Job], run_dir: Path, workers: int, features=None, progress: bool = False,
             log: Callable[[str], None] = print) -> list[dict]:
    """Train ``jobs`` (in order; ``workers`` > 1: that many processes) and return their metrics in job order.

    ``features`` (a :func:`larr.rec.train.load_features` result) saves the sequential path a reload;
    workers read the cached features from the run directory themselves.
    """
    out: list[dict] = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            out.append(train_model(job.cfg, run_dir, job.name, job.seed, features=features, progress=progress,
                                   run_id=job.run_id))
            log(run_line(job, out[-1]))
        return out
    ctx = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_worker, j.cfg.model_dump(mode="json"), str(run_dir), j.name, j.seed, j.run_id)
                   for j in jobs]
        for job, f in zip(jobs, futures):
            out.append(f.result())
            log(run_line(job, out[-1]))
    return out


def run_line(job: Job, m: dict) -> str:
    """One log line per finished run: test AUC, unseen-slice AUC, epochs, time."""
    u = m["test_unseen"]["auc"]
    return (f"stage3: {job.label}: test AUC {m['test']['auc']:.4f}, unseen "
            f"{'n/a' if u is None else f'{u:.4f}'} ({m['epochs']} epochs, best {m['best_epoch']}, "
            f"{m['train_seconds']:.0f}s)")
