"""Stage 2: contrastive fine-tuning of the stage-1 LLM into a text-embedding model.

Model (:class:`larr.llm.embedding_model.EmbeddingModel`): the LM's hidden state at an appended ``<emb>``
token → MLP head → L2 normalisation, so similarity is the cosine. Loss: InfoNCE with in-batch
negatives and temperature τ (:func:`larr.losses.info_nce`), one term per pair type (pairs from
:mod:`larr.llm.pairs`), combined as ``λ_uu·L_uu + λ_ss·L_ss + λ_us·L_us``.

**Why the lower layers are frozen and cached.** Back-propagating through all 30 layers of a
135M model costs ~3x its forward pass, for every text of every step; on a 2-core CPU that
allows a few dozen steps in the stage's time budget. Instead, the bottom ``L - k`` layers are
frozen and run **once** per distinct training text (in bf16 by default, ~2x faster on CPU);
their per-token outputs are kept in memory. Each step then runs only the top ``k`` layers
(``contrastive.trainable_layers``, full fine-tuning, default 1) and the head on those cached
states. The top layer still attends over every token, so it learns *what to gather* into the
``<emb>`` position — what an embedding model needs to learn — while the frozen layers keep the
token-level knowledge of stages 0-1. Only the ``<emb>`` position of the last layer is pooled,
so that layer runs for that one position (:func:`larr.llm.packed.last_token_block`, exact,
~10x cheaper than the full layer). On the demo world, k=1 with 600 steps beat k=2 with 200 steps, which took 3.5x
longer. ``k = 0`` trains the head alone on the final last-token state.

With right padding and a causal LM, a real token never attends to padding, so the cached states
of a text are the same alone or in any batch, and no attention mask is needed (see
:func:`larr.llm.embedding_model.last_token_hidden`). The trained layers are the model's own modules, so
saving is the ordinary :meth:`EmbeddingModel.save_pretrained` — nothing to merge.

**Several processes** (``torchrun`` / ``accelerate launch``, :mod:`larr.distributed`): each rank
caches the frozen states of its share of the distinct texts and the shares are gathered, so the
cache costs 1/N per rank. Every rank draws the same global batch of each pair type (one seeded
sampler) and encodes its contiguous share through DDP (:class:`TrainablePart`). With
``dist.gather_negatives`` (default) the share's vectors are gathered with gradients and every
rank computes the InfoNCE of the whole global batch — the loss of one process with the same
batch, up to float rounding; without, each rank contrasts its own ``batch_size / N`` pairs (fewer
negatives: a lower, easier loss; ``benchmarks/dist_contrastive.py`` measures the difference).
Rank 0 saves, evaluates and reports.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from larr import layout
from larr.config import Config, ContrastiveConfig
from larr.distributed import Dist, distributed, wrap_ddp
from larr.errors import LarrError
from larr.llm.embedding_model import EmbeddingModel
from larr.llm.encode import length_buckets, resolve_dtype
from larr.llm.tokens import EMB_TOKEN
from larr.losses import info_nce
from larr.train_utils import progress_bar, tb_writer, total_steps
from larr.llm.packed import is_llama_block, last_token_block
from larr.llm.pairs import PairSet, build_pairs



class ContrastiveError(LarrError):
    """Stage 2 cannot run with these inputs (message: one line)."""


# ---------------------------------------------------------------------------- frozen bottom, trainable top


def decoder_layers(base: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a decoder-only base model (Llama/Mistral/Qwen/… naming)."""
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(base, "norm"):
        raise ContrastiveError(
            f"{type(base).__name__} has no .layers/.norm; set contrastive.trainable_layers=0 (head only)"
        )
    return layers


def _view(base: nn.Module, layers: list[nn.Module], norm: bool) -> nn.Module:
    """A shallow copy of ``base`` that runs only ``layers`` (the same module objects, so training
    the view trains the model), with or without the final norm. Its own forward handles positions
    and the causal mask."""
    view = copy.copy(base)
    view._modules = dict(base._modules)  # copy.copy shares the dict; replace it before editing
    view.layers = nn.ModuleList(layers)
    if not norm:
        view.norm = nn.Identity()
    return view


