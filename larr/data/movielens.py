"""MovieLens-100K converted to the larr schema: movies are the "shops", ratings the impressions.

Where the files come from: the ``recbole`` wheel on PyPI ships ML-100K as RecBole *atomic
files* (tab-separated, typed headers such as ``user_id:token``). We ``pip download`` that one
wheel without its dependencies, unpack only the three files we need into a cache folder
(``$LARR_CACHE`` or ``~/.cache/larr``, then ``datasets/ml-100k``) and reuse them afterwards; so
nothing but PyPI is contacted and recbole is never installed. ``source=`` points at a folder
with the same three files and skips fetching.

How it maps:

- one impression per rating; ``label = rating >= 4`` (≈55% positives); ``position`` is 0;
  ratings of one user with one timestamp form one request;
- a global time split, 80/10/10 by row count, cut on timestamp boundaries so that every train
  row is no later than every valid row, and every valid row no later than every test row;
- scene features are what a timestamp (read in UTC) can tell: time slot, hour, weekday,
  weekend or not, month, season. The test period falls in a month never seen in training,
  which forms the unseen-scene slice;
- a movie's ``rating`` is its mean rating over the *train* split only, so test labels never
  leak into item features.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from larr.data.schema import (
    SHOPS,
    SPLITS,
    USERS,
    SceneFeature,
    SchemaError,
    Table,
    impressions_table,
    write_dataset_meta,
)
from larr.io import atomic_dir, atomic_write_text, write_parquet

NAME = "movielens-100k"
RECBOLE_SPEC = "recbole==1.2.1"  # 1.0.1–1.2.1 all ship ML-100K; 1.2.1 has the same data with LF line ends
WHEEL_FOLDER = "recbole/dataset_example/ml-100k/"
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
POSITIVE_RATING = 4

# Columns each atomic file must have (header names without their ``:type`` suffix).
REQUIRED = {
    "ml-100k.inter": ("user_id", "item_id", "rating", "timestamp"),
    "ml-100k.item": ("item_id", "movie_title", "release_year", "class"),
    "ml-100k.user": ("user_id", "age", "gender", "occupation", "zip_code"),
}

SCENE = [
    SceneFeature(
        "time_slot", "str", "time of day: {value}",
        "morning 5-11h, afternoon 12-16h, evening 17-21h, night 22-4h (UTC).",
    ),
    SceneFeature("hour", "int", "hour: {value}:00", "Hour of the rating, 0..23 (UTC)."),
    SceneFeature("weekday", "str", "weekday: {value}", "Day of the week (UTC), e.g. Saturday."),
    SceneFeature("day_type", "str", "day type: {value}", "weekday or weekend."),
    SceneFeature("month", "str", "month: {value}", "Calendar month, e.g. April; test months are unseen in train."),
    SceneFeature("season", "str", "season: {value}", "Meteorological season, northern hemisphere."),
]

_SLOTS = np.array(["night"] * 5 + ["morning"] * 7 + ["afternoon"] * 5 + ["evening"] * 5 + ["night"] * 2)
_SEASONS = np.array(["winter"] * 2 + ["spring"] * 3 + ["summer"] * 3 + ["autumn"] * 3 + ["winter"])


class MovieLensError(SchemaError):
    """Fetching or reading the source files failed (one line, what to do).

    A :class:`SchemaError` so that the CLI prints it as one line and exits non-zero.
    """


# ---------------------------------------------------------------------------- fetching


def cache_dir() -> Path:
    """Where the fetched files live: ``$LARR_CACHE/datasets/ml-100k`` (default ``~/.cache/larr``)."""
    root = Path(os.environ.get("LARR_CACHE") or Path.home() / ".cache" / "larr")
    return root / "datasets" / "ml-100k"


def _has_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in FILES)


def fetch(cache: Path | None = None) -> Path:
    """Return a folder holding the three ML-100K files, fetching them from PyPI once."""
    cache = Path(cache) if cache is not None else cache_dir()
    if _has_files(cache):
        return cache
    with tempfile.TemporaryDirectory(prefix="larr-recbole-") as tmp:
        wheel = _pip_download(Path(tmp))
        with atomic_dir(cache) as staging:
            _extract(wheel, staging)
    return cache


def _pip_download(dest: Path) -> Path:
    """``pip download`` the recbole wheel alone (no dependencies, nothing installed)."""
    cmd = [sys.executable, "-m", "pip", "download", RECBOLE_SPEC, "--no-deps", "--only-binary=:all:"]
    cmd += ["-q", "-d", str(dest)]
    failed = f"could not fetch MovieLens-100K: `pip download {RECBOLE_SPEC}` failed"
    hint = "pass --source FOLDER with ml-100k.inter/.item/.user (RecBole atomic files)"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MovieLensError(f"{failed} ({e}); {hint}") from None
    wheels = sorted(dest.glob("recbole-*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        raise MovieLensError(f"{failed} ({why}); {hint}")
    return wheels[0]


def _extract(wheel: Path, dest: Path) -> None:
    """Copy only the three ML-100K files out of the wheel (the rest of recbole is not needed)."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for f in FILES:
            member = WHEEL_FOLDER + f
            if member not in names:
                raise MovieLensError(f"{wheel.name}: has no {member}; pass --source FOLDER with the ML-100K files")
            (dest / f).write_bytes(zf.read(member))


