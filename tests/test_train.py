"""Stage-3 training and the comparison, on the quick synthetic world with stub LLM vectors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from larr.config import ConfigError
from larr.rec import experiment
from larr.rec.models import CTRModel, ModelDims, load_model, predict, save_model
from larr.rec.rows import ROWS
from larr.rec.train import (
    RequestBatches,
    TrainError,
    evaluate_split,
    fit,
    llm_table,
    load_features,
    model_setup,
    train_model,
)
from larr.report import read_report
from rec_helpers import TINY_REC, rec_cfg

torch.set_num_threads(1)  # tiny models; more threads only contend (and spin) on a shared machine

def _model(cfg, run: Path, name: str, seed: int = 0) -> tuple[CTRModel, dict]:
    rec, store = model_setup(cfg, name)
    spec, splits, _ = load_features(run)
    table, dim = llm_table(spec, run, store, whole=rec.scene_encoder == "whole_text")
    torch.manual_seed(seed)
    return CTRModel(rec, ModelDims.from_spec(spec, dim), table), splits


def test_request_batches_keep_requests_together_and_are_seeded():
    request = torch.tensor([5, 5, 5, 1, 1, 9, 9, 9, 9, 2])
    tensors = {"request": request, "row": torch.arange(10)}
    b = RequestBatches(tensors, batch_size=3, seed=1, drop_last=False)
    rows = b.rows()
    assert sorted(rows.tolist()) == list(range(10))
    runs = torch.unique_consecutive(request[rows])
    assert len(runs) == 4  # each request's rows are adjacent
    assert torch.equal(rows, RequestBatches(tensors, 3, seed=1).rows())
    b.set_epoch(1)
    assert len(list(b)) == 4 and len(RequestBatches(tensors, 3, seed=1, drop_last=True)) == 3


def test_training_lowers_validation_logloss(quick_run):
    cfg = rec_cfg()
    model, splits = _model(cfg, quick_run, "base_scene_ids")
    before = evaluate_split(model, splits["valid"])["logloss"]
    result = fit(model, model.cfg, splits, seed=0)
    after = evaluate_split(model, splits["valid"])
    assert after["logloss"] < before - 0.05 and after["auc"] > 0.6
    assert result.state.epoch == 2 and len(result.state.history) == 2


def test_frozen_llm_vectors_get_no_gradient(quick_run):
    cfg = rec_cfg()
    model, splits = _model(cfg, quick_run, "larr")
    frozen = model.scene_llm.clone()
    assert all(p is not model.scene_llm for p in model.parameters()) and not model.scene_llm.requires_grad
    batch = next(iter(RequestBatches(splits["train"], 512)))
    from larr.rec.models import ctr_loss

    loss, parts = ctr_loss(model(batch), batch, model.cfg)
    loss.backward()
    assert model.scene_llm.grad is None and "align" in parts
    assert model.scene_encoder.proj.weight.grad is not None  # the scene encoder itself does learn
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    opt.step()
    assert torch.equal(model.scene_llm, frozen)


def test_resume_matches_uninterrupted(quick_run, tmp_path):
    cfg = rec_cfg("rec.epochs=3")
    straight, splits = _model(cfg, quick_run, "larr")
    fit(straight, straight.cfg, splits, seed=0, ckpt_dir=tmp_path / "a")

    class Crash(Exception):
        pass

    def crash_after_2(epoch: int, record: dict) -> None:
        if epoch == 2:
            raise Crash

    broken, _ = _model(cfg, quick_run, "larr")
    with pytest.raises(Crash):
        fit(broken, broken.cfg, splits, seed=0, ckpt_dir=tmp_path / "b", on_epoch=crash_after_2)
    assert json.loads((tmp_path / "b" / "state.json").read_text())["state"]["epoch"] == 2
    resumed, _ = _model(cfg, quick_run, "larr", seed=123)  # different init: everything must come from the checkpoint
    result = fit(resumed, resumed.cfg, splits, seed=0, ckpt_dir=tmp_path / "b", resume=True)
    assert result.state.epoch == 3 and [r["epoch"] for r in result.state.history] == [1, 2, 3]
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    other, _ = _model(rec_cfg("rec.epochs=3", "rec.lr=0.5"), quick_run, "larr")
    with pytest.raises(TrainError, match="another config"):
        fit(other, other.cfg, splits, seed=0, ckpt_dir=tmp_path / "b", resume=True)


def test_saved_model_reloads_to_identical_predictions(quick_run, tmp_path):
    cfg = rec_cfg("rec.epochs=1")
    model, splits = _model(cfg, quick_run, "larr_meanpool")
    fit(model, model.cfg, splits, seed=0)
    spec, _, _ = load_features(quick_run)
    save_model(model, spec, tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(predict(model, splits["test"]), predict(again, splits["test"]))


def test_train_model_writes_model_metrics_and_logs(quick_run):
    m = train_model(rec_cfg("rec.epochs=1"), quick_run, "whole_text", seed=0)
    folder = quick_run / "stage3" / "whole_text_seed0"
    assert json.loads((folder / "metrics.json").read_text())["test"]["auc"] == m["test"]["auc"]
    spec, splits, _ = load_features(quick_run)
    loaded = load_model(folder)
    from larr.metrics import auc

    assert auc(splits["test"]["label"].numpy(), predict(loaded, splits["test"])) == pytest.approx(m["test"]["auc"])
    assert m["test_unseen"]["n"] == int(splits["test"]["unseen"].sum()) > 0
    assert any((quick_run / "logs" / "stage3" / "whole_text" / "seed0").iterdir())  # TensorBoard events


def test_trained_model_records_train_rows_of_each_scene_value(quick_run):
    """The imputer's prior weights (n vs impute_prior_rows) come from the train split, saved with the model."""
    from larr.rec.train import scene_counts

    train_model(rec_cfg("rec.epochs=1"), quick_run, "larr", seed=0)
    loaded = load_model(quick_run / "stage3" / "larr_seed0")
    spec, splits, _ = load_features(quick_run)
    counts = scene_counts(spec, splits)
    rows, ids = loaded.dims.scene_value_rows, loaded.dims.scene_vocab_ids
    assert rows is not None and len(rows) == len(ids) == len(counts)
    for k_rows, k_ids, c in zip(rows, ids, counts):
        assert k_rows == [int(c[i]) if i > 0 else 0 for i in k_ids]
    assert any(r > 0 for k in rows for r in k) and loaded.imputer.shrunk  # some feature's seen values get the prior


