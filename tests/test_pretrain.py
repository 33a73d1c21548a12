"""Stage 1 with a tiny random Llama: special tokens, packing, ppl drop, resume, LoRA/full reload."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from larr import layout  # noqa: E402
from larr.config import load_config  # noqa: E402
from larr.llm import corpus as C  # noqa: E402
from larr.llm import pretrain as P  # noqa: E402
from larr.llm.backbone import make_tiny_model  # noqa: E402

from test_corpus import write_fixture_tables  # noqa: E402

TINY = ["device=cpu", "pretrain.precision=fp32", "corpus.heldout_frac=0.2", "pretrain.seq_len=32", "pretrain.batch_size=4",
        "pretrain.lr=3e-3", "pretrain.lora_r=8", "pretrain.warmup_ratio=0.1", "pretrain.log_every=2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Fixture tables, their corpus, and a tiny model whose BPE was trained on that corpus."""
    root = tmp_path_factory.mktemp("stage1")
    data = write_fixture_tables(root / "data", n_shops=40, n_users=10)
    corpus_run = root / "corpus_run"
    C.run(load_config(None, TINY), corpus_run, data_dir=data)
    texts = C.read_corpus(C.corpus_paths(corpus_run)[0])["text"].tolist()
    return {"model": make_tiny_model(root / "tiny", texts=texts), "corpus_run": corpus_run, "root": root}


def new_run(world: dict[str, Path], name: str) -> Path:
    """A run directory that already holds the corpus (copied, so runs stay independent)."""
    run_dir = world["root"] / name
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(world["corpus_run"] / "corpus", run_dir / "corpus")
    return run_dir


def tiny_cfg(world: dict[str, Path], *overrides: str):
    return load_config(None, [*TINY, f"llm.model={world['model']}", *overrides])


# ---------------------------------------------------------------------------- pure functions


