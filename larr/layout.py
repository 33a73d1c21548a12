"""The run directory: every folder and file name the stages read and write, and nothing else.

Every stage, the report and serving build their paths with these helpers, so a name is spelt
once. The tree below is :data:`TREE`, rendered by :func:`tree_text`; ``docs/architecture.md``
carries the same text and a test fails when the two differ.

A stage reads only what earlier stages left here, so any stage can be re-run, resumed or
swapped (``../shared/DESIGN.md``). This module imports nothing of larr: anything may import it.
"""
from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.yaml"
DATA = "data"
CORPUS = "corpus"
STAGE1, STAGE1_CKPT = "stage1", "stage1_ckpt"
STAGE2 = "stage2"
EMBEDDINGS = "embeddings"
STAGE3, STAGE3_CKPT = "stage3", "stage3_ckpt"
FEATURES = "features"  # inside stage3/: the cached feature spec and split tensors
SWEEP = "sweep"  # inside stage3/ (and stage3_ckpt/, logs/stage3/): the sweep's runs
EXPORT = "export"
LOGS = "logs"
PLOTS = "plots"
REPORT_JSON, REPORT_MD = "report.json", "report.md"
# Files inside a stage folder.
STAGE_CONFIG_FILE = "larr_config.yaml"  # stage1/, stage2/: the config that trained the model
STAGE1_STATS, STAGE2_STATS = "larr_stage1.json", "larr_stage2.json"
METRICS_FILE = "metrics.json"  # stage3/<run>/: metrics, config and provenance of one run
SCENE_STATS_FILE = "llm_stats.safetensors"  # stage3/<run>/: per-feature mean/scale of the raw LLM vectors
PREDICTIONS_FILE = "predictions.safetensors"  # stage3/<run>/: click probabilities of the valid and test rows

TREE: list[tuple[str, str]] = [
    (CONFIG_FILE, "the config actually used (written by every stage command)"),
    (f"{DATA}/", "Parquet tables + dataset.json (larr data synth | movielens)"),
    (f"{CORPUS}/", "stage-1 documents: train.parquet, heldout.parquet (larr corpus)"),
    (f"{STAGE1}/", "stage-1 causal LM, Hugging Face folder (larr pretrain)"),
    (f"{STAGE1_CKPT}/", "resumable stage-1 checkpoint"),
    (f"{STAGE2}/", "stage-2 embedding model, sentence-transformers folder (larr contrastive)"),
    (f"{EMBEDDINGS}/<encoder>/", "frozen vectors per encoder: vectors.safetensors (keys + text digests in its header), meta.json (larr embed)"),
    (f"{STAGE3}/{FEATURES}/", "feature spec + split tensors, cached for every stage-3 run"),
    (f"{STAGE3}/<row>_seed<k>/", f"one trained CTR model (larr train | evaluate): model.safetensors, config.json, "
                                f"features.json, {METRICS_FILE}, {SCENE_STATS_FILE}, {PREDICTIONS_FILE}"),
    (f"{STAGE3}/{SWEEP}/<param>=<value>_seed<k>/", "a sweep run, same files (larr sweep)"),
    (f"{STAGE3_CKPT}/<run>/", "resumable stage-3 checkpoint of a run"),
    (f"{EXPORT}/<row>_seed<k>/", "model.onnx + export.json (larr export)"),
    (f"{LOGS}/<stage>/", f"TensorBoard: {LOGS}/{STAGE1}, {LOGS}/{STAGE2}, {LOGS}/{STAGE3}/<row>/seed<k>"),
    (f"{PLOTS}/", "ctr_auc.png, paired_delta.png, per_value.png, sweep_<param>.png (larr evaluate | sweep)"),
    (REPORT_JSON, "every stage's figures, one section per stage"),
    (REPORT_MD, "the same, rendered for people"),
]


def tree_text() -> str:
    """The run-directory layout as the text block of ``docs/architecture.md``."""
    width = max(len(p) for p, _ in TREE)
    return "RUN_DIR/\n" + "".join(f"  {p.ljust(width)}  {what}\n" for p, what in TREE)


def data_dir(run_dir: Path, data: Path | None = None) -> Path:
    """``--data DIR`` when given, else ``RUN_DIR/data``."""
    return Path(data) if data is not None else Path(run_dir) / DATA


def corpus_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CORPUS


def stage1_dir(run_dir: Path) -> Path:
    return Path(run_dir) / STAGE1


def stage1_ckpt(run_dir: Path) -> Path:
    return Path(run_dir) / STAGE1_CKPT


def stage2_dir(run_dir: Path) -> Path:
    return Path(run_dir) / STAGE2


def store_dir(run_dir: Path, encoder: str) -> Path:
    """``RUN_DIR/embeddings/<encoder>``: the store the embed stage fills for one encoder."""
    return Path(run_dir) / EMBEDDINGS / encoder


def stage3_dir(run_dir: Path) -> Path:
    return Path(run_dir) / STAGE3


def features_dir(run_dir: Path) -> Path:
    return stage3_dir(run_dir) / FEATURES


def run_name(row: str, seed: int) -> str:
    """The folder name of row ``row`` trained with ``seed``: ``<row>_seed<k>``."""
    return f"{row}_seed{seed}"


def sweep_run_id(point: str, seed: int) -> str:
    """A sweep run's id (a folder below ``stage3/``): ``sweep/<param>=<value>_seed<k>``."""
    return f"{SWEEP}/{run_name(point, seed)}"


def stage3_run(run_dir: Path, run_id: str) -> Path:
    return stage3_dir(run_dir) / run_id


def stage3_ckpt(run_dir: Path, run_id: str) -> Path:
    return Path(run_dir) / STAGE3_CKPT / run_id


def log_dir(run_dir: Path, stage: str) -> Path:
    """``RUN_DIR/logs/<stage>`` (TensorBoard), e.g. ``log_dir(run, STAGE1)``."""
    return Path(run_dir) / LOGS / stage


def export_dir(run_dir: Path, run_id: str) -> Path:
    return Path(run_dir) / EXPORT / run_id


def plot_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / PLOTS / name


def report_json(run_dir: Path) -> Path:
    return Path(run_dir) / REPORT_JSON


def report_md(run_dir: Path) -> Path:
    return Path(run_dir) / REPORT_MD


def config_file(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG_FILE
