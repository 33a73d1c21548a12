"""Your own data: `larr demo --data DIR` on a folder larr did not generate.

A tiny context-aware log (user, item, label, word-valued context columns; item names and
descriptions in a second CSV) goes through examples/context_log_to_larr.py, passes
`larr data validate`, and then every stage of the quick demo runs on it.
"""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from larr.config import ConfigError, load_config
from larr.data import schema
from larr.data.local import copy_dir

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "context_log_to_larr.py"
README = ROOT / "README.md"

DAYTIME = ["morning", "noon", "afternoon", "evening", "night"]
WEEKDAY = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEATHER = ["sunny", "cloudy", "rainy"]  # "snowy" appears in the last (test) rows only: unseen in train
LOCATION = ["home", "work", "public place"]
COUNTRY = ["Spain", "Germany", "United Kingdom"]
KINDS = ["weather app", "navigation", "music", "news", "games", "recipes"]


def write_log(d: Path, n_rows: int = 3000, n_users: int = 60, n_items: int = 24, seed: int = 0) -> tuple[Path, Path]:
    """A log with a learnable signal: each user likes some item kinds; weather/daytime shift the kinds."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    kind = rng.integers(0, len(KINDS), n_items)
    taste = rng.normal(size=(n_users, len(KINDS)))
    items = d / "items.csv"
    with open(items, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "name", "category", "description"])
        for i in range(n_items):
            w.writerow([f"app{i}", f"App {i}", KINDS[kind[i]], f"A {KINDS[kind[i]]} app, number {i}."])
    log = d / "log.csv"
    with open(log, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "label", "daytime", "weekday", "location", "weather", "country"])
        for r in range(n_rows):
            u, i = rng.integers(n_users), rng.integers(n_items)
            weather = "snowy" if r >= n_rows * 0.95 and rng.random() < 0.5 else WEATHER[rng.integers(3)]
            daytime = DAYTIME[rng.integers(5)]
            bonus = 1.5 * ((weather in ("rainy", "snowy")) == (KINDS[kind[i]] in ("weather app", "games")))
            bonus += 1.0 * (daytime == "morning" and KINDS[kind[i]] == "news")
            p = 1 / (1 + np.exp(-(2.5 * taste[u, kind[i]] + bonus - 1.5)))
            w.writerow([f"u{u}", f"app{i}", int(rng.random() < p), daytime, WEEKDAY[rng.integers(7)],
                        LOCATION[rng.integers(3)], weather, COUNTRY[u % 3]])
    return log, items


def convert(tmp_path: Path) -> Path:
    log, items = write_log(tmp_path / "csv")
    out = tmp_path / "mydata"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--log", str(log), "--items", str(items), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_example_turns_a_context_log_into_a_valid_folder(tmp_path):
    out = convert(tmp_path)
    counts = schema.validate_dir(out)
    assert counts == {"shops": 24, "users": 60, "impressions": 3000}
    feats = schema.read_scene_features(out)
    assert [f.name for f in feats] == ["daytime", "weekday", "location", "weather", "country"]
    assert feats[3].render("rainy") == "weather: rainy"
    imps = pq.read_table(out / "impressions.parquet").to_pandas()
    assert imps["split"].tolist() == sorted(imps["split"], key=["train", "valid", "test"].index)  # time order
    assert (imps["split"] == "train").mean() == pytest.approx(0.8, abs=0.01)
    train_weather = set(imps.loc[imps["split"] == "train", "weather"])
    assert "snowy" not in train_weather
    assert imps["unseen_scene"].tolist() == (~imps["weather"].isin(train_weather)).tolist()
    assert not imps.loc[imps["split"] == "train", "unseen_scene"].any()


def test_data_dir_config_is_typed():
    cfg = load_config(None, ["data.source=dir", "data.dir=/some/folder"])
    assert cfg.data.dir == Path("/some/folder")
    with pytest.raises(ConfigError, match="needs data.dir"):
        load_config(None, ["data.source=dir"])
    with pytest.raises(ConfigError, match="use data.source=dir"):
        load_config(None, ["data.dir=/some/folder"])


def test_copy_dir_validates_copies_and_notes_missing_world(tmp_path, capfd):
    from conftest import write_tiny_data

    src = write_tiny_data(tmp_path / "src")
    (src / "extra").mkdir()
    (src / "extra" / "notes.txt").write_text("kept")
    summary = copy_dir(src, tmp_path / "run" / "data")
    assert (tmp_path / "run" / "data" / "extra" / "notes.txt").read_text() == "kept"
    assert summary["impressions"] == schema.validate_dir(src)["impressions"]
    assert "reference_auc" not in summary
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "no world.json" in err
    (src / "impressions.parquet").write_bytes(b"not parquet")
    with pytest.raises(schema.SchemaError, match="impressions.parquet"):
        copy_dir(src, tmp_path / "run2" / "data")


def test_readme_schema_table_matches_the_declarations():
    text = README.read_text()
    block = re.search(r"<!-- schema:begin -->\n(.*?)<!-- schema:end -->", text, re.S)
    assert block, "README.md: no schema block between <!-- schema:begin --> and <!-- schema:end -->"
    assert block.group(1) == schema.schema_markdown(), (
        "README.md's schema table is stale: paste `python -c \"from larr.data import schema; "
        "print(schema.schema_markdown(), end='')\"` between its schema markers")


@pytest.mark.slow
def test_quick_demo_runs_on_a_converted_context_log(tmp_path):
    data = convert(tmp_path)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "larr", "demo", "--quick", "--data", str(data), "--out", str(run),
                           "--set", "sweep.in_demo=false", "--set", "rec.batch_size=128", "--set", "rec.epochs=3"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert "larr" in report["ctr"] and "base_scene_ids" in report["ctr"]
    for name, row in report["ctr"].items():
        assert 0.0 < row["auc"] < 1.0, name
    assert report["ctr"]["base"]["auc"] > 0.6, report["ctr"]["base"]  # the log's signal is learnt
    assert report["ctr"]["larr"]["auc_unseen"] is not None  # the snowy rows form the unseen slice
    cfg = (run / "config.yaml").read_text()
    assert "source: dir" in cfg and str(data) in cfg
    assert schema.validate_dir(run / "data") == schema.validate_dir(data)  # the run holds its own copy
    notes = [line for line in proc.stderr.splitlines() if line.startswith("larr: note:")]
    assert any("world.json" in n for n in notes) and any("scene_attributes.parquet" in n for n in notes)
