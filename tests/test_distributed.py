"""Several processes, one run (``larr.distributed``): `larr train` under torchrun (2 gloo ranks on CPU)
against one process with the same global batch, rank-0-only artifacts, resuming at another process
count; the shared helper's sharding."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from larr import layout
from larr.config import load_config
from larr.distributed import Dist, launch_command
from larr.rec.train import RequestBatches, train_model
from rec_helpers import TINY_REC

REPO = Path(__file__).resolve().parents[1]
# no dropout: with it, each rank draws masks for its own rows and the runs differ by the draws alone
TRAIN_SETS = ["device=cpu", "experiment.larr_encoder=minilm", *TINY_REC, "rec.dropout=0"]


def torchrun(args: list[str], cwd: Path, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node N -m larr ARGS`` (gloo), run from ``cwd``
    (no configs/demo.yaml there: defaults + ``--set``, like ``load_config(None, sets)``)."""
    cmd = launch_command(nproc, ["-m", "larr", *args])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"),
                                                                                  os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def sets(values: list[str]) -> list[str]:
    return [x for v in values for x in ("--set", v)]


def copy_run(src: Path, dst: Path) -> Path:
    """The quick run's inputs (data, vectors), nothing built or trained."""
    for part in ("data", "embeddings"):
        shutil.copytree(src / part, dst / part)
    return dst


