"""larr export: the ONNX scoring graph scores like PyTorch (≤ 1e-5), is written atomically, and stale ones are refused."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from larr.cli import main
from larr.config import load_config
from larr.encoders import load_encoder
from larr.layout import export_dir
from larr.serve.artifacts import EXPORT_META, ServeError, read_export
from larr.serve.export import export_onnx
from larr.serve.ranker import Ranker
from serve_helpers import copy_store, request_rows, serve_run

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A private copy of the tiny run (the export writes into it), exported once."""
    run = Path(shutil.copytree(serve_run(tmp_path_factory), tmp_path_factory.mktemp("export") / "run"))
    export_onnx(run, "larr_seed0")
    return run


def test_export_is_one_complete_folder(exported):
    folder = export_dir(exported, "larr_seed0")
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "model.onnx"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    meta = json.loads((folder / EXPORT_META).read_text())
    assert meta["inputs"]["x"][0] == "n" and meta["inputs"]["scene"][0] == 1 and meta["version"].startswith("run/")


def test_onnx_scores_equal_torch_scores(exported, tmp_path):
    enc = load_encoder("larr", load_config(exported / "config.yaml", ["device=cpu"]), exported)
    store = str(copy_store(exported, tmp_path / "larr"))
    torch_r = Ranker.load(exported, backend="torch", store=store, encoder=enc)
    onnx_r = Ranker.load(exported, backend="onnx", store=store, encoder=enc)
    requests = request_rows(exported, unseen=False, n=2) + request_rows(exported, unseen=True, n=2)
    requests.append({"user_id": -5, "scene": {"weather": "meteor shower", "hour": 3},  # new value, unknown ids
                     "candidates": ["nope", *range(200)]})
    requests.append({"user_id": 1, "scene": {}, "candidates": [7]})  # one candidate, every feature missing
    for req in requests:
        a = torch_r.rank(req["user_id"], req["scene"], req["candidates"])
        b = onnx_r.rank(req["user_id"], req["scene"], req["candidates"])
        sa, sb = dict(zip(a.shop_ids, a.scores)), dict(zip(b.shop_ids, b.scores))
        np.testing.assert_allclose([sb[s] for s in sa], list(sa.values()), atol=1e-5)
        assert b.version == a.version and b.scene_sources == a.scene_sources
    torch_r.close()
    onnx_r.close()


def test_stale_or_missing_export_is_refused(exported):
    meta_file = export_dir(exported, "larr_seed0") / EXPORT_META
    meta = json.loads(meta_file.read_text())
    try:
        meta_file.write_text(json.dumps({**meta, "weights": "000000000000"}))  # as if the row was re-trained
        with pytest.raises(ServeError, match="re-run `larr export"):
            Ranker.load(exported, backend="onnx", encoder=None)
    finally:
        meta_file.write_text(json.dumps(meta))
    with pytest.raises(ServeError, match="no ONNX export"):
        read_export(exported, "larr_meanpool_seed0")


@pytest.mark.parametrize("args, says", [
    (["export", "--model", "nope_seed0"], "no trained model 'nope_seed0'"),
    (["serve", "--backend", "tensorflow"], "unknown backend 'tensorflow'"),
])
def test_cli_errors_are_one_line(exported, monkeypatch, capsys, args, says):
    monkeypatch.setattr(sys, "argv", ["larr", *args, "--run", str(exported)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and says in err and "Traceback" not in err