def test_every_row_maps_to_its_overrides_and_store():
    cfg = rec_cfg("experiment.larr_encoder=larr")
    stores = {name: model_setup(cfg, name)[1] for name in ROWS}
    assert stores == {"base": None, "base_scene_ids": None, "larr": "larr", "larr_noimpute": "larr", "larr_meanpool": "larr",
                      "larr_noalign": "larr", "larr_untuned_llm": "untuned", "generic_text": "minilm",
                      "whole_text": "larr"}
    assert model_setup(cfg, "larr_noalign")[0].align_weight == 0
    assert model_setup(cfg, "larr_noimpute")[0].impute_unseen_ids is False
    assert model_setup(cfg, "base")[0].scene_ids is False
    assert model_setup(rec_cfg("experiment.backbone=dnn"), "larr")[0].backbone == "dnn"


def test_force_rec_wins_over_the_rows_own_overrides():
    plain = rec_cfg("rec.scene_ids=false", "rec.align_weight=0.5")
    assert model_setup(plain, "larr")[0].scene_ids is True  # the row fixes scene_ids: a rec field alone is overruled
    forced = rec_cfg("experiment.force_rec.scene_ids=false", "experiment.force_rec.align_weight=0.5")
    assert model_setup(forced, "larr")[0].scene_ids is False
    assert model_setup(forced, "larr_noalign")[0].align_weight == 0.5
    assert model_setup(forced, "base")[0].scene_encoder == "none"  # what it does not name keeps the row's value
    with pytest.raises(ConfigError, match="not rec fields: no_such_field"):
        rec_cfg("experiment.force_rec.no_such_field=1")