def test_pack_and_eval_blocks():
    stream = torch.arange(10)
    assert P.pack(stream, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert P.pack(stream, 16).tolist() == [list(range(10))]
    assert [b.tolist() for b in P.eval_blocks(stream, 4, None)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert sum(len(b) for b in P.eval_blocks(stream, 4, 6)) == 6


def test_micro_batches_cover_each_epoch_once_and_are_seeded():
    n, bs = 10, 3  # 3 batches per epoch, one block per epoch left out
    epoch0 = torch.cat([P.micro_batch_indices(m, n, bs, seed=0) for m in range(3)]).tolist()
    epoch1 = torch.cat([P.micro_batch_indices(m, n, bs, seed=0) for m in range(3, 6)]).tolist()
    assert len(set(epoch0)) == len(set(epoch1)) == 9 and epoch0 != epoch1
    assert P.micro_batch_indices(4, n, bs, seed=0).tolist() == epoch1[3:6]
    assert P.micro_batch_indices(0, n, bs, seed=1).tolist() != epoch0[:3]


def test_token_stream_separates_documents_with_eos(world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world["model"])
    stream = P.token_stream(["a b", "c"], tok).tolist()
    assert stream.count(tok.eos_token_id) == 2 and stream[-1] == tok.eos_token_id


# ---------------------------------------------------------------------------- the stage


def test_lora_run_lowers_heldout_ppl_and_keeps_special_tokens(world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = new_run(world, "lora")
    stats = P.run(tiny_cfg(world, "pretrain.max_steps=30", "pretrain.checkpoint_every=10"), run_dir, progress=False)
    assert stats["steps"] == 30 and stats["tokens"] == 30 * 4 * 32
    assert stats["ppl_after"] < 0.8 * stats["ppl_before"], stats

    stage1 = run_dir / "stage1"
    assert (stage1 / "model.safetensors").is_file() and not list(stage1.glob("*.bin"))
    tok = AutoTokenizer.from_pretrained(stage1)
    model = AutoModelForCausalLM.from_pretrained(stage1)
    ids = tok.convert_tokens_to_ids(C.FIELD_TOKENS)
    assert len(set(ids)) == len(C.FIELD_TOKENS) and tok.unk_token_id not in ids
    assert max(ids) < model.get_input_embeddings().weight.shape[0] == len(tok)
    # every tag encodes to exactly its one id, also inside a document
    doc = C.shop_text({"name": "Shop1", "category": "Pizza", "district": "Harbor", "price_level": 2,
                       "rating": 4.0, "description": "Hot.", "menu": "pie 9.0"})
    enc = tok(doc, add_special_tokens=False)["input_ids"]
    for t, i in zip(C.FIELD_TOKENS, ids):
        assert tok(t, add_special_tokens=False)["input_ids"] == [i]
        if t not in ("<user>", "</user>"):
            assert enc.count(i) == 1
    # LoRA leaves the old vocabulary alone but the new field-token rows learn (trainable_token_indices)
    base = _weights(world["model"])["model.embed_tokens.weight"]
    emb = model.get_input_embeddings().weight.detach()
    assert torch.equal(emb[: len(base)], base)
    assert not torch.allclose(emb[ids], base.mean(0).expand(len(ids), -1), atol=1e-4)
    report = __import__("json").loads((run_dir / "report.json").read_text())["stage1"]
    assert set(report) >= {"ppl_before", "ppl_after", "train_seconds", "steps", "tokens"}
    assert (run_dir / "logs" / "stage1").is_dir() and list((run_dir / "logs" / "stage1").glob("events.*"))
    # the saved model reproduces the held-out ppl that was reported
    held = C.read_corpus(C.corpus_paths(run_dir)[1])["text"].tolist()
    blocks = P.eval_blocks(P.token_stream(held, tok), 32, None)
    assert P.perplexity(model, blocks, tok.pad_token_id, torch.device("cpu")) == pytest.approx(stats["ppl_after"], rel=1e-4)


def test_full_finetuning_reloads(world):
    from transformers import AutoModelForCausalLM

    run_dir = new_run(world, "full")
    stats = P.run(tiny_cfg(world, "pretrain.method=full", "pretrain.max_steps=6", "pretrain.lr=1e-3"),
                  run_dir, progress=False)
    assert stats["method"] == "full" and stats["ppl_after"] < stats["ppl_before"]
    model = AutoModelForCausalLM.from_pretrained(run_dir / "stage1")
    x = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(model(input_ids=x, labels=x).loss)


class Killed(Exception):
    pass


def _record_batches(monkeypatch, log: list[list[int]]) -> None:
    real = P.micro_batch_indices

    def recording(*args, **kwargs):
        idx = real(*args, **kwargs)
        log.append(idx.tolist())
        return idx

    monkeypatch.setattr(P, "micro_batch_indices", recording)


def _kill_at_step(monkeypatch, step: int) -> None:
    """Make the optimizer step with 0-based index ``step`` die before it consumes data."""
    real = P.Trainer.step

    def maybe_die(self, i):
        if i == step:
            raise Killed
        return real(self, i)

    monkeypatch.setattr(P.Trainer, "step", maybe_die)


def test_resume_after_kill_matches_uninterrupted_run(world, monkeypatch):
    overrides = ("pretrain.max_steps=8", "pretrain.checkpoint_every=3", "pretrain.grad_accum=2")
    full_log: list[list[int]] = []
    with monkeypatch.context() as m:
        _record_batches(m, full_log)
        ref = P.run(tiny_cfg(world, *overrides), new_run(world, "ref"), progress=False)

    run_dir = new_run(world, "killed")
    log: list[list[int]] = []
    with monkeypatch.context() as m:
        _record_batches(m, log)
        _kill_at_step(m, 7)  # dies as the 8th step starts; the last checkpoint holds 6 steps
        with pytest.raises(Killed):
            P.run(tiny_cfg(world, *overrides), run_dir, progress=False)
    assert not (run_dir / "stage1").exists()
    del log[6 * 2 :]  # the 7th step ran but died with the process: training resumes after step 6
    with monkeypatch.context() as m:
        _record_batches(m, log)
        resumed = P.run(tiny_cfg(world, *overrides), run_dir, resume=True, progress=False)

    assert resumed["steps"] == ref["steps"] == 8 and resumed["tokens"] == ref["tokens"]
    assert log == full_log  # same data order, nothing repeated or skipped
    assert resumed["ppl_before"] == ref["ppl_before"]
    assert resumed["ppl_after"] == pytest.approx(ref["ppl_after"], rel=1e-5)
    a = _weights(world["root"] / "ref" / "stage1")
    b = _weights(run_dir / "stage1")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_extends_a_finished_run(world, monkeypatch):
    """max_steps=N, then --resume with 2N: continues at step N on the batches an uninterrupted run uses."""
    full_log: list[list[int]] = []
    with monkeypatch.context() as m:
        _record_batches(m, full_log)
        P.run(tiny_cfg(world, "pretrain.max_steps=6"), new_run(world, "long"), progress=False)
    run_dir = new_run(world, "extend")
    log: list[list[int]] = []
    with monkeypatch.context() as m:
        _record_batches(m, log)
        P.run(tiny_cfg(world, "pretrain.max_steps=3", "pretrain.checkpoint_every=100"), run_dir, progress=False)
        stats = P.run(tiny_cfg(world, "pretrain.max_steps=6"), run_dir, resume=True, progress=False)
    assert stats["steps"] == 6 and log == full_log


def test_resume_refuses_a_foreign_checkpoint(world):
    run_dir = new_run(world, "foreign")
    P.run(tiny_cfg(world, "pretrain.max_steps=2"), run_dir, progress=False)
    state = torch.load(layout.stage1_ckpt(run_dir) / "state.pt", weights_only=True)
    assert state["progress"]["step"] == 2
    with pytest.raises(P.ResumeError, match="seq_len"):
        P.run(tiny_cfg(world, "pretrain.max_steps=4", "pretrain.seq_len=16"), run_dir, resume=True, progress=False)


def test_cli_corpus_and_pretrain(world, tmp_path):
    from typer.testing import CliRunner

    from larr.cli import app

    data = write_fixture_tables(tmp_path / "data")
    out = tmp_path / "run"
    sets = [a for s in [*TINY, f"llm.model={world['model']}", "pretrain.max_steps=2"] for a in ("--set", s)]
    r = CliRunner().invoke(app, ["corpus", "--out", str(out), "--data", str(data), *sets])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["pretrain", "--out", str(out), *sets])
    assert r.exit_code == 0, r.output
    assert (out / "stage1" / "config.json").is_file() and (out / "config.yaml").is_file()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


DDP_SCRIPT = """
import sys
from larr.config import load_config
from larr.llm import pretrain
pretrain.run(load_config(None, sys.argv[2:]), sys.argv[1], progress=False)
"""


@pytest.mark.slow
def test_torchrun_two_ranks_matches_one_process(world, tmp_path):
    """DDP over gloo: 2 ranks, each half of every batch, end where 1 process does (no dropout)."""
    import subprocess
    import sys

    overrides = [f"llm.model={world['model']}", *TINY, "pretrain.max_steps=4", "pretrain.lora_dropout=0"]
    single = P.run(load_config(None, overrides), new_run(world, "single"), progress=False)
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    run_dir = new_run(world, "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(run_dir), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = __import__("json").loads((run_dir / "report.json").read_text())["stage1"]
    assert report["steps"] == single["steps"] and report["tokens"] == single["tokens"]
    assert report["ppl_after"] == pytest.approx(single["ppl_after"], rel=1e-4)
    a, b = _weights(world["root"] / "single" / "stage1"), _weights(run_dir / "stage1")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
