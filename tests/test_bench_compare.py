"""benchmarks/ctr_child.py's 'same' recipe is larr's: identical batches and learning-rate schedule."""
from __future__ import annotations

import torch

from bench_helpers import load_benchmark
from larr.config import load_config
from larr.rec.train import RequestBatches, set_lr


def test_peer_batches_are_larrs_request_batches():
    child = load_benchmark("ctr_child")
    request = torch.randint(0, 300, (5000,))
    larr = RequestBatches({"request": request, "i": torch.arange(5000)}, 256, seed=3)
    for epoch in (0, 1):
        larr.set_epoch(epoch)
        ours = child.request_batch_rows(request, 256, 3, epoch)
        theirs = [b["i"] for b in larr]
        assert len(ours) == len(theirs) == len(larr)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_peer_schedule_is_larrs():
    child = load_benchmark("ctr_child")
    rec = load_config(None, ["rec.lr=0.01"]).rec
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=rec.lr)
    assert rec.warmup == child.WARMUP and rec.batch_size == child.BATCH and rec.embed_dim == child.DIM
    assert rec.hidden == child.HIDDEN and rec.cross_layers == child.CROSS and rec.dropout == child.DROPOUT
    for step in (0, 5, 30, 99):
        assert child.lr_at(rec.lr, step, 100) == set_lr(opt, rec, step, 100)


def test_flops_per_sample_counts_the_dense_layers():
    compare = load_benchmark("compare_ctr")
    d = 18 * 8
    dnn = 2 * (d * 128 + 128 * 64 + 64)
    assert compare.flops_per_sample(18, "dnn") == dnn
    assert compare.flops_per_sample(18, "dcnv2") == dnn - 2 * 64 + 2 * (2 * d * d + 2 * d) + 2 * (d + 64)