def test_experiment_writes_every_row_and_reuses_finished_runs(quick_run):
    cfg = rec_cfg("rec.epochs=1", "experiment.models=[base_scene_ids,larr,larr_untuned_llm]", "experiment.seeds=[0,1]")
    lines: list[str] = []
    result = experiment.run(cfg, quick_run, progress=False, log=lines.append)
    rows = read_report(quick_run)["ctr"]
    assert set(rows) >= {"base_scene_ids", "larr"} and "larr_untuned_llm" not in result["rows"]
    assert "larr_untuned_llm" in result["skipped"]  # no 'untuned' vectors were embedded: skipped, not crashed
    for row in (rows["base_scene_ids"], rows["larr"]):
        for key in ("auc", "auc_std", "gauc", "gauc_std", "logloss", "auc_unseen", "auc_unseen_std", "gauc_unseen",
                    "n_seeds"):
            assert row[key] is not None, key
        assert row["n_seeds"] == 2 and row["auc_std"] > 0
    assert rows["larr"]["delta_auc_unseen"] == pytest.approx(rows["larr"]["auc_unseen"]
                                                             - rows["base_scene_ids"]["auc_unseen"])
    assert (quick_run / "plots" / "ctr_auc.png").stat().st_size > 1000
    md = (quick_run / "report.md").read_text()
    assert "| `larr` |" in md and "skipped `larr_untuned_llm`" in md
    again = experiment.run(cfg, quick_run, progress=False, log=lines.append)
    assert again["trained_runs"] == 0 and again["reused_runs"] == 4
    assert again["rows"]["larr"]["auc"] == result["rows"]["larr"]["auc"]


def test_cli_train_and_evaluate(quick_run):
    from typer.testing import CliRunner

    from larr.cli import app

    sets = [x for o in ["device=cpu", "experiment.larr_encoder=minilm", *TINY_REC, "rec.epochs=1",
                        "experiment.models=[base,generic_text]", "experiment.seeds=[3]"] for x in ("--set", o)]
    r = CliRunner().invoke(app, ["train", "--out", str(quick_run), "--model", "generic_text", "--seed", "3", *sets])
    assert r.exit_code == 0, r.output
    assert (quick_run / "stage3" / "generic_text_seed3" / "model.safetensors").is_file()
    r = CliRunner().invoke(app, ["evaluate", "--out", str(quick_run), *sets])
    assert r.exit_code == 0, r.output
    assert "stage 3: CTR" in r.output and read_report(quick_run)["stage3"]["reused_runs"] == 1
    assert set(read_report(quick_run)["stage3"]["models"]) == {"base", "generic_text"}
    r = CliRunner().invoke(app, ["train", "--out", str(quick_run), "--model", "nope", *sets])
    assert r.exit_code != 0


def test_standardized_table_centres_each_feature_and_keeps_row_zero(quick_run):
    spec, _, _ = load_features(quick_run)
    raw, _ = llm_table(spec, quick_run, "minilm", whole=False, standardize=False)
    scene_table = spec.scene_table()
    table = scene_table.standardize(raw)
    assert torch.equal(table[0], raw[0]) and table[0].abs().sum() == 0  # the unknown row stays zero
    stats = scene_table.stats(raw)
    for name, (a, b) in scene_table.groups.items():
        assert table[a:b].mean(0).abs().max() < 1e-5
        assert table[a:b].norm(dim=1).mean() == pytest.approx(1.0, rel=1e-5)
        mapped = stats.apply(name, raw[a:b].numpy())  # the serving recipe
        np.testing.assert_allclose(mapped, table[a:b].numpy(), rtol=1e-6, atol=1e-7)
