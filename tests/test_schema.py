from __future__ import annotations

import json
import subprocess
from dataclasses import replace
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from larr.data.schema import SchemaError, read_scene_features, validate_dir, write_dataset_meta


def _rewrite(path: Path, fn) -> None:
    pq.write_table(fn(pq.read_table(path)), path)


def test_valid_dir_passes(tiny_data):
    assert validate_dir(tiny_data) == {"shops": 2, "users": 1, "impressions": 4}


def test_scene_features_render(tiny_data):
    feats = read_scene_features(tiny_data)
    assert [f.name for f in feats] == ["weather", "hour"]
    assert feats[1].render(13) == "hour: 13:00"


def test_value_descriptions_are_read_after_the_name_and_round_trip(tiny_data):
    feats = read_scene_features(tiny_data)
    assert "descriptions" not in feats[0].to_json()  # nothing to say: dataset.json stays as it was
    described = [replace(feats[0], descriptions={"heavy rain": "rain over 8 mm an hour"}), feats[1]]
    write_dataset_meta(tiny_data, described, name="tiny")
    back = read_scene_features(tiny_data)
    assert back == described
    assert back[0].render("heavy rain") == "weather: heavy rain (rain over 8 mm an hour)"
    assert back[0].render("sunny") == "weather: sunny"  # a value without a description: its name alone
    assert back[1].render(np.int64(13)) == "hour: 13:00"
    validate_dir(tiny_data)


def test_malformed_value_descriptions(tiny_data):
    meta = json.loads((tiny_data / "dataset.json").read_text())
    meta["scene_features"][0]["descriptions"] = {"heavy rain": 3}
    (tiny_data / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SchemaError, match="scene feature 'weather': descriptions must map"):
        validate_dir(tiny_data)


@pytest.mark.parametrize(
    "table, mutate, message",
    [
        ("shops", lambda t: t.drop_columns(["category"]), "missing column 'category'"),
        ("impressions", lambda t: t.drop_columns(["weather"]), "missing column 'weather'"),
        (
            "users",
            lambda t: t.set_column(t.schema.get_field_index("price_sensitivity"), "price_sensitivity",
                                   pa.array(["high"])),
            "column 'price_sensitivity' has type string, expected float",
        ),
        (
            "impressions",
            lambda t: t.set_column(t.schema.get_field_index("label"), "label", pa.array([0, 1, 2, 1])),
            "'label' has 1 values other than 0/1",
        ),
        (
            "impressions",
            lambda t: t.set_column(t.schema.get_field_index("user_id"), "user_id", pa.array([0, None, 0, 0])),
            "'user_id' has 1 null values",
        ),
        (
            "impressions",
            lambda t: t.set_column(t.schema.get_field_index("split"), "split",
                                   pa.array(["train", "dev", "test", "test"])),
            "'split' has 1 values other than train/valid/test",
        ),
        ("shops", lambda t: t.slice(0, 0), "table is empty"),
    ],
)
def test_bad_tables_give_one_line_naming_file_and_column(tiny_data, table, mutate, message):
    path = tiny_data / f"{table}.parquet"
    _rewrite(path, mutate)
    with pytest.raises(SchemaError) as exc:
        validate_dir(tiny_data)
    text = str(exc.value)
    assert message in text and str(path) in text and "\n" not in text


def test_zero_byte_file(tiny_data):
    (tiny_data / "users.parquet").write_bytes(b"")
    with pytest.raises(SchemaError, match="users.parquet: not a readable Parquet file"):
        validate_dir(tiny_data)


def test_missing_or_malformed_dataset_json(tiny_data):
    (tiny_data / "dataset.json").write_text(json.dumps({"scene_features": [{"nom": "x"}]}))
    with pytest.raises(SchemaError, match="malformed scene_features"):
        validate_dir(tiny_data)
    (tiny_data / "dataset.json").unlink()
    with pytest.raises(SchemaError, match="dataset.json: missing"):
        validate_dir(tiny_data)


def test_cli_validate_exit_codes(tiny_data):
    ok = subprocess.run([sys.executable, "-m", "larr", "data", "validate", str(tiny_data)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    _rewrite(tiny_data / "shops.parquet", lambda t: t.drop_columns(["menu"]))
    bad = subprocess.run([sys.executable, "-m", "larr", "data", "validate", str(tiny_data)],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "missing column 'menu'" in lines[0] and "Traceback" not in bad.stderr