def files(run: Path) -> set[str]:
    """Every file of a run, TensorBoard event files by folder (their names carry host, pid and time)."""
    return {str(p.parent.relative_to(run)) + "/<events>" if p.name.startswith("events.") else str(p.relative_to(run))
            for p in run.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------- pure


def test_shards_cover_rows_once_in_order():
    assert [Dist(r, 3).shard(10) for r in range(3)] == [slice(0, 3), slice(3, 6), slice(6, 10)]
    assert Dist().shard(7) == slice(0, 7)


def test_rank_shares_make_up_the_global_batches():
    request = torch.arange(40) // 3  # requests of 3 rows
    tensors = {"request": request, "row": torch.arange(40)}
    whole = [b["row"] for b in RequestBatches(tensors, 8, seed=2)]
    shares = [[b["row"] for b in RequestBatches(tensors, 8, seed=2, rank=r, world=2)] for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == len(whole) == 5
    for i, batch in enumerate(whole):
        assert len(shares[0][i]) == len(shares[1][i]) == 4  # equal shares: DDP's mean is the global mean
        assert torch.equal(torch.cat([shares[0][i], shares[1][i]]), batch)


# ---------------------------------------------------------------------------- larr train under torchrun


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


@pytest.mark.slow
def test_two_process_train_matches_one_process(quick_run, tmp_path):
    """2 gloo ranks × 256 rows vs 1 process × 512 rows: the same global batches, gradients averaged by
    DDP, the alignment's negatives gathered across ranks. Not bit-identical — the two ranks' float sums
    (gradient all-reduce, per-rank batch means) round in another order — so weights agree to ~1e-4
    (Adam divides small gradients by their root-mean-square, which amplifies rounding) and metrics
    to 1e-3."""
    cfg_sets = [*TRAIN_SETS, "rec.epochs=2"]
    single_run, multi_run = copy_run(quick_run, tmp_path / "one"), copy_run(quick_run, tmp_path / "two")
    single = train_model(load_config(None, cfg_sets), single_run, "larr", seed=0)
    proc = torchrun(["train", "--out", str(multi_run), "--model", "larr", *sets(cfg_sets)], cwd=tmp_path)
    folder = layout.stage3_run(multi_run, layout.run_name("larr", 0))
    multi = json.loads((folder / layout.METRICS_FILE).read_text())
    assert single["world_size"] == 1 and multi["world_size"] == 2
    assert multi["steps"] == single["steps"] and multi["epochs"] == single["epochs"] == 2
    for split in ("valid", "test", "test_unseen"):
        for metric in ("auc", "gauc", "logloss"):
            assert multi[split][metric] == pytest.approx(single[split][metric], abs=1e-3), (split, metric)
    for a, b in zip(single["history"], multi["history"]):
        assert b["train_align"] == pytest.approx(a["train_align"], rel=1e-4)  # gathered: the global batch's negatives
        assert b["train_bce"] == pytest.approx(a["train_bce"], rel=1e-4)
    one = _weights(layout.stage3_run(single_run, layout.run_name("larr", 0)))
    for k, v in _weights(folder).items():
        torch.testing.assert_close(v, one[k], atol=2e-3, rtol=1e-3)
    preds = load_file(folder / layout.PREDICTIONS_FILE)["test"]  # gathered from both ranks, in row order
    assert len(preds) == multi["test"]["n"]
    # rank 0 alone wrote: the same files as the one-process run (plus its config.yaml), one summary line
    assert files(multi_run) == files(single_run) | {"config.yaml"}
    assert proc.stderr.count("stage3 larr seed 0") == 1


@pytest.mark.slow
def test_resume_with_another_process_count(quick_run, tmp_path):
    """A run interrupted after epoch 1 of 3 in one process continues under 2 ranks from its checkpoint,
    and ends where the uninterrupted one-process run ends."""
    cfg_sets = [*TRAIN_SETS, "rec.epochs=3"]
    cfg = load_config(None, cfg_sets)
    straight = train_model(cfg, copy_run(quick_run, tmp_path / "straight"), "larr", seed=0)

    class Crash(Exception):
        pass

    def crash_after_1(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise Crash

    run = copy_run(quick_run, tmp_path / "resumed")
    with pytest.raises(Crash):
        train_model(cfg, run, "larr", seed=0, on_epoch=crash_after_1)
    ckpt = layout.stage3_ckpt(run, layout.run_name("larr", 0))
    first = json.loads((ckpt / "state.json").read_text())["state"]["history"][0]
    torchrun(["train", "--out", str(run), "--model", "larr", "--resume", *sets(cfg_sets)], cwd=tmp_path)
    resumed = json.loads((layout.stage3_run(run, layout.run_name("larr", 0)) / layout.METRICS_FILE).read_text())
    assert resumed["world_size"] == 2 and [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][0] == first  # epoch 1 came from the checkpoint, not from training again
    assert resumed["steps"] == straight["steps"]
    assert resumed["test"]["auc"] == pytest.approx(straight["test"]["auc"], abs=1e-3)
    assert resumed["history"][2]["valid_auc"] == pytest.approx(straight["history"][2]["valid_auc"], abs=1e-3)


def test_batch_size_must_split_evenly_over_ranks(quick_run):
    from larr.rec.train import TrainError, fit, load_features, model_setup
    from larr.rec.models import CTRModel, ModelDims

    cfg = load_config(None, [*TRAIN_SETS, "rec.batch_size=511"])
    rec, _ = model_setup(cfg, "base")
    spec, splits, _ = load_features(quick_run)
    model = CTRModel(rec, ModelDims.from_spec(spec, 0), None)
    with pytest.raises(TrainError, match="multiple of the 2 processes"):
        fit(model, rec, splits, dist=Dist(0, 2))  # checked before any collective: no process group needed


# ---------------------------------------------------------------------------- larr embed under torchrun


@pytest.mark.slow
def test_two_process_embed_gives_the_same_store(quick_run, tmp_path):
    """Each rank encodes its share of the distinct texts (a tiny random Llama, the real loading path);
    rank 0 writes one store: the same keys in the same order and the same vectors as one process."""
    from larr import embed
    from larr.llm.backbone import make_tiny_model
    from larr.store import DiskStore

    model_dir = make_tiny_model(tmp_path / "tiny_lm", vocab_size=300, hidden_size=32, num_layers=1, num_heads=2)
    cfg_sets = ["device=cpu", f"llm.model={model_dir}", "embed.encoders=[untuned]", "embed.whole_scene=[untuned]",
                "embed.shops=all"]
    data = quick_run / "data"
    single = embed.run(load_config(None, cfg_sets), tmp_path / "one", data_dir=data, log=lambda m: None)
    proc = torchrun(["embed", "--out", str(tmp_path / "two"), "--data", str(data), *sets(cfg_sets)], cwd=tmp_path)
    a, b = (DiskStore(tmp_path / run / "embeddings" / "untuned") for run in ("one", "two"))
    assert a.keys() == b.keys() and len(a) > 100 and a.encoder == b.encoder
    va, vb = a.get_many(a.keys()), b.get_many(b.keys())
    np.testing.assert_allclose(np.stack(list(vb.values())), np.stack(list(va.values())), atol=1e-5)
    report = json.loads((tmp_path / "two" / "report.json").read_text())["embed"]
    assert report["world_size"] == 2 and single["world_size"] == 1
    assert report["encoders"]["untuned"]["whole"]["encoded"] == single["encoders"]["untuned"]["whole"]["encoded"]
    assert proc.stderr.count("embed: untuned") == 1  # rank 0 alone logs


# ---------------------------------------------------------------------------- larr contrastive under torchrun


@pytest.mark.slow
def test_two_process_contrastive_matches_one_process(tmp_path):
    """2 gloo ranks × 4 pairs vs 1 process × 8 pairs per type and step, negatives gathered across ranks:
    the same losses and weights up to float rounding (the frozen-state cache is computed in shares, the
    gradients are summed in another order); rank 0 alone saves."""
    from larr.llm import contrastive as C
    from larr.llm.backbone import make_tiny_model
    from test_pairs import write_world

    lm = make_tiny_model(tmp_path / "lm", texts=["<user>Office worker</user> weather: heavy rain hot bowl"] * 5,
                         vocab_size=300, num_layers=2)
    cfg_sets = [f"llm.model={lm}", "device=cpu", "contrastive.max_steps=6", "contrastive.batch_size=8",
                "contrastive.lr=3e-3", "contrastive.head_lr=3e-3", "contrastive.max_length=32",
                "contrastive.heldout_frac=0.2", "contrastive.uu_min_jaccard=0.3", "contrastive.ss_min_coclick=2",
                "contrastive.cache_dtype=float32", "contrastive.evaluate=false"]
    runs = {n: tmp_path / n for n in ("one", "two")}
    for run in runs.values():
        write_world(run / "data")
    single = C.run(load_config(None, cfg_sets), runs["one"], progress=False)
    proc = torchrun(["contrastive", "--out", str(runs["two"]), *sets(cfg_sets)], cwd=tmp_path)
    multi = json.loads((runs["two"] / "report.json").read_text())["stage2"]
    assert single["world_size"] == 1 and multi["world_size"] == 2 and multi["gather_negatives"] is True
    assert multi["steps"] == single["steps"] == 6 and multi["texts"] == single["texts"]
    assert multi["first_loss"] == pytest.approx(single["first_loss"], rel=1e-4)
    assert multi["last_loss"] == pytest.approx(single["last_loss"], rel=1e-3)
    a, b = (load_file(run / "stage2" / "model.safetensors") for run in runs.values())
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=1e-4)
    assert files(runs["two"]) == files(runs["one"]) | {"config.yaml"}
    assert proc.stderr.count("stage2 6 steps") == 1  # rank 0 alone prints


# ---------------------------------------------------------------------------- the gathers, 2 gloo ranks


def _gather_worker(rank: int, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    dist = Dist(rank, 2)
    n = 3 if rank == 0 else 1  # uneven shares
    x = torch.full((n, 2), float(rank + 1), requires_grad=True)
    got = dist.gather_rows(x)
    (got * torch.arange(1.0, 9.0).view(4, 2)).sum().backward()  # the same loss on both ranks
    halves = dist.gather_rows(torch.full((n,), rank, dtype=torch.bfloat16))
    ids = dist.gather_rows(torch.arange(n, dtype=torch.int64) + 10 * rank)
    empty = dist.gather_rows(torch.zeros((0 if rank else 2, 3)))
    arr = dist.gather_array(np.full(n, rank, np.float32))
    torch.save({"got": got.detach(), "grad": x.grad, "halves": halves, "ids": ids, "empty": empty,
                "arr": torch.from_numpy(arr), "sum": torch.tensor(dist.sum([1.0, rank]))}, f"{out}{rank}.pt")
    torch.distributed.barrier()  # neither rank closes its connections while the other is still in a collective
    torch.distributed.destroy_process_group()


def test_gathers_of_two_ranks(tmp_path):
    """Rows of uneven shares in rank order; bf16, int and empty shares travel; gradients of a loss on the
    gathered rows come back to the rank that made them, summed over the ranks (2 × each rank's share)."""
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(f"file://{tmp_path / 'rdzv'}", str(tmp_path / "r")), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(2))
    assert torch.equal(r0["got"], r1["got"]) and r0["got"][:, 0].tolist() == [1, 1, 1, 2]
    w = torch.arange(1.0, 9.0).view(4, 2)
    assert torch.equal(r0["grad"], 2 * w[:3]) and torch.equal(r1["grad"], 2 * w[3:])
    assert r0["halves"].dtype == torch.bfloat16 and r0["halves"].tolist() == [0, 0, 0, 1]
    assert r1["ids"].tolist() == [0, 1, 2, 10] and r1["empty"].shape == (2, 3)
    assert r1["arr"].tolist() == [0, 0, 0, 1] and r0["sum"].tolist() == [2.0, 1.0]
