"""benchmarks/world_seeds.py pools finished worlds seed by seed and pairs every row with each --refs row."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench_helpers import load_benchmark
from larr import layout
from larr.rec.slices import SLICES, metric_key

ROWS = ("base_scene_ids", "larr", "larr_noalign")


def auc(world: int, row: str, seed: int) -> float:
    """A made-up AUC: larr_noalign is larr + 0.01 + 0.001 * world on every (world, seed)."""
    base = 0.7 + 0.01 * seed + 0.002 * world
    return base + {"base_scene_ids": 0.0, "larr": 0.005, "larr_noalign": 0.015 + 0.001 * world}[row]


def finished_world(root: Path, world: int, seeds: tuple[int, ...]) -> None:
    run = root / f"world{world}"
    for row in ROWS:
        for s in seeds:
            metrics = {metric_key(split, name): {"auc": auc(world, row, s)} for split in ("test", "valid")
                       for name in SLICES}
            path = layout.stage3_run(run, layout.run_name(row, s)) / layout.METRICS_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(metrics))
    report = {"ctr": {r: {} for r in ROWS}, "stage3": {"models": list(ROWS), "seeds": list(seeds)}}
    layout.report_json(run).write_text(json.dumps(report))


def run_main(monkeypatch, argv: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["world_seeds.py", *argv])
    load_benchmark("world_seeds").main()


def test_every_row_is_paired_with_each_reference_over_worlds_and_seeds(tmp_path, monkeypatch, capsys):
    for w in (0, 1):
        finished_world(tmp_path, w, seeds=(0, 1, 2))
    run_main(monkeypatch, ["--worlds", "0,1", "--root", str(tmp_path), "--refs", "base_scene_ids,larr"])
    result = json.loads((tmp_path / "world_seeds.json").read_text())
    assert result["pairs"] == [[w, s] for w in (0, 1) for s in (0, 1, 2)]
    vs_larr = result["paired"]["vs_larr"]["larr_noalign"]["test_unseen"]
    assert vs_larr["n"] == 6
    assert vs_larr["deltas"] == pytest.approx([0.010] * 3 + [0.011] * 3)
    assert vs_larr["significant"] and vs_larr["lo"] > 0
    assert result["paired"]["vs_base_scene_ids"]["larr"]["valid_rare"]["mean"] == pytest.approx(0.005)
    assert "vs_generic_text" not in result["paired"]  # not asked for
    assert "## vs larr" in (tmp_path / "world_seeds.md").read_text()
    assert "reusing" in capsys.readouterr().out  # finished worlds are not run again


def test_a_reference_that_is_not_a_row_fails_before_any_world_runs(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as err:
        run_main(monkeypatch, ["--worlds", "0", "--root", str(tmp_path), "--refs", "larr,lar"])
    assert err.value.code == 2
    assert "unknown row lar" in capsys.readouterr().err
    assert not (tmp_path / "world0").exists()


def test_a_reference_missing_from_the_finished_worlds_is_named(tmp_path, monkeypatch):
    finished_world(tmp_path, 0, seeds=(0, 1))
    with pytest.raises(SystemExit, match="generic_text not trained in every world"):
        run_main(monkeypatch, ["--worlds", "0", "--root", str(tmp_path), "--refs", "base_scene_ids,generic_text"])


def test_by_default_the_untrained_reference_is_skipped(tmp_path, monkeypatch):
    finished_world(tmp_path, 0, seeds=(0, 1))
    run_main(monkeypatch, ["--worlds", "0", "--root", str(tmp_path)])
    assert list(json.loads((tmp_path / "world_seeds.json").read_text())["paired"]) == ["vs_base_scene_ids"]
