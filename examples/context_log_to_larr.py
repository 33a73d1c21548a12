"""Turn a context-aware interaction log (CSV) into a larr data folder, ready for `larr demo --data DIR`.

The input has the shape of public context-aware logs (app usage such as Frappe, restaurant or
in-car music logs): one CSV row per shown (user, item) with a click or rating and context columns
whose values are words, plus a second CSV with item names and descriptions::

    log.csv    user,item,label,daytime,weekday,location,weather,country[,timestamp]
    items.csv  item,name,category,description

    python examples/context_log_to_larr.py --log log.csv --items items.csv --out mydata
    larr data validate mydata && larr demo --data mydata --out runs/mine

What it does (each step is what README "Your own data" asks of any source):

1. ids: users and items are renumbered 0..n-1 (the original ids go into the profile / name);
2. label: a 0/1 column, or ``--label-threshold T`` for ratings (label = value >= T);
3. time split: by ``--time-col`` (Unix seconds or any date pandas parses) when the log has one,
   else by row order (the file is taken to be in log order); 80/10/10 by rows, cut on time
   boundaries so that no train row is later than a valid row and no valid row later than a test row;
4. requests: rows of one user at one timestamp form one request; without timestamps each row is
   its own request. ``position`` is 0 (the log has no ranks);
5. scene features: every context column (``--context-cols``, default: all other columns of the
   log), declared in dataset.json with a text template ("weather: {value}");
6. ``unseen_scene``: a row has a context value that never occurs in the train split.

Only pandas, pyarrow and larr's own schema module are used; the output passes `larr data validate`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from larr.data.schema import SHOPS, SPLITS, USERS, SceneFeature, Table, impressions_table, validate_dir, write_dataset_meta
from larr.io import write_parquet

# Nicer texts for context columns that such logs often have; any other column renders as "name: value".
TEMPLATES = {
    "daytime": "time of day: {value}", "time_of_day": "time of day: {value}", "weekday": "weekday: {value}",
    "isweekend": "day type: {value}", "location": "location: {value}", "weather": "weather: {value}",
    "country": "country: {value}", "city": "city: {value}", "companion": "with: {value}",
}
FRACTIONS = (0.8, 0.1)  # train, valid; test is the rest


def time_order(log: pd.DataFrame, time_col: str | None) -> pd.Series:
    """Unix seconds of each row: the time column, else the row number (the file's order is time)."""
    if time_col is None:
        return pd.Series(np.arange(len(log), dtype=np.int64), index=log.index)
    t = log[time_col]
    if pd.api.types.is_numeric_dtype(t):
        return t.astype(np.int64)
    return (pd.to_datetime(t, utc=True).astype("int64") // 10**9).astype(np.int64)


def time_split(ts: pd.Series) -> pd.Series:
    """train/valid/test by time, 80/10/10 by rows; rows with the same time stay in one split."""
    order = np.sort(ts.to_numpy())
    cuts = [order[min(int(f * len(order)), len(order) - 1)] for f in np.cumsum(FRACTIONS)]
    split = np.where(ts < cuts[0], "train", np.where(ts < cuts[1], "valid", "test"))
    return pd.Series(split, index=ts.index)


def to_arrow(df: pd.DataFrame, table: Table) -> pa.Table:
    kinds = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}
    return pa.table({c.name: pa.array(df[c.name].tolist(), type=kinds[c.kind]) for c in table.columns})


def convert(log_csv: Path, items_csv: Path, out: Path, user_col: str = "user", item_col: str = "item",
            label_col: str = "label", label_threshold: float | None = None, time_col: str | None = None,
            context_cols: list[str] | None = None, name_col: str = "name", desc_col: str = "description",
            category_col: str = "category") -> dict[str, int]:
    log = pd.read_csv(log_csv, dtype={user_col: str, item_col: str})
    items = pd.read_csv(items_csv, dtype={item_col: str}).drop_duplicates(item_col)
    if context_cols is None:
        context_cols = [c for c in log.columns if c not in (user_col, item_col, label_col, time_col)]
    if not context_cols:
        raise SystemExit("no context columns: larr needs at least one scene feature")

    # 1. dense ids (items of the item file first, then any the log names that it lacks)
    item_keys = list(dict.fromkeys([*items[item_col], *log[item_col]]))
    item_id = {k: i for i, k in enumerate(item_keys)}
    user_keys = list(dict.fromkeys(log[user_col]))
    user_id = {k: i for i, k in enumerate(user_keys)}

    # 2.-4. label, time, split, requests
    raw = log[label_col]
    label = (raw >= label_threshold) if label_threshold is not None else raw.astype(int)
    ts = time_order(log, time_col)
    imps = pd.DataFrame({
        "ts": ts, "user_id": log[user_col].map(user_id), "shop_id": log[item_col].map(item_id),
        "position": 0, "label": label.astype(int),
    })
    imps["day"] = (ts // 86400 - ts.min() // 86400) if time_col else (np.arange(len(log)) * 100 // len(log))
    imps["split"] = time_split(ts)
    if time_col:
        imps["request_id"] = imps.groupby(["user_id", "ts"], sort=False).ngroup()
    else:
        imps["request_id"] = np.arange(len(imps))

    # 5. scene features: context values as words
    scene = [SceneFeature(c, "str", TEMPLATES.get(c.lower(), c.replace("_", " ") + ": {value}"),
                          f"Context column '{c}' of {Path(log_csv).name}.") for c in context_cols]
    for c in context_cols:
        imps[c] = log[c].fillna("unknown").astype(str).str.strip()

    # 6. unseen_scene: a value absent from train
    train = imps["split"] == "train"
    unseen = np.zeros(len(imps), dtype=bool)
    for c in context_cols:
        unseen |= ~imps[c].isin(set(imps.loc[train, c])).to_numpy()
    imps["unseen_scene"] = unseen
    imps = imps.sort_values(["ts", "request_id"], kind="stable").reset_index(drop=True)

    # shops and users
    first_day = imps.groupby("shop_id")["day"].min()
    meta = items.set_index(item_col)
    col = lambda c, k: str(meta.at[k, c]) if c in meta.columns and k in meta.index and pd.notna(meta.at[k, c]) else ""
    shops = pd.DataFrame({
        "shop_id": range(len(item_keys)),
        "name": [col(name_col, k) or f"item {k}" for k in item_keys],
        "category": [col(category_col, k) for k in item_keys],
        "district": "", "price_level": 0, "rating": 0.0,  # unknown (rating 0 = not rated; no test leakage)
        "description": [col(desc_col, k) for k in item_keys], "menu": "",
        "open_day": [int(first_day.get(i, imps["day"].max() + 1)) for i in range(len(item_keys))],
    })
    users = pd.DataFrame({"user_id": range(len(user_keys)), "home_district": "", "work_district": "",
                          "price_sensitivity": 0.5, "profile": [f"user {k}" for k in user_keys]})

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(to_arrow(shops, SHOPS), out / SHOPS.file)
    write_parquet(to_arrow(users, USERS), out / USERS.file)
    imp_table = impressions_table(scene)
    write_parquet(to_arrow(imps, imp_table), out / imp_table.file)
    write_dataset_meta(
        out, scene, name=Path(log_csv).stem, source=str(log_csv),
        label=f"{label_col} >= {label_threshold}" if label_threshold is not None else label_col,
        split=f"time split {'/'.join(str(int(f * 100)) for f in FRACTIONS)}/rest by rows, "
              + (f"on {time_col}" if time_col else "on row order (no timestamps)"),
        splits={s: int((imps['split'] == s).sum()) for s in SPLITS},
    )
    return validate_dir(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--log", type=Path, required=True, help="interaction log CSV")
    p.add_argument("--items", type=Path, required=True, help="item CSV (id, name, description, category)")
    p.add_argument("--out", type=Path, required=True, help="data folder to write")
    p.add_argument("--user-col", default="user")
    p.add_argument("--item-col", default="item")
    p.add_argument("--label-col", default="label")
    p.add_argument("--label-threshold", type=float, default=None, help="ratings: label = value >= this")
    p.add_argument("--time-col", default=None, help="timestamp column (else row order is time)")
    p.add_argument("--context-cols", default=None, help="comma-separated (default: every other log column)")
    p.add_argument("--name-col", default="name")
    p.add_argument("--desc-col", default="description")
    p.add_argument("--category-col", default="category")
    a = p.parse_args(argv)
    counts = convert(a.log, a.items, a.out, a.user_col, a.item_col, a.label_col, a.label_threshold, a.time_col,
                     a.context_cols.split(",") if a.context_cols else None, a.name_col, a.desc_col, a.category_col)
    print(f"wrote {a.out}: " + ", ".join(f"{k} {v:,} rows" for k, v in counts.items()))


if __name__ == "__main__":
    main()
