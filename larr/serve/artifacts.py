"""Where a served model and its ONNX export live in a run directory, and which version they are.

    RUN_DIR/stage3/<name>/          a trained row (larr.rec.models.save_model + train.py extras)
    RUN_DIR/export/<name>/model.onnx   its scoring graph (``larr export``)
    RUN_DIR/export/<name>/export.json  {"format", "model", "weights", "version", "inputs", "opset"}

The *version* is the run's name, the row's name and a hash of its weights file: it changes
exactly when the weights do, so a response says which model scored it and a stale ONNX export
(made before the row was re-trained) is refused instead of silently serving old weights.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from larr.errors import LarrError
from larr.rec.models import MODEL_FILE
from larr.layout import export_dir, stage3_dir, stage3_run

DEFAULT_MODEL = "larr_seed0"  # the full method, first seed
ONNX_FILE, EXPORT_META = "model.onnx", "export.json"
EXPORT_FORMAT = "larr-onnx/1"


class ServeError(LarrError):
    """A run directory that cannot be served as asked (no such model, no export): one line."""


def model_dir(run_dir: Path, name: str = DEFAULT_MODEL) -> Path:
    """``RUN_DIR/stage3/<name>``, checked: a typo names the rows that do exist."""
    folder = stage3_run(run_dir, name)
    if (folder / MODEL_FILE).is_file():
        return folder
    rows = sorted(p.name for p in stage3_dir(run_dir).glob("*") if (p / MODEL_FILE).is_file())
    hint = f" (trained rows: {', '.join(rows)})" if rows else " (run `larr train` or `larr demo` first)"
    raise ServeError(f"no trained model '{name}' in {stage3_dir(run_dir)}{hint}")


def weights_digest(run_dir: Path, name: str) -> str:
    """sha256 of the row's ``model.safetensors`` (12 hex): what identifies its weights."""
    with open(model_dir(run_dir, name) / MODEL_FILE, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:12]


def model_version(run_dir: Path, name: str) -> str:
    """``<run>/<row>@<weights digest>``."""
    return f"{Path(run_dir).resolve().name}/{name}@{weights_digest(run_dir, name)}"


def read_export(run_dir: Path, name: str) -> tuple[Path, dict]:
    """The ONNX file of a row and its metadata; refused when missing or made from other weights."""
    folder = export_dir(run_dir, name)
    try:
        meta = json.loads((folder / EXPORT_META).read_text())
    except (OSError, json.JSONDecodeError):
        raise ServeError(f"no ONNX export of '{name}' in {folder} (run `larr export --run {run_dir} "
                         f"--model {name}`)") from None
    digest = weights_digest(run_dir, name)
    if meta.get("format") != EXPORT_FORMAT or meta.get("weights") != digest or not (folder / ONNX_FILE).is_file():
        raise ServeError(f"{folder}: the export was made from weights {meta.get('weights')}, the model's are now "
                         f"{digest} (re-run `larr export --run {run_dir} --model {name}`)")
    return folder / ONNX_FILE, meta
