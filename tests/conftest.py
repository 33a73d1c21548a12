"""Shared fixtures: a tiny, valid data directory written with pyarrow (no generator needed)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from larr.data.schema import SceneFeature, write_dataset_meta
from larr.io import write_parquet

SCENE = [
    SceneFeature("weather", "str", "weather: {value}", "Weather at request time."),
    SceneFeature("hour", "int", "hour: {value}:00", "Local hour."),
]


def write_tiny_data(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    shops = pa.table(
        {
            "shop_id": [0, 1],
            "name": ["Hot Pot House", "Ice Dream"],
            "category": ["hotpot", "ice cream"],
            "district": ["Old Town", "Riverside"],
            "price_level": [3, 1],
            "rating": [4.5, 4.1],
            "description": ["A warming spicy broth.", "Iced treats for hot days."],
            "menu": ["beef broth ¥68", "vanilla cone ¥9"],
            "open_day": [0, 0],
        }
    )
    users = pa.table(
        {
            "user_id": [0],
            "home_district": ["Old Town"],
            "work_district": ["Riverside"],
            "price_sensitivity": [0.3],
            "profile": ["An office worker who likes spicy food."],
        }
    )
    imps = pa.table(
        {
            "request_id": [0, 0, 1, 1],
            "ts": [100, 100, 200, 200],
            "day": [0, 0, 1, 1],
            "user_id": [0, 0, 0, 0],
            "shop_id": [0, 1, 0, 1],
            "position": [0, 1, 0, 1],
            "label": [1, 0, 0, 1],
            "split": ["train", "train", "test", "test"],
            "unseen_scene": [False, False, True, True],
            "weather": ["heavy rain", "heavy rain", "heatwave", "heatwave"],
            "hour": [12, 12, 19, 19],
        }
    )
    write_parquet(shops, d / "shops.parquet")
    write_parquet(users, d / "users.parquet")
    write_parquet(imps, d / "impressions.parquet")
    write_dataset_meta(d, SCENE, name="tiny")
    return d


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_tiny_data(tmp_path / "data")
