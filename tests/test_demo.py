"""End to end: `larr demo --quick` runs every stage and writes a complete report."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

CTR_KEYS = {"auc", "auc_std", "gauc", "logloss", "auc_unseen", "gauc_unseen", "n_seeds"}


@pytest.mark.slow
def test_quick_demo_writes_every_report_section(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "larr", "demo", "--quick", "--out", str(run)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert {"ppl_before", "ppl_after"} <= set(report["stage1"])
    for metric in ("recall@10", "mrr"):
        assert set(report["stage2"][metric]) == {"user_user", "shop_shop", "user_shop"}
    expected = {"base", "base_scene_ids", "larr", "larr_noimpute", "larr_meanpool", "larr_noalign",
                "larr_untuned_llm", "generic_text", "whole_text"}
    assert set(report["ctr"]) == expected
    for name, row in report["ctr"].items():
        assert CTR_KEYS <= set(row), name
        assert 0.0 < row["auc"] < 1.0
    assert set(report["timings"]) >= {"data", "corpus", "pretrain", "contrastive", "embed", "evaluate", "sweep",
                                      "total"}
    assert set(report["sweep"]) == {"align_temperature", "align_weight", "scene_layers", "scene_size"}
    assert report["sweep_setup"]["trained_runs"] == 3  # λ = 0 and the config's values reuse comparison rows
    assert (run / "report.md").is_file() and (run / "config.yaml").is_file()
    assert list((run / "plots").glob("*.png")) and (run / "plots" / "sweep_align_weight.png").is_file()
    assert "CTR on the test split" in proc.stdout
