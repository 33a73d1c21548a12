"""Stage 1: continual pretraining of the backbone LM on the field-token corpus (next-token loss).

Flow (:func:`run`): load the backbone → add :data:`~larr.llm.corpus.FIELD_TOKENS` as special
tokens (embeddings resized, new rows mean-initialised) → tokenise the corpus and **pack** it
(documents joined by EOS, cut into ``seq_len`` blocks, so no compute is spent on padding) →
held-out perplexity *before* → AdamW + cosine schedule with warmup, gradient accumulation,
periodic checkpoints → held-out perplexity *after* → merged weights + tokenizer saved with
``save_pretrained`` into ``RUN_DIR/stage1/``.

**LoRA and the new tokens.** With ``method=lora`` the base weights are frozen, yet the rows
of the field tokens start as a mean embedding and must learn. They are trained through peft's
``trainable_token_indices``: only those rows get a trainable delta (a few KB, not a copy of
the 49k×576 embedding that ``modules_to_save`` would make), and because the embedding is tied
to the LM head, peft applies the same delta to the head. ``merge_and_unload`` folds both the
LoRA matrices and the token delta into plain weights, so ``stage1/`` is an ordinary model.

**Resuming.** Data order is a pure function of ``(seed, micro-batch index)`` (one seeded
permutation of the blocks per epoch) and dropout is re-seeded from ``(seed, step, rank)`` at
every optimizer step, so the step count alone says where a run stopped. A checkpoint
(``RUN_DIR/stage1_ckpt/``, replaced atomically every ``checkpoint_every`` steps and at the end)
holds the trainable tensors (safetensors), optimizer and scheduler state, the progress
counters, and a fingerprint of the settings a resumption must share; ``state.pt`` loads with
``torch.load(weights_only=True)``. An interrupted run resumed with ``--resume`` ends with the
same weights as an uninterrupted one; a finished run resumed with a larger ``max_steps``
simply trains on.

**Distributed.** Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DDP (gloo on
CPU, nccl on GPU; :mod:`larr.distributed`), every rank takes its slice of each global micro-batch
(so the data order does not depend on the number of ranks, and a checkpoint of N processes resumes
on M), and rank 0 evaluates, checkpoints and writes; the report records ``world_size``.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

from larr import layout, train_utils
from larr.config import Config, PretrainConfig
from larr.errors import LarrError
from larr.io import atomic_dir
from larr.llm import corpus as corpus_mod
from larr.device import native_bf16
from larr.distributed import Dist, distributed, wrap_ddp
from larr.llm.backbone import add_special_tokens, load_causal_lm, resolve_model
from larr.report import update_report



class PretrainError(LarrError):
    """An expected stage-1 failure the user can fix (message: one line)."""


class ResumeError(PretrainError):
    """A checkpoint does not belong to this run's settings."""


# ---------------------------------------------------------------------------- data


def token_stream(texts: list[str], tokenizer: Any) -> torch.Tensor:
    """All documents tokenised and concatenated, each followed by EOS (the document separator)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return torch.tensor([t for doc in ids for t in (*doc, eos)], dtype=torch.long)


def pack(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Cut a token stream into full ``seq_len`` blocks, shape (n_blocks, seq_len).

    The tail shorter than a block is dropped; a corpus shorter than one block becomes a single
    shorter block, so tiny test corpora still train.
    """
    if len(stream) < seq_len:
        return stream[None, :]
    n = len(stream) // seq_len
    return stream[: n * seq_len].view(n, seq_len)


def eval_blocks(stream: torch.Tensor, seq_len: int, max_tokens: int | None) -> list[torch.Tensor]:
    """Held-out blocks for perplexity: every token counts, including the last partial block."""
    if max_tokens is not None:
        stream = stream[:max_tokens]
    return [b for b in stream.split(seq_len) if len(b) > 1]


