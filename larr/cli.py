"""The ``larr`` command: one Typer app, one sub-command per pipeline stage.

Every stage command takes ``--config FILE`` (default ``configs/demo.yaml``), ``--out RUN_DIR``
and repeated ``--set dotted.key=value`` overrides. Expected failures (bad config, bad data)
print one line on stderr and exit with status 1; anything else is a bug and shows a traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from larr.config import Config, ConfigError, load_config, save_config
from larr.data.schema import SchemaError

app = typer.Typer(
    help="LARR: LLM-aided real-time scene recommendation. Stages: data → corpus → pretrain → "
    "contrastive → embed → train → evaluate → serve; `larr demo` runs them all.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Generate, convert and validate data tables.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(stderr=True)
DEFAULT_CONFIG = Path("configs/demo.yaml")

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML config file (default: configs/demo.yaml if present)."),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Dotted override, repeatable: --set data.seed=7 --set device=cpu."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run directory to write into.")]


class UserError(Exception):
    """An expected failure the user can fix; printed as one line."""


def _config(path: Path | None, overrides: list[str] | None) -> Config:
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_config(path, overrides)


# ---------------------------------------------------------------------------- data


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Data directory to write the tables into.")],
    preset: Annotated[
        str, typer.Option(help="World size: quick (seconds, tests) | demo (≈300k rows) | large (≥20M rows).")
    ] = "demo",
    seed: Annotated[int, typer.Option(help="Generator seed; the same seed gives byte-identical tables.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Generate the embedded food-delivery world: shops, users, impressions with scene features."""
    from larr.data.synth import PRESETS, generate

    if preset not in PRESETS:
        raise UserError(f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})")
    summary = generate(out, preset=preset, seed=seed, progress=progress)
    _print_world(summary)
    console.print(f"[green]wrote[/] {out}")


@data_app.command("movielens")
def data_movielens(
    out: Annotated[Path, typer.Option("--out", "-o", help="Data directory to write the tables into.")],
    source: Annotated[
        Optional[Path],
        typer.Option(help="Folder with ml-100k.inter/.item/.user; default: fetched from the recbole wheel."),
    ] = None,
) -> None:
    """Convert MovieLens-100K to the larr schema (label = rating ≥ 4, time split, timestamp scenes)."""
    from larr.data.movielens import convert

    summary = convert(out, source=source)
    _print_world(summary)
    console.print(f"[green]wrote[/] {out}")


@data_app.command("validate")
def data_validate(data_dir: Annotated[Path, typer.Argument(help="Data directory to check.")]) -> None:
    """Check every table against the declared schema; exit non-zero with one line on the first problem."""
    from larr.data.schema import validate_dir

    counts = validate_dir(data_dir)
    console.print(f"[green]ok[/] {data_dir}: " + ", ".join(f"{k} {v:,} rows" for k, v in counts.items()))


def _print_world(summary: dict) -> None:
    from rich.table import Table

    t = Table(title="world", show_header=False)
    for k, v in summary.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={_fmt(b)}" for a, b in v.items())
        t.add_row(str(k), _fmt(v))
    Console().print(t)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# ---------------------------------------------------------------------------- demo


@app.command()
def demo(
    out: OutOpt = Path("runs/demo"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny world and model (seconds); used by tests.")] = False,
) -> None:
    """Run every stage that exists into one run directory and print a summary."""
    from larr.pipeline import run_demo

    overrides = list(set_ or [])
    if quick:
        config = config or Path("configs/quick.yaml")
    cfg = _config(config, overrides)
    save_config(cfg, out)
    run_demo(cfg, out, console=console)


def main() -> None:
    try:
        app()
    except (UserError, ConfigError, SchemaError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
