"""benchmarks/value_transfer.py: every store of a run scored by the transfer probe, between its two bounds."""
from __future__ import annotations

import json
import sys

from bench_helpers import load_benchmark
from larr.llm.evaluate import scene_value_table


def test_every_store_is_scored_between_the_random_and_the_oracle_bound(quick_run, monkeypatch, capsys) -> None:
    bench = load_benchmark("value_transfer")
    scores = bench.store_scores(quick_run, rare_below=20)
    assert set(scores) == {"random", "oracle", "minilm"}  # the quick run's one store and the two bounds
    oracle, random = scores["oracle"], scores["random"]
    assert oracle.n_fit >= 10 and oracle.n_unseen > 0
    values = scene_value_table(quick_run / "data")
    assert oracle.n_fit + oracle.n_rare + oracle.n_unseen == values["occurs"].sum() < len(values)  # values in data
    assert oracle.unseen > 0.5 and oracle.unseen > random.unseen + 0.3
    assert oracle.rare is None or oracle.rare > random.rare
    monkeypatch.setattr(sys, "argv", ["value_transfer.py", "--run", str(quick_run), "--rare-below", "20"])
    bench.main()
    out = capsys.readouterr().out
    assert "map R² unseen" in out and "minilm" in out
    saved = json.loads((quick_run / "value_transfer.json").read_text())
    assert saved[str(quick_run)]["oracle"]["unseen"] == scores["oracle"].unseen
