"""larr's DNN against a minimal reference: a plain PyTorch MLP written here, over the same features.

Same inputs (the ``base_scene_ids`` row's ID fields of the quick world, one embedding per field =
a one-hot times a weight matrix), same architecture (embedding size, hidden layers, dropout, a
linear head), same optimiser settings; everything else — embedding tables, batching (plain row
shuffles instead of larr's request-grouped batches), the learning-rate schedule, early stopping,
AUC — is written from scratch below. Mean test AUC over three seeds must agree within 0.01.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from larr.config import load_config
from larr.rec.train import load_features, train_model

ROW = "base_scene_ids"
SEEDS = (0, 1, 2)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    order = np.argsort(p, kind="stable")
    ranks = np.empty(len(p))
    sp = p[order]
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class ReferenceMLP(nn.Module):
    def __init__(self, vocab_sizes: list[int], dim: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        self.offsets = torch.tensor(np.cumsum([0, *vocab_sizes[:-1]]), dtype=torch.long)
        self.onehot_weight = nn.Parameter(torch.randn(sum(vocab_sizes), dim) * 0.01)  # one-hot @ W = embedding
        layers, width = [], len(vocab_sizes) * dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.onehot_weight[x + self.offsets]  # (B, fields, dim)
        return self.mlp(emb.flatten(1)).squeeze(-1)


def reference_fit(splits, rec, seed: int) -> float:
    torch.manual_seed(seed)
    xtr, ytr = splits["train"]["x"], splits["train"]["label"]
    model = ReferenceMLP(VOCAB, rec.embed_dim, rec.hidden, rec.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=rec.lr, weight_decay=rec.weight_decay)
    steps_per_epoch = len(xtr) // rec.batch_size
    total, warm = rec.epochs * steps_per_epoch, max(1, int(rec.warmup * rec.epochs * steps_per_epoch))
    step, best, best_state = 0, -1.0, None
    g = torch.Generator().manual_seed(1000 + seed)
    for _ in range(rec.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for b in range(steps_per_epoch):
            rows = perm[b * rec.batch_size:(b + 1) * rec.batch_size]
            lr = rec.lr * ((step + 1) / warm if step < warm else max(0.0, 1 - (step - warm) / max(1, total - warm)))
            for group in opt.param_groups:
                group["lr"] = lr
            loss = nn.functional.binary_cross_entropy_with_logits(model(xtr[rows]), ytr[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            valid = auc(splits["valid"]["label"].numpy(), model(splits["valid"]["x"]).numpy())
        if valid > best:
            best, best_state = valid, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        return auc(splits["test"]["label"].numpy(), model(splits["test"]["x"]).numpy())


VOCAB: list[int] = []


@pytest.mark.slow
def test_larr_dnn_matches_a_plain_pytorch_mlp(quick_run):
    torch.set_num_threads(1)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "quick.yaml", ["rec.backbone=dnn", "rec.threads=1", "rec.epochs=3",
                                              "rec.patience=3", "rec.weight_decay=0.0"])
    rec = cfg.rec
    spec, splits, _ = load_features(quick_run)
    VOCAB[:] = spec.vocab_sizes
    assert len(spec.field_names) == len(spec.vocab_sizes) and any(n.startswith("scene:") for n in spec.field_names)
    larr_auc = [train_model(cfg, quick_run, ROW, seed=s)["test"]["auc"] for s in SEEDS]
    ref_auc = [reference_fit(splits, rec, s) for s in SEEDS]
    # the reference's own AUC agrees with larr's metric code on the same predictions
    y, p = np.array([0, 1, 1, 0, 1]), np.array([0.1, 0.8, 0.3, 0.3, 0.9])
    from larr.metrics import auc as larr_auc_fn
    assert auc(y, p) == pytest.approx(larr_auc_fn(y, p))
    print(f"test AUC larr DNN {np.mean(larr_auc):.4f} {larr_auc}, reference MLP {np.mean(ref_auc):.4f} {ref_auc}")
    assert min(ref_auc) > 0.55, ref_auc  # the reference learns something
    assert abs(np.mean(larr_auc) - np.mean(ref_auc)) <= 0.01, (larr_auc, ref_auc)
