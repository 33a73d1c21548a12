"""``larr demo``: every stage, in order, into one run directory."""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from larr.config import Config
from larr.data.schema import validate_dir


def run_data(cfg: Config, run_dir: Path) -> dict:
    """Stage 0: generate (or convert) the data tables into ``RUN_DIR/data`` and validate them."""
    data_dir = Path(run_dir) / "data"
    if cfg.data.source == "synth":
        from larr.data.synth import generate

        summary = generate(data_dir, preset=cfg.data.preset, seed=cfg.data_seed)
    else:
        from larr.data.movielens import convert

        summary = convert(data_dir)
    validate_dir(data_dir)
    return summary


def run_demo(cfg: Config, run_dir: Path, console: Console) -> None:
    from larr.cli import _print_world

    t0 = time.perf_counter()
    console.rule(f"[bold]data[/] ({cfg.data.source}, preset {cfg.data.preset}, seed {cfg.data_seed})")
    summary = run_data(cfg, run_dir)
    _print_world(summary)
    console.print(f"data: generated and validated in {time.perf_counter() - t0:.1f}s → {run_dir}/data")
    console.print(
        "[yellow]not yet built:[/] corpus, pretrain, contrastive, embed, train, evaluate, serve "
        "(see the open issues); the demo stops after the data stage."
    )