def batches_per_epoch(n_blocks: int, batch_size: int) -> int:
    return max(1, n_blocks // batch_size)


def micro_batch_indices(m: int, n_blocks: int, batch_size: int, seed: int) -> torch.Tensor:
    """Block indices of micro-batch ``m`` (0-based, counted over the whole run).

    A pure function of its arguments: epoch ``e`` uses its own seeded permutation, so a resumed
    run reproduces the order exactly by starting at ``m = step * grad_accum``.
    """
    per_epoch = batches_per_epoch(n_blocks, batch_size)
    bs = min(batch_size, n_blocks)
    epoch, j = divmod(m, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_blocks, generator=g)[j * bs : (j + 1) * bs]


# ---------------------------------------------------------------------------- model


def prepare_model(model: torch.nn.Module, tokenizer: Any, pc: PretrainConfig) -> torch.nn.Module:
    """Add the field tokens, then make the trainable part: LoRA (+ new-token rows) or everything."""
    add_special_tokens(model, tokenizer, corpus_mod.FIELD_TOKENS)
    model.config.use_cache = False
    if pc.method == "full":
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=pc.lora_r,
        lora_alpha=pc.lora_alpha,
        lora_dropout=pc.lora_dropout,
        target_modules=list(pc.target_modules),
        trainable_token_indices=tokenizer.convert_tokens_to_ids(corpus_mod.FIELD_TOKENS),
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft probes a property transformers 5 deprecated; not our concern
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """A plain transformers model: LoRA and token deltas folded into the base weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def perplexity(model: torch.nn.Module, blocks: list[torch.Tensor], pad_id: int, device: torch.device,
               batch_size: int = 8) -> float:
    """exp(mean next-token NLL) over every token of ``blocks`` (token-weighted, padding ignored)."""
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        chunk = blocks[i : i + batch_size]
        width = max(len(b) for b in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, b in enumerate(chunk):
            ids[r, : len(b)], mask[r, : len(b)] = b, 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        valid = mask[:, 1:].bool()
        nll += F.cross_entropy(logits[valid].float(), ids[:, 1:][valid], reduction="sum").item()
        count += int(valid.sum())
    model.train(was_training)
    return math.exp(nll / max(count, 1))


# ---------------------------------------------------------------------------- distributed


def step_seed(seed: int, step: int, rank: int) -> int:
    """Dropout RNG seed of one optimizer step on one rank: a resumed run needs no saved RNG state."""
    return (seed * 1_000_003 + step) * 4096 + rank


# ---------------------------------------------------------------------------- checkpoints


@dataclass
class Progress:
    """Where training stands; what a checkpoint must restore besides tensors."""

    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    ppl_before: float | None = None


def fingerprint(cfg: Config, model_path: Path, blocks: torch.Tensor) -> dict[str, Any]:
    """Settings a resumed run must share with the checkpoint (max_steps/epochs may grow).

    Not the number of processes: each rank takes its slice of the same global micro-batch, so a
    checkpoint of N processes continues on M (``pretrain.batch_size`` a multiple of both)."""
    pc = cfg.pretrain
    keep = ("method", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "seq_len", "batch_size",
            "grad_accum", "lr", "weight_decay", "warmup_ratio", "precision")
    digest = hashlib.sha256(blocks.numpy().tobytes()).hexdigest()[:16]
    return {**{k: getattr(pc, k) for k in keep}, "seed": cfg.seed, "model": str(model_path), "corpus": digest}


def save_checkpoint(ckpt_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
                    progress: Progress, fp: dict[str, Any]) -> None:
    """Replace ``ckpt_dir`` atomically with the trainable weights, optimizer/scheduler state and progress.

    The data position is ``progress.step`` (data order is a function of the step) and dropout
    is re-seeded from the step, so nothing else is needed to continue exactly.
    """
    state = {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "progress": {k: v for k, v in vars(progress).items() if v is not None},
        "micro_batches_done": progress.step * fp["grad_accum"],
        "torch_rng": torch.get_rng_state(),  # informational: training re-seeds per step
    }
    with atomic_dir(ckpt_dir) as tmp:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(state, tmp / "state.pt")
        (tmp / "fingerprint.json").write_text(json.dumps(fp, indent=2, sort_keys=True) + "\n")


def load_checkpoint(ckpt_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
                    fp: dict[str, Any]) -> Progress:
    """Restore weights, optimizer and scheduler from ``ckpt_dir``; refuse a checkpoint of other settings."""
    saved = json.loads((ckpt_dir / "fingerprint.json").read_text())
    diff = sorted(k for k in set(saved) | set(fp) if saved.get(k) != fp.get(k))
    if diff:
        raise ResumeError(
            f"{ckpt_dir}: checkpoint was made with different {', '.join(diff)}; "
            "restore those settings or run without --resume"
        )
    weights = load_file(str(ckpt_dir / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    state = torch.load(ckpt_dir / "state.pt", weights_only=True, map_location="cpu")
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return Progress(**state["progress"])


def has_checkpoint(ckpt_dir: Path) -> bool:
    return all((ckpt_dir / f).is_file() for f in ("trainable.safetensors", "state.pt", "fingerprint.json"))


# ---------------------------------------------------------------------------- training


@dataclass
class Trainer:
    """What one optimizer step needs; ``model`` is the plain (or peft) model, ``net`` its DDP wrapper if any."""

    model: torch.nn.Module
    net: torch.nn.Module
    blocks: torch.Tensor
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sched: Any
    pc: PretrainConfig
    seed: int
    device: torch.device
    dist: Dist

    def step(self, step: int) -> float:
        """Optimizer step number ``step`` (0-based) over ``grad_accum`` micro-batches; returns the mean loss."""
        pc, total = self.pc, 0.0
        torch.manual_seed(step_seed(self.seed, step, self.dist.rank))
        for a in range(pc.grad_accum):
            idx = micro_batch_indices(step * pc.grad_accum + a, len(self.blocks), pc.batch_size, self.seed)
            x = self.blocks[idx[self.dist.rank :: self.dist.world]].to(self.device)
            sync = a == pc.grad_accum - 1 or self.dist.world == 1
            with (nullcontext() if sync else self.net.no_sync()), _autocast(self.device, pc.precision):
                loss = self.net(input_ids=x, labels=x).loss
            (loss / pc.grad_accum).backward()
            total += loss.item()
        if pc.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, pc.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return self.dist.mean(total / pc.grad_accum)


def _autocast(device: torch.device, precision: str) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(precision, device))


def use_bf16(precision: str, device: torch.device) -> bool:
    """``auto`` → bf16 autocast only where the hardware does bf16 natively (:func:`larr.device.native_bf16`;
    elsewhere it is slower than fp32). On a CPU with AVX512-BF16: 1.3x faster LoRA steps, same held-out ppl.
    """
    if precision != "auto":
        return precision == "bf16"
    return native_bf16(device)


def make_trainer(model: torch.nn.Module, blocks: torch.Tensor, cfg: Config, device: torch.device,
                 dist: Dist) -> tuple[Trainer, int]:
    """Optimizer, cosine schedule with warmup and (under torchrun) the DDP wrapper; also the step count."""
    from transformers import get_cosine_schedule_with_warmup

    pc = cfg.pretrain
    if dist.world > 1 and (pc.batch_size % dist.world or len(blocks) < pc.batch_size):
        raise PretrainError(f"pretrain.batch_size={pc.batch_size} must be a multiple of the {dist.world} ranks "
                            f"and at most the {len(blocks)} corpus blocks")
    steps = train_utils.total_steps(pc.max_steps, pc.epochs, batches_per_epoch(len(blocks), pc.batch_size),
                                    pc.grad_accum)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=pc.lr, weight_decay=pc.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(pc.warmup_ratio * steps), steps)
    net = wrap_ddp(model, dist, device)
    return Trainer(model, net, blocks, params, opt, sched, pc, cfg.seed, device, dist), steps


def train(tr: Trainer, steps: int, run_dir: Path, fp: dict[str, Any], resume: bool, eval_fn: Any,
          progress_bar: bool = True) -> Progress:
    """The optimisation loop with checkpoints, progress bar and TensorBoard scalars (rank 0 writes)."""
    pc, dist = tr.pc, tr.dist
    ckpt_dir = layout.stage1_ckpt(run_dir)
    if resume and has_checkpoint(ckpt_dir):
        state = load_checkpoint(ckpt_dir, tr.model, tr.opt, tr.sched, fp)
    else:
        if resume and dist.main:
            print(f"larr: no checkpoint in {ckpt_dir}; starting stage 1 from step 0", file=sys.stderr, flush=True)
        if dist.main:
            shutil.rmtree(ckpt_dir, ignore_errors=True)  # a fresh run must never resume someone else's state
        state = Progress(ppl_before=eval_fn(tr.model) if dist.main else None)
    dist.barrier()
    writer = train_utils.tb_writer(layout.log_dir(run_dir, layout.STAGE1) if dist.main else None, purge_step=state.step)
    if writer and state.step == 0 and state.ppl_before is not None:
        writer.add_scalar("eval/ppl", state.ppl_before, 0)
    bar = train_utils.progress_bar(steps, "stage1", progress_bar and dist.main, unit="step", initial=state.step)
    tr.net.train()
    t0 = time.perf_counter() - state.seconds
    while state.step < steps:
        loss = tr.step(state.step)
        state.step += 1
        state.tokens += pc.grad_accum * min(pc.batch_size, len(tr.blocks)) * tr.blocks.shape[1]
        state.seconds = time.perf_counter() - t0
        lr = tr.sched.get_last_lr()[0]
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        if writer and (state.step % pc.log_every == 0 or state.step == steps):
            for tag, value in (("loss", loss), ("lr", lr), ("ppl", math.exp(min(loss, 50.0)))):
                writer.add_scalar(f"train/{tag}", value, state.step)
        if state.step % pc.checkpoint_every == 0 or state.step == steps:
            if dist.main:
                save_checkpoint(ckpt_dir, tr.model, tr.opt, tr.sched, state, fp)
            dist.barrier()
    bar.close()
    if writer:
        writer.close()
    return state


# ---------------------------------------------------------------------------- the stage


def save_stage1(out_dir: Path, model: torch.nn.Module, tokenizer: Any, cfg: Config, stats: dict[str, Any]) -> None:
    """Write the merged model, tokenizer, config and stats as one atomic ``save_pretrained`` folder."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / layout.STAGE_CONFIG_FILE).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        (tmp / layout.STAGE1_STATS).write_text(json.dumps(
            {**stats, "field_tokens": corpus_mod.FIELD_TOKENS}, indent=2, sort_keys=True) + "\n")


