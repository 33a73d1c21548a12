"""The hyper-parameter sweep (`larr sweep`): grid expansion, run reuse, report shape, plots, errors."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from larr.config import SWEEP_PARAMS
from larr.errors import LarrError
from larr.rec import experiment, sweep
from larr.report import read_report, update_report
from rec_helpers import rec_cfg

TINY_GRIDS = ["sweep.align_temperature=[0.05]", "sweep.align_weight=[0.0, 0.3]", "sweep.scene_layers=[1, 2]",
              "sweep.scene_size=[4]", "sweep.workers=1", "rec.epochs=1"]


def _sweep_cfg(*overrides: str):
    return rec_cfg(*TINY_GRIDS, *overrides)  # rec (TINY_REC): τ 0.1, λ 0.1, 1 layer, s 8


def _changed(a, b) -> set[str]:
    da, db = a.rec.model_dump(), b.rec.model_dump()
    return {k for k in da if da[k] != db[k]}


def test_grid_varies_one_parameter_at_a_time_and_trains_shared_points_once():
    cfg = _sweep_cfg("sweep.seeds=[0, 1]")
    points, jobs = sweep.plan(cfg, list(SWEEP_PARAMS))
    by_param = {p: [pt.value for pt in points if pt.param == p] for p in SWEEP_PARAMS}
    # the config's own value is added to each grid (τ 0.1, λ 0.1, layers 1, size 8), ascending, no repeats
    assert by_param == {"align_temperature": [0.05, 0.1], "align_weight": [0.0, 0.1, 0.3],
                        "scene_layers": [1, 2], "scene_size": [4, 8]}
    for pt in points:
        assert pt.cfg.experiment == cfg.experiment and pt.cfg.sweep == cfg.sweep
        default = getattr(cfg.rec, pt.param)
        assert _changed(pt.cfg, cfg) == (set() if pt.value == default else {pt.param})
        assert getattr(pt.cfg.rec, pt.param) == pt.value
    # 9 points × 2 seeds, but the 4 default points are one run per seed: (1 + 5) × 2 distinct runs
    assert len(jobs) == 12
    ids = sorted(j.run_id for j in jobs.values())
    assert "sweep/default_seed0" in ids and "sweep/default_seed1" in ids
    assert "sweep/align_weight=0.3_seed1" in ids and "sweep/scene_layers=2_seed0" in ids
    assert all(j.name == "larr" for j in jobs.values())


def test_bad_param_or_grid_value_is_a_one_line_error(tmp_path):
    with pytest.raises(sweep.SweepError, match="unknown sweep parameter 'tau'"):
        sweep.plan(_sweep_cfg(), ["tau"])
    with pytest.raises(sweep.SweepError, match="sweep.scene_size"):
        sweep.point_config(_sweep_cfg(), "scene_size", 0)
    r = CliRunner().invoke(app(), ["sweep", "--out", str(tmp_path), "--param", "nope"])
    assert r.exit_code != 0 and isinstance(r.exception, LarrError)
    assert "\n" not in str(r.exception) and "align_temperature" in str(r.exception)


def app():
    from larr.cli import app as larr_app

    return larr_app


def test_sweep_reuses_runs_and_writes_report_and_plots(quick_run):
    cfg = _sweep_cfg("sweep.align_weight=[0.3]", "experiment.models=[larr]", "experiment.seeds=[0]")
    experiment.run(cfg, quick_run, progress=False, log=lambda m: None)  # the comparison: larr_seed0 exists
    update_report(quick_run, "ctr", {"base_scene_ids": {"auc": 0.6, "auc_unseen": 0.55}})  # stand-in reference
    lines: list[str] = []
    result = sweep.run(cfg, quick_run, params=["align_weight", "scene_size"], log=lines.append)
    # λ ∈ {0.1*, 0.3}, s ∈ {4, 8*}: 4 points, 3 distinct runs; the default one is the comparison's larr run
    assert (result["runs"], result["trained_runs"], result["reused_runs"]) == (3, 2, 1)
    assert any("larr_seed0" in line for line in lines)
    report = read_report(quick_run)
    assert set(report["sweep"]) == {"align_weight", "scene_size"}
    lam = report["sweep"]["align_weight"]
    assert lam["values"] == [0.1, 0.3] and lam["default"] == 0.1
    for key in ("valid_auc", "auc", "auc_unseen", "valid_auc_std", "auc_std", "auc_unseen_std", "runs"):
        assert len(lam[key]) == 2, key
    assert all(0.0 < v < 1.0 for v in lam["auc"] + lam["valid_auc"] + lam["auc_unseen"])
    assert lam["auc_std"] == [None, None]  # one seed: no spread
    assert lam["runs"] == [["larr_seed0"], ["sweep/align_weight=0.3_seed0"]]
    assert lam["auc"][0] == pytest.approx(report["ctr"]["larr"]["auc"])
    assert report["sweep"]["scene_size"]["runs"] == [["sweep/scene_size=4_seed0"], ["larr_seed0"]]
    assert (quick_run / "stage3" / "sweep" / "scene_size=4_seed0" / "metrics.json").is_file()
    for p in ("align_weight", "scene_size"):
        assert sweep.plot_file(quick_run, p).stat().st_size > 1000
    md = (quick_run / "report.md").read_text()
    assert "### alignment weight λ (`rec.align_weight`)" in md and "| 0.1 (config) |" in md
    assert "Δ AUC unseen vs base_scene_ids" in md and "| `larr` |" in md  # the comparison table is kept
    again = sweep.run(cfg, quick_run, params=["align_weight"], log=lines.append)
    assert again["trained_runs"] == 0 and again["results"]["align_weight"]["auc"] == lam["auc"]
    assert set(read_report(quick_run)["sweep"]) == {"align_weight", "scene_size"}  # other curves are kept