# ---------------------------------------------------------------------------- reading


def read_atomic(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read one RecBole atomic file as strings, columns renamed without their ``:type`` suffix.

    Every value stays a string here (tokens such as zip codes must keep leading zeros);
    callers convert the numeric columns they use with :func:`_numeric`.
    """
    if not path.is_file():
        raise MovieLensError(f"{path}: file not found")
    try:
        df = pd.read_csv(
            path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE, encoding_errors="replace"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise MovieLensError(f"{path}: not a tab-separated atomic file ({str(e).strip().splitlines()[-1]})") from None
    df.columns = [str(c).split(":", 1)[0].strip() for c in df.columns]
    for col in required:
        if col not in df.columns:
            raise MovieLensError(f"{path}: missing column '{col}' (header has {', '.join(df.columns)})")
    if df.empty:
        raise MovieLensError(f"{path}: no rows")
    return df[list(required)]


def _numeric(df: pd.DataFrame, col: str, path: Path) -> pd.Series:
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna()
    if bad.any():
        first = df[col][bad].iloc[0]
        raise MovieLensError(f"{path}: column '{col}' has {int(bad.sum())} non-numeric values (first: {first!r})")
    return values


def _dense_ids(ids: pd.Series, path: Path, col: str) -> pd.Index:
    """Original id tokens in file order; their position is the dense id (0..n-1)."""
    dup = ids.duplicated()
    if dup.any():
        raise MovieLensError(f"{path}: column '{col}' repeats id {ids[dup].iloc[0]!r}")
    return pd.Index(ids)


def _lookup(index: pd.Index, ids: pd.Series, path: Path, col: str, other: str) -> np.ndarray:
    pos = index.get_indexer(ids)
    missing = pos < 0
    if missing.any():
        first = ids[missing].iloc[0]
        raise MovieLensError(f"{path}: column '{col}' has {int(missing.sum())} ids not in {other} (first: {first!r})")
    return pos.astype(np.int64)


# ---------------------------------------------------------------------------- conversion


def time_split(ts: np.ndarray, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> np.ndarray:
    """train/valid/test by global time, ≈``fractions`` of rows, never cutting inside one timestamp.

    A boundary is the timestamp of the row at the cumulative fraction; all rows sharing that
    timestamp stay on its earlier side, so the split is a pure function of ``ts``.
    """
    s = np.sort(ts)
    n = len(s)
    cut_train = s[max(int(round(fractions[0] * n)) - 1, 0)]
    cut_valid = s[max(int(round((fractions[0] + fractions[1]) * n)) - 1, 0)]
    return np.where(ts <= cut_train, SPLITS[0], np.where(ts <= cut_valid, SPLITS[1], SPLITS[2]))


def scene_columns(ts: np.ndarray) -> pd.DataFrame:
    """The scene features of each timestamp (UTC), one column per entry of :data:`SCENE`."""
    when = pd.to_datetime(ts, unit="s", utc=True)
    hour = when.hour.to_numpy()
    weekday = when.day_name()
    return pd.DataFrame(
        {
            "time_slot": _SLOTS[hour],
            "hour": hour.astype(np.int64),
            "weekday": weekday,
            "day_type": np.where(when.day_of_week.to_numpy() >= 5, "weekend", "weekday"),
            "month": when.month_name(),
            "season": _SEASONS[when.month.to_numpy() - 1],
        }
    )


def unseen_flags(imps: pd.DataFrame, scene: list[SceneFeature]) -> np.ndarray:
    """True where some scene column holds a value that no train row has."""
    train = imps["split"].to_numpy() == SPLITS[0]
    unseen = np.zeros(len(imps), dtype=bool)
    for f in scene:
        col = imps[f.name]
        unseen |= ~col.isin(pd.unique(col[train])).to_numpy()
    return unseen


def build_impressions(inter: pd.DataFrame, user_ids: pd.Index, item_ids: pd.Index, path: Path) -> pd.DataFrame:
    """One row per rating, ordered by time; request = (user, timestamp)."""
    rating = _numeric(inter, "rating", path).to_numpy()
    ts = _numeric(inter, "timestamp", path).to_numpy().astype(np.int64)
    df = pd.DataFrame(
        {
            "ts": ts,
            "user_id": _lookup(user_ids, inter["user_id"], path, "user_id", "ml-100k.user"),
            "shop_id": _lookup(item_ids, inter["item_id"], path, "item_id", "ml-100k.item"),
            "rating": rating,
        }
    )
    df = df.sort_values(["ts", "user_id", "shop_id"], kind="stable").reset_index(drop=True)
    df["request_id"] = df.groupby(["ts", "user_id"], sort=True).ngroup().astype(np.int64)
    # Calendar days (UTC), so that a day starts at midnight like the weekday feature does.
    df["day"] = df["ts"] // 86400 - df["ts"].min() // 86400
    df["position"] = np.int64(0)
    df["label"] = (df["rating"] >= POSITIVE_RATING).astype(np.int64)
    df["split"] = time_split(df["ts"].to_numpy())
    df = pd.concat([df, scene_columns(df["ts"].to_numpy())], axis=1)
    df["unseen_scene"] = unseen_flags(df, SCENE)
    return df


def build_shops(items: pd.DataFrame, imps: pd.DataFrame) -> pd.DataFrame:
    """Movies as shops; ``rating`` is the train-only mean, ``open_day`` the first day rated."""
    n = len(items)
    train = imps[imps["split"] == SPLITS[0]]
    mean_rating = train.groupby("shop_id")["rating"].mean().reindex(range(n), fill_value=0.0)
    # A movie never rated in the data is listed only after the data ends.
    first_day = imps.groupby("shop_id")["day"].min().reindex(range(n), fill_value=int(imps["day"].max()) + 1)
    genres = items["class"].str.split().str.join(", ")
    title = items["movie_title"].str.strip()
    year = items["release_year"].str.strip()
    year_text = np.where(year.str.fullmatch(r"\d{4}"), " (" + year + ")", "")
    return pd.DataFrame(
        {
            "shop_id": np.arange(n, dtype=np.int64),
            "name": title.to_numpy(),
            "category": genres.to_numpy(),
            "district": "",
            "price_level": np.int64(0),
            "rating": mean_rating.to_numpy(dtype=np.float64),
            "description": (title + year_text + ". A movie; genres: " + genres + ".").to_numpy(),
            "menu": "",
            "open_day": first_day.to_numpy(dtype=np.int64),
        }
    )


def _occupation_phrase(occ: pd.Series) -> pd.Series:
    """"student" reads as a noun after "a 24-year-old male"; "none" and "other" do not."""
    return occ.replace({"none": "with no occupation", "other": "with an unlisted occupation"})


def build_users(users: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Users with a profile sentence from age, gender, occupation and zip region."""
    age = _numeric(users, "age", path).astype(np.int64).astype(str)
    gender = users["gender"].str.strip().map({"M": "male", "F": "female"}).fillna("person")
    zip_first = users["zip_code"].str.strip().str[:1]
    region = np.where(zip_first.str.fullmatch(r"\d"), "from US zip region " + zip_first, "from outside the US")
    occupation = _occupation_phrase(users["occupation"].str.strip())
    profile = "a " + age + "-year-old " + gender + " " + occupation + " " + region
    return pd.DataFrame(
        {
            "user_id": np.arange(len(users), dtype=np.int64),
            "home_district": "",
            "work_district": "",
            "price_sensitivity": 0.5,
            "profile": profile.to_numpy(),
        }
    )


def to_arrow(df: pd.DataFrame, table: Table) -> pa.Table:
    """Exactly the declared columns, in declared order, without pandas metadata."""
    return pa.Table.from_pandas(df[table.column_names], preserve_index=False).replace_schema_metadata(None)


def summarize(users: pd.DataFrame, shops: pd.DataFrame, imps: pd.DataFrame) -> dict:
    by_split = imps.groupby("split")
    rows = by_split.size().reindex(SPLITS, fill_value=0)
    ctr = by_split["label"].mean().reindex(SPLITS)
    unseen = by_split["unseen_scene"].mean().reindex(SPLITS)
    when = pd.to_datetime([imps["ts"].min(), imps["ts"].max()], unit="s", utc=True)
    return {
        "dataset": NAME,
        "users": len(users),
        "shops": len(shops),
        "impressions": len(imps),
        "requests": int(imps["request_id"].nunique()),
        "days": int(imps["day"].max()) + 1,
        "period": f"{when[0]:%Y-%m-%d} .. {when[1]:%Y-%m-%d}",
        "positive_rate": float(imps["label"].mean()),
        "rows": {s: int(rows[s]) for s in SPLITS},
        "ctr": {s: float(ctr[s]) if rows[s] else 0.0 for s in SPLITS},
        "unseen_share": {s: float(unseen[s]) if rows[s] else 0.0 for s in SPLITS[1:]},
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(out_dir: Path, source: Path | None = None) -> dict:
    """Write shops/users/impressions Parquet, dataset.json and world.json; return the summary."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    folder = Path(source) if source is not None else fetch()
    paths = {f: folder / f for f in FILES}
    inter = read_atomic(paths["ml-100k.inter"], REQUIRED["ml-100k.inter"])
    items = read_atomic(paths["ml-100k.item"], REQUIRED["ml-100k.item"])
    users_raw = read_atomic(paths["ml-100k.user"], REQUIRED["ml-100k.user"])

    item_ids = _dense_ids(items["item_id"], paths["ml-100k.item"], "item_id")
    user_ids = _dense_ids(users_raw["user_id"], paths["ml-100k.user"], "user_id")
    imps = build_impressions(inter, user_ids, item_ids, paths["ml-100k.inter"])
    shops = build_shops(items, imps)
    users = build_users(users_raw, paths["ml-100k.user"])

    imp_table = impressions_table(SCENE)
    write_parquet(to_arrow(shops, SHOPS), out_dir / SHOPS.file)
    write_parquet(to_arrow(users, USERS), out_dir / USERS.file)
    write_parquet(to_arrow(imps, imp_table), out_dir / imp_table.file)

    summary = summarize(users, shops, imps)
    write_dataset_meta(
        out_dir,
        SCENE,
        name=NAME,
        source=f"{RECBOLE_SPEC} wheel, {WHEEL_FOLDER}" if source is None else str(folder),
        source_sha256={f: _sha256(p) for f, p in paths.items()},
        label=f"rating >= {POSITIVE_RATING}",
        split="global time split 80/10/10 by rows, cut on timestamp boundaries",
        timezone="UTC",
    )
    # world.json holds no timings, so converting the same files twice gives the same bytes.
    atomic_write_text(out_dir / "world.json", json.dumps(summary, indent=2) + "\n")
    return {**summary, "seconds": round(time.perf_counter() - t0, 2)}