def run(cfg: Config, run_dir: Path, data_dir: Path | None = None, resume: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Stage 1 end to end; returns (and merges into report.json) ppl before/after, time, steps, tokens.

    Reads ``RUN_DIR/corpus/`` (made by ``larr corpus``); ``data_dir`` is accepted so every stage
    has the same signature, but stage 1 reads only the corpus. Under torchrun every rank trains
    its share of each batch and rank 0 evaluates and writes.
    """
    run_dir = Path(run_dir)
    pc = cfg.pretrain
    train_path, heldout_path = corpus_mod.corpus_paths(run_dir)
    train_docs = corpus_mod.read_corpus(train_path)
    heldout_docs = corpus_mod.read_corpus(heldout_path) if heldout_path.is_file() else None
    if pc.threads:
        torch.set_num_threads(pc.threads)
    with distributed(cfg.device) as (dist, device):
        return _run(cfg, run_dir, train_docs, heldout_docs, dist, device, resume, progress)


def _run(cfg: Config, run_dir: Path, train_docs: Any, heldout_docs: Any, dist: Dist, device: torch.device,
         resume: bool, progress: bool) -> dict[str, Any]:
    pc = cfg.pretrain
    model_path = resolve_model(cfg.llm.model)
    torch.manual_seed(cfg.seed)  # same LoRA initialisation on every rank and every run
    base, tokenizer = load_causal_lm(model_path, device)
    model = prepare_model(base, tokenizer, pc)

    order = torch.randperm(len(train_docs), generator=torch.Generator().manual_seed(cfg.seed))
    blocks = pack(token_stream(train_docs["text"].iloc[order.numpy()].tolist(), tokenizer), pc.seq_len)
    held = (eval_blocks(token_stream(heldout_docs["text"].tolist(), tokenizer), pc.seq_len, pc.eval_max_tokens)
            if heldout_docs is not None else [])

    def eval_fn(m: torch.nn.Module) -> float | None:
        return perplexity(m, held, tokenizer.pad_token_id, device, pc.eval_batch_size) if held else None

    trainer, steps = make_trainer(model, blocks, cfg, device, dist)
    state = train(trainer, steps, run_dir, fingerprint(cfg, model_path, blocks), resume, eval_fn,
                  progress)
    stats = {
        "ppl_before": state.ppl_before,
        "train_seconds": round(state.seconds, 2),
        "steps": state.step,
        "tokens": state.tokens,
        "tokens_per_second": round(state.tokens / max(state.seconds, 1e-9), 1),
        "method": pc.method,
        "precision": "bf16" if use_bf16(pc.precision, device) else "fp32",
        "blocks": len(blocks),
        "heldout_tokens": sum(len(b) for b in held),
        "world_size": dist.world,
    }
    if dist.main:
        final = merged(model)
        final.config.use_cache = True
        stats["ppl_after"] = eval_fn(final)
        if stats["ppl_after"] is not None:
            _log_final_ppl(run_dir, stats["ppl_after"], state.step)
        save_stage1(layout.stage1_dir(run_dir), final, tokenizer, cfg, stats)
        update_report(run_dir, "stage1", stats)
    dist.barrier()
    return stats


def _log_final_ppl(run_dir: Path, ppl: float, step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(layout.log_dir(run_dir, layout.STAGE1))) as w:
        w.add_scalar("eval/ppl", ppl, step)