@dataclass
class Split:
    """Where the base model is cut: layers ``[:n_bottom]`` frozen and cached, the rest trained."""

    n_layers: int
    n_bottom: int

    @classmethod
    def of(cls, base: nn.Module, trainable_layers: int) -> Split:
        if trainable_layers == 0:
            return cls(n_layers=-1, n_bottom=-1)  # head only: cache the final last-token state
        n = len(decoder_layers(base))
        return cls(n_layers=n, n_bottom=max(0, n - trainable_layers))

    @property
    def head_only(self) -> bool:
        return self.n_bottom < 0


def freeze_bottom(model: EmbeddingModel, split: Split) -> list[nn.Parameter]:
    """Freeze everything except the top layers (+ final norm) and the head; return the trainable params."""
    for p in model.parameters():
        p.requires_grad_(False)
    trainable: list[nn.Module] = [] if model.head is None else [model.head]
    if not split.head_only:
        trainable += [*decoder_layers(model.base)[split.n_bottom:], model.base.norm]
    params = [p for m in trainable for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def tokenize(model: EmbeddingModel, texts: list[str]) -> list[list[int]]:
    """Token ids as the saved model will see them (truncated to max_length, ``<emb>`` appended)."""
    return model.tokenize(list(texts), padding=False)["input_ids"]


def pad_states(states: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-text (T_i, h) states into (B, T, h) float32 and return the last real index."""
    width = max(s.shape[0] for s in states)
    out = torch.zeros(len(states), width, states[0].shape[-1], dtype=torch.float32, device=device)
    for i, s in enumerate(states):
        out[i, : s.shape[0]] = s.to(device=device, dtype=torch.float32)
    last = torch.tensor([s.shape[0] - 1 for s in states], device=device)
    return out, last


@torch.no_grad()
def frozen_states(
    model: EmbeddingModel, ids: list[list[int]], split: Split, dtype: torch.dtype,
    device: torch.device, batch_size: int = 32, progress: bool = False,
) -> list[torch.Tensor]:
    """Run the frozen part once per text: per-token states after layer ``n_bottom`` (T_i, h),
    or for head-only training the final last-token state (1, h). Stored in ``dtype`` on CPU."""
    layers = list(decoder_layers(model.base)[: split.n_bottom]) if not split.head_only else None
    runner = model.base if layers is None else _view(model.base, layers, norm=False)
    if dtype != torch.float32:  # a low-precision copy; the model itself stays float32
        runner = copy.deepcopy(runner).to(dtype=dtype)
    runner.eval()
    out: list[torch.Tensor | None] = [None] * len(ids)
    bar = progress_bar(len(ids), "stage2 cache", progress)
    for rows in length_buckets([len(x) for x in ids], batch_size):
        width = len(ids[rows[0]])
        x = torch.full((len(rows), width), model.tokenizer.pad_token_id, dtype=torch.long)
        for r, i in enumerate(rows):
            x[r, : len(ids[i])] = torch.tensor(ids[i])
        hidden = runner(input_ids=x.to(device), use_cache=False).last_hidden_state
        for r, i in enumerate(rows):
            n = len(ids[i])
            out[i] = (hidden[r, n - 1 : n] if layers is None else hidden[r, :n]).to("cpu", dtype).clone()
        bar.update(len(rows))
    bar.close()
    del runner
    return out  # type: ignore[return-value]


def shared_frozen_states(model: EmbeddingModel, ids: list[list[int]], split: Split, dtype: torch.dtype,
                         device: torch.device, dist: Dist, progress: bool = False) -> list[torch.Tensor]:
    """:func:`frozen_states` of every text, each rank computing its contiguous share; the shares are
    gathered (flat, with their lengths: texts have different lengths, a share may be empty)."""
    if dist.world == 1:
        return frozen_states(model, ids, split, dtype, device, progress=progress)
    mine = frozen_states(model, ids[dist.shard(len(ids))], split, dtype, device, progress=progress and dist.main)
    comm = dist.comm_device
    lengths = dist.gather_rows(torch.tensor([s.shape[0] for s in mine], dtype=torch.long, device=comm)).cpu()
    flat = torch.cat([s.reshape(-1) for s in mine]) if mine else torch.zeros(0, dtype=dtype)
    rows = dist.gather_rows(flat.to(comm)).cpu().view(int(lengths.sum()), -1)
    return list(rows.split(lengths.tolist()))


class TrainablePart(nn.Module):
    """The trained top of the model as one module, so DDP sees its forward (``encode_from_states``)."""

    def __init__(self, model: EmbeddingModel, split: Split, device: torch.device) -> None:
        super().__init__()
        self.model, self.split, self.device = model, split, device

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        return encode_from_states(self.model, states, self.split, self.device)


def encode_from_states(model: EmbeddingModel, states: list[torch.Tensor], split: Split,
                       device: torch.device) -> torch.Tensor:
    """The trainable part: top layers over cached states → last token → head → normalise (with grad)."""
    if split.head_only:
        x = torch.cat([s.to(device=device, dtype=torch.float32) for s in states])
    else:
        base = model.base
        top = list(decoder_layers(base)[split.n_bottom:])
        h, last = pad_states(states, device)
        if is_llama_block(top[-1]):
            if len(top) > 1:
                h = _view(base, top[:-1], norm=False)(inputs_embeds=h, use_cache=False).last_hidden_state
            positions = torch.arange(h.shape[1], device=device)[None]
            cos, sin = base.rotary_emb(h, positions)
            x = base.norm(last_token_block(top[-1], h, last, cos, sin))
        else:
            hidden = _view(base, top, norm=True)(inputs_embeds=h, use_cache=False).last_hidden_state
            x = hidden[torch.arange(len(states), device=device), last]
    if model.head is not None:
        x = model.head(x)
    return F.normalize(x, dim=-1)


# ---------------------------------------------------------------------------- training data


@dataclass
class TrainPairs:
    """One pair type as indices into the shared text table (the index is the text's identity)."""

    left: np.ndarray
    right: np.ndarray


def index_texts(pairs: dict[str, PairSet]) -> tuple[list[str], dict[str, TrainPairs]]:
    """Deduplicate every training text once (each is cached once) and express pairs as indices."""
    table: dict[str, int] = {}
    for ps in pairs.values():
        for t in (*ps.left, *ps.right):
            table.setdefault(t, len(table))
    indexed = {
        kind: TrainPairs(np.array([table[t] for t in ps.left], np.int64), np.array([table[t] for t in ps.right], np.int64))
        for kind, ps in pairs.items()
    }
    return list(table), indexed


class BatchSampler:
    """Per pair type, seeded passes over a fresh permutation (every pair once per pass)."""

    def __init__(self, sizes: dict[str, int], batch_size: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.sizes = sizes
        self.batch_size = batch_size
        self.queues: dict[str, list[int]] = {k: [] for k in sizes}

    def next(self, kind: str) -> np.ndarray:
        n = self.sizes[kind]
        b = min(self.batch_size, n)
        q = self.queues[kind]
        while len(q) < b:
            q.extend(self.rng.permutation(n).tolist())
        batch, self.queues[kind] = q[:b], q[b:]
        return np.array(batch, dtype=np.int64)


# ---------------------------------------------------------------------------- training loop


@dataclass
class TrainStats:
    steps: int
    seconds: float
    cache_seconds: float
    first_loss: float
    last_loss: float
    texts: int
    tokens: int
    cache_dtype: str = ""  # what the frozen-layer cache was computed in (set by train)


def train(
    model: EmbeddingModel, pairs: dict[str, PairSet], cfg: Config, device: torch.device,
    log_dir: Path | None = None, progress: bool = True, dist: Dist | None = None,
) -> TrainStats:
    """Cache the frozen layers' outputs once, then :func:`fit` the top layers and the head."""
    dist = dist or Dist()
    cc = cfg.contrastive
    pairs = trained_pairs(pairs, cc)
    texts, indexed = index_texts(pairs)
    split = Split.of(model.base, cc.trainable_layers)
    t0 = time.perf_counter()
    ids = tokenize(model, texts)
    dtype = resolve_dtype(cc.cache_dtype, device)
    states = shared_frozen_states(model, ids, split, dtype, device, dist, progress=progress)
    cache_seconds = time.perf_counter() - t0
    stats = fit(model, indexed, states, split, cfg, device, log_dir, progress, dist)
    stats.cache_seconds, stats.seconds = cache_seconds, time.perf_counter() - t0
    stats.texts, stats.tokens = len(texts), sum(len(x) for x in ids)
    stats.cache_dtype = str(dtype).removeprefix("torch.")
    return stats


def trained_pairs(pairs: dict[str, PairSet], cc: ContrastiveConfig) -> dict[str, PairSet]:
    """The pair types that take part: positive weight and at least two pairs (one negative)."""
    kept = {k: v for k, v in pairs.items() if cc.weights.get(k, 0.0) > 0 and len(v) >= 2}
    if not kept:
        raise ContrastiveError("no pair type has both a positive weight and at least 2 training pairs")
    return kept


def fit(
    model: EmbeddingModel, indexed: dict[str, TrainPairs], states: list[torch.Tensor], split: Split,
    cfg: Config, device: torch.device, log_dir: Path | None = None, progress: bool = True,
    dist: Dist | None = None,
) -> TrainStats:
    """Optimise ``Σ λ_t · InfoNCE_t`` over cached frozen states: AdamW (head and LM layers with
    their own learning rates), cosine schedule with warmup, gradient clipping. ``dist``: DDP over
    the ranks' shares of each global batch (module docstring); rank 0 logs."""
    from transformers import get_cosine_schedule_with_warmup

    dist = dist or Dist()
    cc = cfg.contrastive
    params = freeze_bottom(model, split)
    if not params:
        raise ContrastiveError("nothing to train: contrastive.head_dim is required when trainable_layers=0")
    largest = max((len(v.left) for v in indexed.values()), default=0)  # epochs count the largest pair type
    steps = total_steps(cc.max_steps, cc.epochs, largest, cc.batch_size)
    head = set(map(id, model.head.parameters())) if model.head is not None else set()
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if id(p) in head], "lr": cc.head_lr},
         {"params": [p for p in params if id(p) not in head], "lr": cc.lr}],
        weight_decay=cc.weight_decay,
    )
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(cc.warmup_ratio * steps), steps)
    sampler = BatchSampler({k: len(v.left) for k, v in indexed.items()}, cc.batch_size, cfg.seed)
    small = [k for k, v in indexed.items() if min(cc.batch_size, len(v.left)) < dist.world]
    if small:
        raise ContrastiveError(f"a batch of {', '.join(small)} pairs has fewer pairs than the {dist.world} processes")
    net = wrap_ddp(TrainablePart(model, split, device), dist, device)
    gather = dist if cfg.dist.gather_negatives else None
    writer = tb_writer(log_dir if dist.main else None)
    bar = progress_bar(steps, "stage2", progress and dist.main, unit="step")
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    step = 0
    while step < steps:
        parts = _step_losses(net, indexed, sampler, states, cc.temperature, device, dist, gather)
        loss = sum(cc.weights[k] * v for k, v in parts.items())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cc.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        reduced = dist.sum([loss.item(), *(v.item() for v in parts.values())])  # ranks' losses (equal if gathered)
        losses.append(reduced[0] / dist.world)
        values = {k: v / dist.world for k, v in zip(parts, reduced[1:])}
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", **{_short(k): f"{v:.2f}" for k, v in values.items()})
        if writer is not None:
            writer.add_scalar("train/loss", losses[-1], step)
            writer.add_scalar("train/lr", sched.get_last_lr()[-1], step)
            for k, v in values.items():
                writer.add_scalar(f"train/loss_{k}", v, step)
        over = cc.time_budget_s is not None and time.perf_counter() - t0 > cc.time_budget_s
        if dist.sum([float(over)])[0] > 0:  # every rank stops at the same step
            if dist.main:
                print(f"larr: stage 2 stopped at step {step}/{steps} (time_budget_s={cc.time_budget_s:g})",
                      file=sys.stderr, flush=True)
            break
    bar.close()
    if writer is not None:
        writer.close()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tail = losses[-max(1, min(10, len(losses) // 5)):]
    return TrainStats(steps=step, seconds=time.perf_counter() - t0, cache_seconds=0.0,
                      first_loss=losses[0], last_loss=float(np.mean(tail)), texts=0, tokens=0)


def _step_losses(net: nn.Module, indexed: dict[str, TrainPairs], sampler: BatchSampler,
                 states: list[torch.Tensor], temperature: float, device: torch.device,
                 dist: Dist, gather: Dist | None) -> dict[str, torch.Tensor]:
    """One batch per pair type; every distinct text of the step is encoded once, in one pass.

    Several ranks: each encodes its contiguous share of the global batch; ``gather`` makes the
    InfoNCE see the whole batch (vectors gathered with gradients). A text's key is its index in the
    shared text table, the same on every rank, so repeated texts are masked across ranks too."""
    batches = {k: sampler.next(k) for k in indexed}
    batches = {k: b[dist.shard(len(b))] for k, b in batches.items()}
    sides = {k: (indexed[k].left[b], indexed[k].right[b]) for k, b in batches.items()}
    uniq, inverse = np.unique(np.concatenate([np.concatenate(s) for s in sides.values()]), return_inverse=True)
    vecs = net([states[i] for i in uniq])
    out, start = {}, 0
    for k, (left, right) in sides.items():
        n = len(left)
        li = torch.from_numpy(inverse[start : start + n]).to(device)
        ri = torch.from_numpy(inverse[start + n : start + 2 * n]).to(device)
        a, b = vecs[li], vecs[ri]
        lk, rk = torch.from_numpy(left).to(device), torch.from_numpy(right).to(device)
        if gather is not None and gather.world > 1:  # two collectives: both sides' vectors, both sides' keys
            sizes = gather.row_counts(n)
            a, b = gather.gather_rows(torch.cat([a, b], dim=1), sizes).chunk(2, dim=1)
            lk, rk = gather.gather_rows(torch.stack([lk, rk], dim=1), sizes).unbind(1)
        out[k] = info_nce(a, b, temperature, left_keys=lk, right_keys=rk)
        start += 2 * n
    return out


def _short(kind: str) -> str:
    """'user_shop' → 'us', 'scene_shop' → 'sc', 'scene_scene' → 'scs' (progress-bar label)."""
    return {"scene_shop": "sc", "scene_scene": "scs"}.get(kind) or "".join(w[0] for w in kind.split("_"))


# ---------------------------------------------------------------------------- the stage


def source_model(cfg: Config, run_dir: Path) -> Path:
    """``RUN_DIR/stage1`` if stage 1 ran; else the backbone ``llm.model``, with a warning."""
    from larr.llm.backbone import resolve_model

    stage1 = layout.stage1_dir(run_dir)
    if (stage1 / "config.json").is_file():
        return stage1
    print(f"larr: warning: {stage1} not found (run `larr pretrain` first); stage 2 starts from the "
          f"untuned backbone '{cfg.llm.model}'", file=sys.stderr, flush=True)
    return resolve_model(cfg.llm.model)


def save_stage2(out_dir: Path, model: EmbeddingModel, cfg: Config, stats: dict[str, Any]) -> Path:
    """The sentence-transformers folder plus the config and training stats, swapped in atomically."""
    import json

    import yaml

    from larr.io import atomic_dir

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)  # itself atomic: replaces the (empty) temporary folder
        (tmp / layout.STAGE_CONFIG_FILE).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        (tmp / layout.STAGE2_STATS).write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return out_dir


def run(cfg: Config, run_dir: Path, data_dir: Path | None = None, progress: bool = True,
        evaluate: bool | None = None, eval_only: bool = False) -> dict[str, Any]:
    """Stage 2 end to end: pairs → train → ``RUN_DIR/stage2`` → evaluation → report.json ``stage2``.

    ``eval_only`` scores the model already in ``RUN_DIR/stage2`` (its training record is read back
    from the folder) instead of training again — e.g. after an interrupted evaluation.

    Under torchrun every rank trains its share (module docstring); rank 0 alone saves, evaluates
    and reports, the others wait for it and return its training record."""
    with distributed(cfg.device) as (dist, device):
        return _run(cfg, Path(run_dir), layout.data_dir(run_dir, data_dir), progress, evaluate, eval_only,
                    dist, device)


def _run(cfg: Config, run_dir: Path, data_dir: Path, progress: bool, evaluate: bool | None, eval_only: bool,
         dist: Dist, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    data = build_pairs(data_dir, cfg)
    if eval_only and not dist.main:
        dist.barrier()
        return {**json.loads((layout.stage2_dir(run_dir) / layout.STAGE2_STATS).read_text()),
                "out_dir": str(layout.stage2_dir(run_dir))}
    if eval_only:
        out_dir = layout.stage2_dir(run_dir)
        if not (out_dir / layout.STAGE2_STATS).is_file():
            raise ContrastiveError(f"no trained stage-2 model in {out_dir} (run `larr contrastive` without --eval-only)")
        result = json.loads((out_dir / layout.STAGE2_STATS).read_text())
        result = _evaluate_and_report(cfg, run_dir, data_dir, data, result, out_dir, progress, True)
        dist.barrier()
        return result
    src = source_model(cfg, run_dir)
    model = EmbeddingModel.from_causal_lm_folder(
        src, head_dim=cfg.contrastive.head_dim, max_length=cfg.stage2_max_length, append_token=EMB_TOKEN, device=device
    )
    stats = train(model, data.train, cfg, device, log_dir=layout.log_dir(run_dir, layout.STAGE2),
                  progress=progress, dist=dist)
    result: dict[str, Any] = {
        "train_seconds": round(stats.seconds, 1),
        "cache_seconds": round(stats.cache_seconds, 1),
        "cache_dtype": stats.cache_dtype,
        "steps": stats.steps,
        "first_loss": round(stats.first_loss, 4),
        "last_loss": round(stats.last_loss, 4),
        "texts": stats.texts,
        "tokens": stats.tokens,
        "source": str(src),
        "scene_in_user_text": cfg.contrastive.scene_in_user_text,
        "pairs": data.stats,
        "world_size": dist.world,
        "gather_negatives": cfg.dist.gather_negatives if dist.world > 1 else None,
    }
    if not dist.main:
        dist.barrier()  # rank 0 saves and evaluates
        return {**result, "out_dir": str(layout.stage2_dir(run_dir))}
    out_dir = save_stage2(layout.stage2_dir(run_dir), model, cfg, result)
    del model
    result = _evaluate_and_report(cfg, run_dir, data_dir, data, result, out_dir, progress,
                                  cfg.contrastive.evaluate if evaluate is None else evaluate)
    dist.barrier()
    return result


def _evaluate_and_report(cfg: Config, run_dir: Path, data_dir: Path, data: Any, result: dict[str, Any],
                         out_dir: Path, progress: bool, evaluate: bool) -> dict[str, Any]:
    from larr.report import update_report

    if evaluate:
        from larr.llm import evaluate as evaluate_mod

        t0 = time.perf_counter()
        result.update(evaluate_mod.evaluate(cfg, run_dir, data_dir, data, progress=progress))
        result["eval_seconds"] = round(time.perf_counter() - t0, 1)
    update_report(run_dir, "stage2", result)
    result["out_dir"] = str(out_dir)
    return result
