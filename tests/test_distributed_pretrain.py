"""Stage 1 under torchrun: a checkpoint made by one process continues on two (the data order and the
checkpoint do not depend on the number of processes)."""
from __future__ import annotations

import json

import pytest
import torch

from larr.llm import pretrain as P
from test_distributed import sets, torchrun
from test_pretrain import TINY, Killed, _kill_at_step, _weights, new_run, tiny_cfg, world  # noqa: F401  (fixture)


@pytest.mark.slow
def test_pretrain_resumes_on_another_process_count(world, monkeypatch, tmp_path):
    overrides = ("pretrain.max_steps=4", "pretrain.checkpoint_every=2", "pretrain.lora_dropout=0")
    ref = P.run(tiny_cfg(world, *overrides), new_run(world, "ref_n"), progress=False)
    run_dir = new_run(world, "one_then_two")
    with monkeypatch.context() as m:
        _kill_at_step(m, 2)  # dies as the 3rd step starts; the checkpoint holds 2 steps
        with pytest.raises(Killed):
            P.run(tiny_cfg(world, *overrides), run_dir, progress=False)
    torchrun(["pretrain", "--out", str(run_dir), "--resume", *sets([*TINY, f"llm.model={world['model']}", *overrides])],
             cwd=tmp_path)
    report = json.loads((run_dir / "report.json").read_text())["stage1"]
    assert ref["world_size"] == 1 and report["world_size"] == 2
    assert report["steps"] == ref["steps"] == 4 and report["tokens"] == ref["tokens"]
    assert report["ppl_after"] == pytest.approx(ref["ppl_after"], rel=1e-4)
    a, b = _weights(world["root"] / "ref_n" / "stage1"), _weights(run_dir / "stage1")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
