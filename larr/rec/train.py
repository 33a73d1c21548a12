"""Stage-3 training: one CTR model (a row of the comparison) for one seed.

    larr train --out RUN_DIR --model larr --seed 0 [--resume]

What happens, top to bottom:

1. :func:`load_features` — the data directory's feature spec and per-split tensors, cached in
   ``RUN_DIR/stage3/features`` (building them takes seconds; every run of the comparison reuses them).
2. :func:`model_setup` — a row name (:data:`larr.rec.rows.ROWS`) → its :class:`RecConfig` and the embedding
   store whose frozen vectors it reads (:func:`llm_table`: the :class:`~larr.rec.scene_table.SceneTable`'s
   matrix, standardised per feature by :meth:`~larr.rec.scene_table.SceneTable.standardize`).
3. :func:`fit` — AdamW on mini-batches of whole requests (:class:`RequestBatches`), warm-up then
   linear decay (:func:`set_lr`), the scene encoder at a tenth of the rate (:func:`param_groups`),
   the alignment term over requests (:func:`request_loss`), early stopping on validation AUC with
   the best weights kept, a resumable checkpoint every ``checkpoint_every`` epochs, TensorBoard
   scalars under ``RUN_DIR/logs/stage3/<name>/seed<k>``.
4. :func:`evaluate_model` — AUC, GAUC (per raw user id), logloss on valid and test, each on every
   slice of :mod:`larr.rec.slices` (all, unseen, rare, frequent); the model goes to
   ``RUN_DIR/stage3/<name>_seed<k>`` (safetensors + JSON, :func:`larr.rec.models.save_model`) with
   its ``metrics.json``, ``predictions.safetensors`` (valid and test click probabilities, for
   per-value results) and ``llm_stats.safetensors`` (how raw LLM vectors of a value not in the
   table yet map into it: subtract ``<feature>/mean``, divide by ``<feature>/scale``).

Why batches hold whole requests: the ~15 rows of one request share one scene, and the model
encodes each distinct scene of a batch once (:meth:`CTRModel.scene_vector`). With rows shuffled
one by one a batch of 1,024 rows holds ~1,000 scenes; with requests kept together it holds
~70, which makes the Transformer scene encoder ~15× cheaper — it otherwise dominates CPU time.
Requests are still shuffled every epoch.

Checkpoints are safetensors (model, best model, optimizer tensors, RNG state) plus JSON (epoch,
early-stopping state, optimizer hyper-parameters): no pickle anywhere. Resuming restores all of
it, so on CPU an interrupted and resumed run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from larr import layout
from larr.config import Config, RecConfig
from larr.data.schema import SHOPS, USERS, SchemaError
from larr.distributed import Dist, distributed, wrap_ddp
from larr.errors import LarrError
from larr.io import atomic_dir, atomic_path, atomic_write_text
from larr.metrics import ctr_metrics
from larr.rec.features import FeatureSpec, build_features
from larr.rec.models import CTRModel, CTROutput, ModelDims, ctr_loss, predict, save_model
from larr.rec.rows import ROWS
from larr.rec.slices import metric_key, slice_masks, train_counts

Splits = dict[str, dict[str, torch.Tensor]]


class TrainError(LarrError):
    """An expected failure (unknown model name, missing vectors): one line for the user."""


# ---------------------------------------------------------------------------- the rows


def model_setup(cfg: Config, name: str) -> tuple[RecConfig, str | None]:
    """Row ``name`` → its hyper-parameters and encoder store (or None).

    ``cfg.rec``, then the row's overrides, then what ``cfg.experiment`` sets on every row (``backbone``,
    ``force_rec``).
    """
    if name not in ROWS:
        raise TrainError(f"unknown model '{name}' (choose from {', '.join(ROWS)})")
    row = ROWS[name]
    update = dict(row.overrides)
    if cfg.experiment.backbone is not None:
        update["backbone"] = cfg.experiment.backbone
    update.update(cfg.experiment.force_rec)
    rec = RecConfig.model_validate({**cfg.rec.model_dump(), **update})
    store = cfg.experiment.larr_encoder if row.store == "larr" else row.store
    return rec, store


# ---------------------------------------------------------------------------- features, vectors


def _data_fingerprint(data_dir: Path) -> str:
    """Hash of the files features are built from: a regenerated data set invalidates caches."""
    h = hashlib.sha1()
    for name in ("dataset.json", "impressions.parquet", SHOPS.file, USERS.file):
        path = Path(data_dir) / name
        parts = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]  # partitions
        for part in parts:
            if part.is_file():
                with open(part, "rb") as f:
                    h.update(str(part.relative_to(data_dir)).encode() + hashlib.file_digest(f, "sha1").digest())
    return h.hexdigest()[:16]


def load_features(run_dir: Path, data_dir: Path | None = None,
                  dist: Dist | None = None) -> tuple[FeatureSpec, Splits, str]:
    """Spec, per-split tensors and the data fingerprint; cached in ``RUN_DIR/stage3/features``.

    With several ranks (``dist``) rank 0 builds the cache and the others read it after."""
    if dist is not None and dist.world > 1:
        out = load_features(run_dir, data_dir) if dist.main else None
        dist.barrier()
        return out or load_features(run_dir, data_dir)
    data_dir = layout.data_dir(run_dir, data_dir)
    if not data_dir.is_dir():
        raise SchemaError(f"{data_dir}: data directory not found (run `larr data synth --out {data_dir}`)")
    fp = _data_fingerprint(data_dir)
    cache = layout.features_dir(run_dir)
    try:
        if json.loads((cache / "fingerprint.json").read_text())["data"] == fp:
            flat = load_file(cache / "tensors.safetensors")
            splits: Splits = {}
            for key, t in flat.items():
                split, name = key.split("/", 1)
                splits.setdefault(split, {})[name] = t
            return FeatureSpec.load(cache / "features.json"), splits, fp
    except (OSError, KeyError, ValueError):
        pass  # no cache, or a stale / unreadable one: build again
    spec, splits = build_features(data_dir)
    with atomic_dir(cache) as tmp:
        spec.save(tmp / "features.json")
        save_file({f"{s}/{k}": v.contiguous() for s, ts in splits.items() for k, v in ts.items()},
                  tmp / "tensors.safetensors")
        (tmp / "fingerprint.json").write_text(json.dumps({"data": fp}) + "\n")
    return spec, splits, fp


def llm_table(spec: FeatureSpec, run_dir: Path, store: str | None, whole: bool,
              standardize: bool = True) -> tuple[torch.Tensor | None, int]:
    """The frozen vector table a model gathers from, and its width (0 when the row has no LLM input)."""
    if store is None:
        return None, 0
    from larr.store import DiskStore

    path = layout.store_dir(run_dir, store)
    if not (path / "vectors.safetensors").is_file():
        raise TrainError(f"no '{store}' vectors in {path} (run `larr embed --out {run_dir}` with "
                         f"embed.encoders including '{store}')")
    scene_table = spec.scene_table(whole)
    try:
        table = scene_table.matrix(DiskStore(path))
    except KeyError as e:
        what = "whole-scene" if whole else "scene"
        raise TrainError(f"{path}: {what} vectors incomplete ({e.args[0]})") from None
    if standardize:
        table = scene_table.standardize(table)
    return table, int(table.shape[1])


# ---------------------------------------------------------------------------- batches


class RequestBatches:
    """Shuffled mini-batches of ``batch_size`` rows that keep the rows of a request together.

    Every epoch the *requests* are permuted (seeded by ``seed + epoch``, so runs reproduce and a
    resumed run picks up the same order) and their rows laid end to end, then cut into batches;
    a request is split only where a batch boundary falls inside it. Gathering the epoch's rows
    once and slicing views is also cheaper than one gather per batch.

    Under DDP (``world`` ranks) the batches are the same *global* batches, whatever ``world``;
    rank ``r`` yields rows ``[r·B/N, (r+1)·B/N)`` of each (``batch_size`` a multiple of ``world``).
    Equal shares make DDP's gradient average exactly the one-process mean of the click loss; a
    request cut at a rank boundary is counted once by the gathered alignment term
    (:func:`request_loss`). The order, hence a checkpoint, does not depend on ``world``.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, seed: int = 0,
                 drop_last: bool = True, rank: int = 0, world: int = 1) -> None:
        self.tensors, self.batch_size, self.seed, self.drop_last = tensors, batch_size, seed, drop_last
        self.rank, self.world = rank, world
        order = torch.argsort(tensors["request"], stable=True)
        _, counts = torch.unique_consecutive(tensors["request"][order], return_counts=True)
        self.order, self.counts = order, counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.n = len(order)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def rows(self) -> torch.Tensor:
        """Row indices of this epoch: requests in a seeded random order, each request's rows together."""
        perm = torch.randperm(len(self.counts), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        counts, starts = self.counts[perm], self.starts[perm]
        offset_in_request = torch.arange(self.n) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        return self.order[torch.repeat_interleave(starts, counts) + offset_in_request]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rows = self.rows()
        epoch_data = {k: v[rows] for k, v in self.tensors.items()}
        share = self.batch_size // self.world
        for i in range(len(self)):
            start = i * self.batch_size + self.rank * share
            stop = start + share if self.rank < self.world - 1 else (i + 1) * self.batch_size  # the last takes the rest
            yield {k: v[start:stop] for k, v in epoch_data.items()}


# ---------------------------------------------------------------------------- evaluation


def evaluate_split(model: CTRModel, tensors: dict[str, torch.Tensor], batch_size: int = 8192,
                   mask: torch.Tensor | None = None, p: np.ndarray | None = None) -> dict:
    """AUC / GAUC (groups: raw user ids) / logloss of one split, or of its ``mask`` rows.

    ``p``: the split's predictions when already computed (the slices of one split share them)."""
    p = predict(model, tensors, batch_size) if p is None else p
    label, user = tensors["label"], tensors["user"]
    if mask is not None:  # only what the metrics read (a copy of every tensor cost ~1 GB on the large world)
        label, user, p = label[mask], user[mask], p[mask.numpy()]
    if len(label) == 0:
        return {"n": 0, "auc": None, "gauc": None, "logloss": None}
    return ctr_metrics(label.numpy(), p, user.numpy())


def predict_split(model: CTRModel, tensors: dict[str, torch.Tensor], batch_size: int = 8192,
                  dist: Dist | None = None) -> np.ndarray:
    """Click probabilities of every row of a split; with several ranks each predicts its contiguous shard
    and the shards are gathered in row order, so metrics are computed once on all rows."""
    if dist is None or dist.world == 1:
        return predict(model, tensors, batch_size)
    sl = dist.shard(len(tensors["label"]))
    return dist.gather_array(predict(model, {k: v[sl] for k, v in tensors.items()}, batch_size))


def scene_counts(spec: FeatureSpec, splits: Splits) -> list[torch.Tensor]:
    """Train rows of each scene ID value, per scene feature (:func:`larr.rec.slices.train_counts`)."""
    return train_counts(splits["train"]["x"], spec.scene_cols, spec.vocab_sizes)


def split_slices(spec: FeatureSpec, splits: Splits, split: str, rare_below: int,
                 counts: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Row masks of every slice (:mod:`larr.rec.slices`) of one split; ``counts``: :func:`scene_counts`
    (computed from the train split when not given, e.g. when streaming left no train split in memory)."""
    counts = scene_counts(spec, splits) if counts is None else counts
    return slice_masks(splits[split], spec.scene_cols, counts, rare_below)


def evaluate_model(model: CTRModel, spec: FeatureSpec, splits: Splits, rare_below: int,
                   batch_size: int = 8192, dist: Dist | None = None,
                   counts: list[torch.Tensor] | None = None) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Metrics of valid and test on every slice (:mod:`larr.rec.slices`), and the two splits' predictions
    (gathered from every rank under DDP: an AUC of all predictions, not a mean of per-rank AUCs).

    ``counts``: the train rows of each scene ID value when there is no train split in memory (streaming).
    A model with a scene module also gets ``probe_test``: test Δ AUC per slice with its scene input
    destroyed (:mod:`larr.rec.probe`) — whether it uses that input at all; computed by rank 0 alone, the
    rank that writes ``metrics.json`` (its probes need no collective)."""
    from larr.rec.probe import probe_metrics

    counts = scene_counts(spec, splits) if counts is None else counts
    metrics, preds = {}, {}
    for split in ("valid", "test"):
        tensors = splits[split]
        preds[split] = predict_split(model, tensors, batch_size, dist)
        masks = split_slices(spec, splits, split, rare_below, counts)
        for name, mask in masks.items():
            metrics[metric_key(split, name)] = evaluate_split(model, tensors, batch_size,
                                                              None if name == "all" else mask, preds[split])
        if split == "test" and model.scene_encoder is not None and (dist is None or dist.main):  # rank 0 writes them
            metrics["probe_test"] = probe_metrics(model, tensors, masks, preds[split], batch_size)
    return metrics, preds


def _criterion(metrics: dict) -> float | None:
    """Early-stopping score (higher is better): valid AUC; −logloss if AUC is undefined; None if no rows."""
    if metrics.get("auc") is not None:
        return float(metrics["auc"])
    return -float(metrics["logloss"]) if metrics.get("logloss") is not None else None


# ---------------------------------------------------------------------------- the loss


def first_row_of_each_request(request: torch.Tensor) -> torch.Tensor:
    """Index of the first row of every distinct request in a batch (in order of first appearance)."""
    _, inverse = torch.unique(request, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(request), dtype=torch.long, device=request.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(request), device=request.device), reduce="amin")
    return first.sort().values


def request_loss(out: CTROutput, batch: dict[str, torch.Tensor], rec: RecConfig,
                 gather: Dist | None = None) -> tuple[torch.Tensor, dict]:
    """:func:`ctr_loss` with the alignment term over *requests* instead of rows.

    The rows of one request share their user and scene, hence their (scene, collaborative) pair:
    row-level InfoNCE would compare ~15 identical pairs per request, masked out of each other's
    negatives, at O(rows²) cost (2,048² logits dominated a training step on CPU). One pair per
    request gives the same positives and every other request as a negative, at O(requests²).
    The click loss still uses every row.

    ``gather`` (several ranks, ``dist.gather_negatives``): the request pairs of every rank are
    gathered with gradients, so the negatives are the whole global batch's requests as in one
    process; a request cut at a rank boundary is kept once (its rows on both ranks share user and
    scene, hence the pair). The click loss stays per rank; DDP averages it over equal shares.
    """
    if out.scene is None:
        return ctr_loss(out, batch, rec)
    first = first_row_of_each_request(batch["request"])
    scene, collab = out.scene[first], out.collab[first]
    keys = {k: batch[k][first] for k in ("request", "scene", "whole") if k in batch}  # what alignment groups read
    if gather is not None and gather.world > 1:
        sizes = gather.row_counts(len(first))
        pairs = gather.gather_rows(torch.cat([scene, collab], dim=1), sizes)  # one collective for both sides
        scene, collab = pairs.split([scene.shape[1], collab.shape[1]], dim=1)
        keys = {k: gather.gather_rows(v, sizes) for k, v in keys.items()}
        once = first_row_of_each_request(keys["request"])
        scene, collab, keys = scene[once], collab[once], {k: v[once] for k, v in keys.items()}
    return ctr_loss(CTROutput(out.logit, scene, collab), {"label": batch["label"], **keys}, rec)


# ---------------------------------------------------------------------------- checkpoints


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs (JSON)."""

    epoch: int = 0  # epochs finished
    best_score: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    steps: int = 0
    history: list[dict] = field(default_factory=list)


def _state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, model: CTRModel, best: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                    state: TrainState, seed: int) -> None:
    """Model, best model, optimizer and RNG as safetensors, the rest as JSON; one atomic folder swap."""
    opt_sd = opt.state_dict()
    opt_tensors = {f"{i}/{k}": v.detach().cpu().contiguous() for i, s in opt_sd["state"].items()
                   for k, v in s.items() if torch.is_tensor(v)}
    opt_other = {str(i): {k: v for k, v in s.items() if not torch.is_tensor(v)} for i, s in opt_sd["state"].items()}
    with atomic_dir(Path(path)) as tmp:
        save_file(_state_dict(model), tmp / "model.safetensors")
        save_file(best, tmp / "best.safetensors")
        save_file(opt_tensors or {"_empty": torch.zeros(0)}, tmp / "optimizer.safetensors")
        save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
        meta = {"state": asdict(state), "param_groups": opt_sd["param_groups"], "opt_state_other": opt_other,
                "rec": model.cfg.model_dump(mode="json", exclude={"threads"}), "seed": seed}
        (tmp / "state.json").write_text(json.dumps(meta, indent=1) + "\n")


def load_checkpoint(path: Path, model: CTRModel, opt: torch.optim.Optimizer, seed: int) -> tuple[TrainState, dict]:
    """Restore model, optimizer and RNG from :func:`save_checkpoint`; return the state and best weights."""
    path = Path(path)
    meta = json.loads((path / "state.json").read_text())
    if meta.get("rec") != model.cfg.model_dump(mode="json", exclude={"threads"}) or meta.get("seed") != seed:
        raise TrainError(f"{path}: the checkpoint was made with another config or seed; train without --resume")
    model.load_state_dict(load_file(path / "model.safetensors"))
    flat = {k: v for k, v in load_file(path / "optimizer.safetensors").items() if k != "_empty"}
    per_param: dict[int, dict] = {int(i): dict(other) for i, other in meta["opt_state_other"].items()}
    for key, t in flat.items():
        i, name = key.split("/", 1)
        per_param.setdefault(int(i), {})[name] = t
    opt.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
    torch.set_rng_state(load_file(path / "rng.safetensors")["torch"])
    return TrainState(**meta["state"]), load_file(path / "best.safetensors")


# ---------------------------------------------------------------------------- the loop


@dataclass
class FitResult:
    state: TrainState
    seconds: float


def _tb_writer(log_dir: Path | None):
    from larr.train_utils import tb_writer

    return tb_writer(log_dir)


def param_groups(model: CTRModel, rec: RecConfig) -> list[dict]:
    """The scene encoder learns at ``rec.scene_lr_scale`` × the rate of the rest.

    At the full rate (1e-2, right for the embedding tables) the Transformer's head ReLUs died early
    and the scene vector went flat; a tenth of it kept the LLM path alive (valid AUC of an LLM-only
    scene model after one epoch: 0.646 → 0.670; no scene input: 0.62).
    """
    scene = [p for n, p in model.named_parameters() if n.startswith("scene_encoder.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("scene_encoder.")]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if scene:
        groups.append({"params": scene, "lr_scale": rec.scene_lr_scale})
    return groups


def fit(model: CTRModel, rec: RecConfig, splits: Splits, seed: int = 0, ckpt_dir: Path | None = None,
        log_dir: Path | None = None, resume: bool = False, progress: bool = False,
        on_epoch: Callable[[int, dict], None] | None = None, desc: str = "train",
        dist: Dist | None = None, gather_negatives: bool = True, batches: Iterable | None = None) -> FitResult:
    """Train ``model`` in place; on return it holds the weights of its best validation epoch.

    ``on_epoch(epoch, record)`` runs after each epoch's checkpoint (tests use it to interrupt).
    ``dist`` (several ranks): ``model`` is trained through DDP on each rank's share of the same
    global batches, validation AUC is computed on the gathered predictions, rank 0 alone writes
    checkpoints and TensorBoard scalars; a checkpoint resumes with any number of ranks.
    ``batches``: the train batches when they do not come from ``splits["train"]``
    (:class:`larr.rec.stream.StreamedBatches`: ``set_epoch``, ``len``, this rank's share of each batch).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    dist = dist or Dist()
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(param_groups(model, rec), lr=rec.lr, weight_decay=rec.weight_decay)
    if rec.batch_size % dist.world:
        raise TrainError(f"rec.batch_size={rec.batch_size} must be a multiple of the {dist.world} processes")
    if batches is None:
        train = {k: v.to(device) for k, v in splits["train"].items()}
        batches = RequestBatches(train, rec.batch_size, seed=seed, rank=dist.rank, world=dist.world)
    if len(batches) == 0:
        raise TrainError(f"the train split has {batches.n} rows, fewer than one batch of {rec.batch_size}")
    state, best = TrainState(), _state_dict(model)
    if resume and ckpt_dir is not None and (Path(ckpt_dir) / "state.json").is_file():
        state, best = load_checkpoint(ckpt_dir, model, opt, seed)
    # the frozen LLM table is a buffer, identical on every rank: no per-step broadcast
    net = wrap_ddp(model, dist, device, sync_buffers=False)
    gather = dist if gather_negatives else None
    writer = _tb_writer(log_dir if dist.main else None)
    total_steps = rec.epochs * len(batches)
    while state.epoch < rec.epochs and state.bad_epochs < rec.patience:
        batches.set_epoch(state.epoch)
        model.train()
        sums: dict[str, float] = {}
        t_epoch = time.perf_counter()
        for batch in tqdm(batches, desc=f"{desc} epoch {state.epoch + 1}/{rec.epochs}",
                          disable=not (progress and dist.main), leave=False, unit="batch"):
            set_lr(opt, rec, state.steps, total_steps)
            batch = {k: v.to(device) for k, v in batch.items()}  # a no-op for in-memory splits
            loss, parts = request_loss(net(batch), batch, rec, gather)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state.steps += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
        means = dict(zip(sums, dist.sum([v / len(batches) / dist.world for v in sums.values()])))
        record = {"epoch": state.epoch + 1, **{f"train_{k}": v for k, v in means.items()},
                  "train_samples_per_s": round(len(batches) * rec.batch_size / (time.perf_counter() - t_epoch), 1)}
        valid = evaluate_split(model, splits["valid"], rec.eval_batch_size,
                               p=predict_split(model, splits["valid"], rec.eval_batch_size, dist))
        record.update({f"valid_{k}": valid[k] for k in ("auc", "gauc", "logloss")})
        score = _criterion(valid)
        if state.best_score is None or (score is not None and score > state.best_score):
            state.best_score, state.best_epoch, state.bad_epochs, best = score, state.epoch + 1, 0, _state_dict(model)
        else:
            state.bad_epochs += 1
        state.epoch += 1
        state.history.append(record)
        _log_scalars(writer, record, state.steps)
        if ckpt_dir is not None and (state.epoch % rec.checkpoint_every == 0 or state.epoch == rec.epochs):
            if dist.main:
                save_checkpoint(ckpt_dir, model, best, opt, state, seed)
            dist.barrier()
        if on_epoch is not None:
            on_epoch(state.epoch, record)
    if writer is not None:
        writer.close()
    model.load_state_dict(best)
    return FitResult(state, round(time.perf_counter() - t0, 2))


def set_lr(opt: torch.optim.Optimizer, rec: RecConfig, step: int, total_steps: int) -> float:
    """Learning rate of ``step``: linear warm-up over ``rec.warmup`` of the steps, then constant or
    linear decay to 0 at the last step of ``rec.epochs``; each group scaled by its ``lr_scale``.

    Why warm-up: at the first steps the click loss mostly wants a bias (CTR ≈ 10 %), and at a
    full rate of 1e-2 the scene encoder supplied it — its ReLUs died and the scene vector became
    the same constant for every scene (std across scenes 1e-4 after 50 steps), so the LLM path
    carried nothing. Why decay: a few epochs at a high rate, ending settled. A function of the
    step alone, so a resumed run needs no scheduler state.
    """
    warm = max(1, int(rec.warmup * total_steps))
    if step < warm:
        factor = (step + 1) / warm
    elif rec.lr_schedule == "linear":
        factor = max(0.0, 1.0 - (step - warm) / max(1, total_steps - warm))
    else:
        factor = 1.0
    for group in opt.param_groups:
        group["lr"] = rec.lr * factor * group.get("lr_scale", 1.0)
    return rec.lr * factor


def _log_scalars(writer, record: dict, step: int) -> None:
    if writer is None:
        return
    for k, v in record.items():
        if k != "epoch" and v is not None and math.isfinite(v):
            split, _, metric = k.partition("_")
            writer.add_scalar(f"{split}/{metric}", v, record["epoch"])
    writer.add_scalar("train/steps", step, record["epoch"])
    writer.flush()


# ---------------------------------------------------------------------------- one run


def set_threads(rec: RecConfig) -> None:
    """``rec.threads`` torch threads (0 = every core); parallel comparison workers use 1 each."""
    torch.set_num_threads(rec.threads or os.cpu_count() or 1)


def train_model(cfg: Config, run_dir: Path, name: str, seed: int = 0, data_dir: Path | None = None,
                resume: bool = False, progress: bool = False,
                features: tuple[FeatureSpec, Splits, str] | None = None,
                on_epoch: Callable[[int, dict], None] | None = None, run_id: str | None = None) -> dict:
    """Train row ``name`` with ``seed``, evaluate it, save it; return (and write) its metrics.

    ``features`` passes an already loaded :func:`load_features` result (the comparison loads once).
    ``run_id`` names the run's folder under ``RUN_DIR/stage3`` (and its checkpoint and log folders)
    instead of ``<name>_seed<k>``: the sweep trains the ``larr`` row at other hyper-parameters
    without overwriting the comparison's run.

    Under ``torchrun`` / ``accelerate launch`` every rank runs this; they train one model through
    DDP (:func:`fit`), evaluate it on gathered predictions, and rank 0 alone writes the run's
    folder. ``metrics.json`` records ``world_size``, the number of processes that trained it.
    """
    with distributed(cfg.device) as (dist, device):
        return _train_model(cfg, Path(run_dir), name, seed, data_dir, resume, progress, features, on_epoch,
                            run_id, dist, device)


def _train_model(cfg: Config, run_dir: Path, name: str, seed: int, data_dir: Path | None, resume: bool,
                 progress: bool, features: tuple[FeatureSpec, Splits, str] | None,
                 on_epoch: Callable[[int, dict], None] | None, run_id: str | None, dist: Dist,
                 device: torch.device) -> dict:
    from larr.rec import stream

    rec, store = model_setup(cfg, name)
    set_threads(rec)
    batches, counts = None, None
    if features is None and stream.use_streaming(cfg.stream, layout.data_dir(run_dir, data_dir)):
        data = layout.data_dir(run_dir, data_dir)
        fingerprint = _data_fingerprint(data)
        spec, counts, splits = stream.stream_features(cfg.stream, data, layout.features_dir(run_dir), fingerprint, dist)
        batches = stream.StreamedBatches(data, spec, rec.batch_size, cfg.stream, seed=seed, dist=dist)
    else:
        spec, splits, fingerprint = features or load_features(run_dir, data_dir, dist)
    whole = rec.scene_encoder == "whole_text"
    raw_table, llm_dim = llm_table(spec, run_dir, store, whole, standardize=False)
    table = raw_table
    if raw_table is not None and rec.llm_standardize:
        table = spec.scene_table(whole).standardize(raw_table)
    torch.manual_seed(seed)
    counts = scene_counts(spec, splits) if counts is None else counts  # streaming: from its vocabulary pass
    model = CTRModel(rec, ModelDims.from_spec(spec, llm_dim, counts), table).to(device)
    rid = run_id or layout.run_name(name, seed)
    log_dir = layout.log_dir(run_dir, layout.STAGE3) / (run_id or Path(name) / f"seed{seed}")
    result = fit(model, rec, splits, seed=seed, ckpt_dir=layout.stage3_ckpt(run_dir, rid),
                 log_dir=log_dir, resume=resume, progress=progress,
                 on_epoch=on_epoch, desc=rid, dist=dist, gather_negatives=cfg.dist.gather_negatives, batches=batches)
    model = model.cpu()
    metrics = {"model": name, "seed": seed, "store": store, "rec": rec.model_dump(mode="json"),
               "data": fingerprint, "encoder": _store_identity(run_dir, store),
               "epochs": result.state.epoch, "best_epoch": result.state.best_epoch, "steps": result.state.steps,
               "train_seconds": result.seconds, "history": result.state.history,
               "rare_below": cfg.experiment.rare_below, "world_size": dist.world, "streamed": batches is not None}
    scores, preds = evaluate_model(model, spec, splits, cfg.experiment.rare_below, rec.eval_batch_size, dist,
                                   counts)
    metrics.update(scores)
    if dist.main:
        _save_run(model, spec, layout.stage3_run(run_dir, rid), preds, raw_table, rec, whole, metrics)
    dist.barrier()  # the other ranks return once the run's folder exists
    return metrics


def _save_run(model: CTRModel, spec: FeatureSpec, folder: Path, preds: dict[str, np.ndarray],
              raw_table: torch.Tensor | None, rec: RecConfig, whole: bool, metrics: dict) -> None:
    out = save_model(model, spec, folder)
    with atomic_path(out / layout.PREDICTIONS_FILE) as tmp:
        save_file({k: torch.from_numpy(v.astype(np.float32)) for k, v in preds.items()}, tmp)
    if raw_table is not None and rec.llm_standardize:  # how raw vectors of a new value map into the table
        spec.scene_table(whole).stats(raw_table).save(out / layout.SCENE_STATS_FILE)
    atomic_write_text(out / layout.METRICS_FILE, json.dumps(metrics, indent=1) + "\n")


def _store_identity(run_dir: Path, store: str | None) -> str | None:
    """The encoder identity recorded by the store (a re-embedded store invalidates finished runs)."""
    if store is None:
        return None
    meta = layout.store_dir(run_dir, store) / "meta.json"
    return json.loads(meta.read_text()).get("encoder") if meta.is_file() else None


def finished_run(cfg: Config, run_dir: Path, name: str, seed: int, fingerprint: str,
                 run_id: str | None = None) -> dict | None:
    """The saved metrics of (name, seed) if that run finished with the same config, data and vectors.

    ``run_id``: look in ``RUN_DIR/stage3/<run_id>`` instead of ``<name>_seed<k>`` (see :func:`train_model`).
    """
    path = layout.stage3_run(run_dir, run_id or layout.run_name(name, seed)) / layout.METRICS_FILE
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    rec, store = model_setup(cfg, name)
    ignore = {"threads"}  # how fast, not what is trained
    saved = {k: v for k, v in (m.get("rec") or {}).items() if k not in ignore}
    same = (saved == rec.model_dump(mode="json", exclude=ignore) and m.get("data") == fingerprint
            and m.get("rare_below") == cfg.experiment.rare_below and (path.parent / layout.PREDICTIONS_FILE).is_file()
            and m.get("store") == store and m.get("encoder") == _store_identity(run_dir, store))
    return m if same else None
