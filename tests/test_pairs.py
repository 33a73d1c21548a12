"""Stage-2 pair mining: each builder's rule, train-split only, held-out pairs kept out of training."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from larr.config import load_config
from larr.data.schema import SceneFeature, write_dataset_meta
from larr.llm import pairs as P

SCENE = [
    SceneFeature("weather", "str", "weather: {value}", "Weather at request time."),
    SceneFeature("time_slot", "str", "time slot: {value}", "Part of the day."),
]
WEATHER = ["sunny", "heavy rain", "snow", "typhoon"]

# user → shops clicked in the train split. Users 0-2 share a taste (shops 0-3), users 3-4
# another (shops 6-9); user 5 clicks one shop of each group.
TRAIN_CLICKS = {
    0: [0, 1, 2, 3, 0],
    1: [0, 1, 2, 4],
    2: [1, 2, 3],
    3: [6, 7, 8, 9],
    4: [6, 7, 8],
    5: [0, 6],
}
# Clicks outside train: they would create new pairs (user 5 ~ users 0-2; shop 10 ~ shop 11)
# if a builder looked at them.
OTHER_CLICKS = {
    5: [("valid", 1), ("valid", 2), ("test", 3), ("test", 10), ("test", 11)],
    0: [("test", 10), ("test", 11)],
    1: [("valid", 10), ("valid", 11)],
    2: [("test", 10), ("test", 11)],
}


def write_world(data_dir: Path, n_shops: int = 12, n_users: int = 6) -> Path:
    """A tiny data directory in the larr schema, with scene columns and hidden scene attributes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cats = ["noodle soup", "hotpot", "salads", "bubble tea"]
    pq.write_table(pa.table({
        "shop_id": pa.array(range(n_shops), pa.int64()),
        "name": [f"Shop{i} Kitchen" for i in range(n_shops)],
        "category": [cats[i // 3 % len(cats)] for i in range(n_shops)],
        "district": ["Old Town" if i < 6 else "Harbor" for i in range(n_shops)],
        "price_level": pa.array([1 + i % 4 for i in range(n_shops)], pa.int64()),
        "rating": [3.0 + (i % 20) / 10 for i in range(n_shops)],
        "description": [f"A {cats[i // 3 % len(cats)]} place." for i in range(n_shops)],
        "menu": [f"dish {i} 12.5" for i in range(n_shops)],
        "open_day": pa.array([0] * n_shops, pa.int64()),
    }), data_dir / "shops.parquet")
    pq.write_table(pa.table({
        "user_id": pa.array(range(n_users), pa.int64()),
        "home_district": ["Old Town"] * n_users,
        "work_district": ["Harbor"] * n_users,
        "price_sensitivity": [0.5] * n_users,
        "profile": [f"Office worker {u} who orders lunch" for u in range(n_users)],
    }), data_dir / "users.parquet")
    rows = []
    for u, shops in TRAIN_CLICKS.items():
        for j, s in enumerate(shops):
            rows.append((u, s, "train", 1, 10 + j))
            rows.append((u, (s + 5) % n_shops, "train", 0, 10 + j))  # a shown, unclicked shop
    for u, extra in OTHER_CLICKS.items():
        for j, (split, s) in enumerate(extra):
            rows.append((u, s, split, 1, 100 + j))
    cols = {k: [] for k in ("request_id", "ts", "day", "user_id", "shop_id", "position", "label", "split",
                            "unseen_scene", "weather", "time_slot")}
    for i, (u, s, split, label, day) in enumerate(rows):
        for k, v in zip(cols, (1000 * u + day, 86400 * day + u, day, u, s, 0, label, split, False,
                               WEATHER[(u + day) % 4], "lunch" if day % 2 else "dinner")):
            cols[k].append(v)
    pq.write_table(pa.table({k: pa.array(v, pa.bool_() if k == "unseen_scene" else None) for k, v in cols.items()}),
                   data_dir / "impressions.parquet")
    write_dataset_meta(data_dir, SCENE, name="fixture")
    pq.write_table(pa.table({
        "feature": ["weather"] * 4 + ["time_slot"] * 2,
        "value": WEATHER + ["lunch", "dinner"],
        "warmth": [0.0, 0.8, 1.0, 0.9, 0.1, 0.3],
        "speed": [0.2, 0.1, 0.0, 0.1, 0.9, 0.2],
    }), data_dir / "scene_attributes.parquet")
    return data_dir


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    return write_world(tmp_path / "data")


@pytest.fixture()
def clicks(world: Path) -> pd.DataFrame:
    return P.load_tables(world)[2]


def _sets(clicks: pd.DataFrame) -> dict[int, set[int]]:
    return {int(u): set(g["shop_id"].astype(int)) for u, g in clicks.groupby("user_id")}


def test_train_clicks_are_train_split_clicks_only(clicks: pd.DataFrame) -> None:
    assert set(clicks["split"].astype(str)) == {"train"} and set(clicks["label"]) == {1}
    assert len(clicks) == sum(len(v) for v in TRAIN_CLICKS.values())
    assert clicks["ts"].is_monotonic_increasing


def test_user_user_pairs_follow_the_rule(clicks: pd.DataFrame) -> None:
    sets = _sets(clicks)
    pairs = P.user_user_pairs(clicks, min_jaccard=0.3, min_common=2, max_per_user=10)
    expected = {
        (a, b) for a, b in itertools.combinations(sorted(sets), 2)
        if len(sets[a] & sets[b]) >= 2 and len(sets[a] & sets[b]) / len(sets[a] | sets[b]) >= 0.3
    }
    assert set(zip(pairs["left"], pairs["right"])) == expected  # all that satisfy it, none that don't
    assert expected == {(0, 1), (0, 2), (1, 2), (3, 4)}  # the valid/test clicks of user 5 add nothing
    for r in pairs.itertuples():
        assert r.common == len(sets[r.left] & sets[r.right])
        assert r.jaccard == pytest.approx(r.common / len(sets[r.left] | sets[r.right]))


def test_user_user_cap_keeps_the_most_similar_partner(clicks: pd.DataFrame) -> None:
    pairs = P.user_user_pairs(clicks, min_jaccard=0.0, min_common=1, max_per_user=1)
    kept = set(zip(pairs["left"], pairs["right"]))
    # user 0's best is 2 (J=3/4), user 1's best is 0 (3/5 > 2/5), 3 and 4 are each other's best
    assert {(0, 2), (0, 1), (3, 4)} <= kept
    assert all(r.left < r.right for r in pairs.itertuples())


def test_shop_shop_pairs_follow_the_rule(clicks: pd.DataFrame) -> None:
    sets = _sets(clicks)
    users_of = {s: {u for u, ss in sets.items() if s in ss} for s in range(12)}
    pairs = P.shop_shop_pairs(clicks, min_coclick=2, min_score=0.5, max_per_shop=10)
    expected = set()
    for a, b in itertools.combinations(sorted(s for s in users_of if users_of[s]), 2):
        co = len(users_of[a] & users_of[b])
        if co >= 2 and co / (len(users_of[a]) * len(users_of[b])) ** 0.5 >= 0.5:
            expected.add((a, b))
    assert set(zip(pairs["left"], pairs["right"])) == expected
    assert (6, 7) in expected and (10, 11) not in expected  # 10-11 are co-clicked only in valid/test
    for r in pairs.itertuples():
        assert r.coclicks == len(users_of[r.left] & users_of[r.right]) >= 2


def test_user_shop_pairs_are_exactly_the_train_clicks(clicks: pd.DataFrame) -> None:
    pairs = P.user_shop_pairs(clicks)
    got = sorted(zip(pairs["left"], pairs["right"]))
    assert got == sorted((u, s) for u, shops in TRAIN_CLICKS.items() for s in shops)
    assert not set(pairs["right"]) & {10, 11}


def test_heldout_pairs_never_in_training(clicks: pd.DataFrame) -> None:
    pairs = P.user_shop_pairs(clicks)  # (0, 0) is clicked twice: both rows must leave together
    for seed in range(5):
        train, held = P.split_heldout(pairs, frac=0.3, max_n=100, seed=seed)
        assert len(held) == round(0.3 * pairs[["left", "right"]].drop_duplicates().shape[0])
        assert not set(P.pair_keys(train)) & set(P.pair_keys(held))
        assert len(train) + len(pairs[P.pair_keys(pairs).isin(set(P.pair_keys(held)))]) == len(pairs)
    again = P.split_heldout(pairs, frac=0.3, max_n=100, seed=4)[1]
    assert again.equals(held)  # deterministic by seed


def test_history_text_leaves_out_the_clicked_shop_and_carries_the_scene() -> None:
    prior = [(1, "A", "x"), (2, "B", "y"), (1, "A", "x")]
    text = P.history_user_text("Student", prior, exclude_shop=1, top_k=3, scene="weather: snow")
    assert "B" in text and "A" not in text.replace("<user>", "") and text.startswith("weather: snow. <user>")
    assert text == "weather: snow. " + P.corpus.user_text("Student", ["x", "y"], ["B"])  # x clicked twice


def test_build_pairs_texts_and_eval_sets(world: Path) -> None:
    cfg = load_config(None, ["contrastive.heldout_frac=0.25", "contrastive.uu_min_jaccard=0.3",
                             "contrastive.scene_features_per_pair=1",
                             "contrastive.ss_min_coclick=2", "contrastive.scene_in_user_text=true",
                             "contrastive.scene_only_frac=0"])
    data = P.build_pairs(world, cfg)
    assert set(data.train) == set(data.heldout) == set(P.PAIR_TYPES)
    us = data.train["user_shop"]
    assert all(t.startswith(("weather: ", "time slot: ")) and "<user>" in t for t in us.left)
    assert all(t.startswith("<shop_name>") for t in us.right)
    for kind, es in data.heldout.items():
        assert len(es.queries) == len(es.targets) == len(es.exclude) >= 1
        for target, drop in zip(es.targets, es.exclude):
            assert target not in set(drop.tolist())
        train_pairs = set(zip(data.train[kind].left, data.train[kind].right))
        held_pairs = set(zip(es.queries, [es.candidates[t] for t in es.targets]))
        assert not train_pairs & held_pairs
    uu = data.heldout["user_user"]
    assert len(uu.candidates) == 6  # every user is a candidate


def _scene_clicks() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Snow sends 30 of its 40 clicks to hotpot (shops 0-2); sunny sends its 70 to salads (3-4) and bubble tea (5)."""
    shops = pd.DataFrame({"shop_id": range(6), "category": ["hotpot"] * 3 + ["salads"] * 2 + ["bubble tea"]})
    counts = {("snow", 0): 15, ("snow", 1): 10, ("snow", 2): 5, ("snow", 3): 10,
              ("sunny", 0): 5, ("sunny", 3): 25, ("sunny", 4): 15, ("sunny", 5): 25}
    rows = [(w, s) for (w, s), n in counts.items() for _ in range(n)]
    return pd.DataFrame(rows, columns=["weather", "shop_id"]), shops


def test_scene_shop_pairs_follow_the_rule() -> None:
    clicks, shops = _scene_clicks()
    cat = dict(zip(shops["shop_id"], shops["category"]))
    pairs = P.scene_shop_pairs(clicks, shops, SCENE[:1], min_lift=1.2, min_clicks=20, max_categories=3,
                               shops_per_category=2)
    # overall shares: hotpot 35/110, salads 50/110, bubble tea 25/110
    assert list(zip(pairs["value"], pairs["right"])) == [("snow", 0), ("snow", 1), ("sunny", 5), ("sunny", 3),
                                                          ("sunny", 4)]
    for r in pairs.itertuples():  # each pair against the rule, recomputed by hand
        under = clicks[clicks["weather"] == r.value]
        n_vc = sum(cat[s] == r.category for s in under["shop_id"])
        share = sum(cat[s] == r.category for s in clicks["shop_id"]) / len(clicks)
        assert cat[r.right] == r.category and n_vc >= 20
        assert r.lift == pytest.approx(n_vc / len(under) / share) and r.lift >= 1.2
    assert pairs.loc[pairs["value"] == "snow", "lift"].iloc[0] == pytest.approx(30 / 40 / (35 / 110))
    strict = P.scene_shop_pairs(clicks, shops, SCENE[:1], min_clicks=30, shops_per_category=5)
    assert set(zip(strict["value"], strict["category"])) == {("snow", "hotpot"), ("sunny", "salads")}
    one = P.scene_shop_pairs(clicks, shops, SCENE[:1], max_categories=1, shops_per_category=1)
    assert list(zip(one["value"], one["right"])) == [("snow", 0), ("sunny", 5)]  # the most lifted category's top shop


def test_scene_shop_pairs_are_trained_only_when_weighted(world: Path) -> None:
    assert "scene_shop" not in P.build_pairs(world, load_config(None, [])).train
    cfg = load_config(None, ["contrastive.weights.scene_shop=1", "contrastive.sc_min_clicks=1",
                             "contrastive.sc_min_lift=1.0"])
    data = P.build_pairs(world, cfg)
    sc = data.train["scene_shop"]
    assert len(sc) >= 1 and "scene_shop" not in data.heldout
    assert all(t.startswith(("weather: ", "time slot: ")) and ";" not in t for t in sc.left)  # the stage-3 form
    assert all(t.startswith("<shop_name>") for t in sc.right)


def _profile_clicks() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Snow and heavy rain lean to hotpot, sunny and heatwave to salads; fog has 10 clicks only."""
    shops = pd.DataFrame({"shop_id": range(3), "category": ["hotpot", "salads", "bubble tea"]})
    counts = {"snow": (30, 5, 5), "heavy rain": (25, 5, 10), "sunny": (5, 30, 5), "heatwave": (5, 25, 10),
              "fog": (10, 0, 0)}
    rows = [(w, s) for w, n in counts.items() for s, k in enumerate(n) for _ in range(k)]
    return pd.DataFrame(rows, columns=["weather", "shop_id"]), shops


def test_click_profiles_are_smoothed_centred_log_lifts() -> None:
    clicks, shops = _profile_clicks()
    prof = P.click_profiles(clicks, shops, "weather", min_clicks=20, smoothing=20.0)
    assert list(prof.index) == ["heatwave", "heavy rain", "snow", "sunny"]  # fog: too few clicks
    share = {"hotpot": 75 / 170, "salads": 65 / 170, "bubble tea": 30 / 170}  # all clicks, fog's too
    n = {"heatwave": (5, 25, 10), "heavy rain": (25, 5, 10), "snow": (30, 5, 5), "sunny": (5, 30, 5)}
    raw = pd.DataFrame({c: [math.log((n[v][i] + 20 * share[c]) / (40 + 20) / share[c]) for v in prof.index]
                        for i, c in enumerate(share)}, index=prof.index)
    want = raw - raw.mean(axis=0)
    for c in share:
        assert prof[c].tolist() == pytest.approx(want[c].tolist())


def test_scene_scene_pairs_follow_the_rule() -> None:
    clicks, shops = _profile_clicks()
    pairs = P.scene_scene_pairs(clicks, shops, SCENE[:1], min_clicks=20, min_similarity=0.5, max_per_value=3)
    assert set(zip(pairs["left"], pairs["right"])) == {("heavy rain", "snow"), ("heatwave", "sunny")}
    prof = P.click_profiles(clicks, shops, "weather", 20)
    for r in pairs.itertuples():  # each pair against the rule, recomputed by hand
        a, b = prof.loc[r.left].to_numpy(), prof.loc[r.right].to_numpy()
        cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        assert r.feature == "weather" and r.left < r.right and r.similarity == pytest.approx(cos) and cos >= 0.5
    one = P.scene_scene_pairs(clicks, shops, SCENE[:1], min_clicks=20, min_similarity=-1.0, max_per_value=1)
    assert set(zip(one["left"], one["right"])) == {("heavy rain", "snow"), ("heatwave", "sunny")}  # best partner
    everyone = P.scene_scene_pairs(clicks, shops, SCENE[:1], min_clicks=1, min_similarity=-1.0, max_per_value=9)
    assert len(everyone) == 10 and "fog" in set(everyone["left"]) | set(everyone["right"])  # 5 values: all 10 pairs


def test_scene_scene_pairs_are_trained_only_when_weighted(world: Path) -> None:
    assert "scene_scene" not in P.build_pairs(world, load_config(None, [])).train
    cfg = load_config(None, ["contrastive.weights.scene_scene=1", "contrastive.scs_min_clicks=1",
                             "contrastive.scs_min_similarity=-1"])
    data = P.build_pairs(world, cfg)
    vv = data.train["scene_scene"]
    assert len(vv) >= 1 and "scene_scene" not in data.heldout
    for left, right in zip(vv.left, vv.right):  # two values of one feature, each in the stage-3 form
        assert left != right and left.split(": ")[0] == right.split(": ")[0] and ";" not in left + right


def test_scene_only_share_of_user_shop_pairs(world: Path) -> None:
    """scene_only_frac: that share of user-shop pairs has the scene alone as its user side, by seed."""
    def left(frac: float, seed: int = 0) -> list[str]:
        cfg = load_config(None, [f"seed={seed}", f"contrastive.scene_only_frac={frac}",
                                 "contrastive.scene_features_per_pair=2"])
        return P.build_pairs(world, cfg).train["user_shop"].left

    every = left(1.0)
    assert all("<user>" not in t and t.startswith("weather: ") and "; time slot: " in t for t in every)
    half = left(0.5)
    alone = [t for t in half if "<user>" not in t]
    assert 0 < len(alone) < len(half) and half == left(0.5)  # a mix, the same one again
    assert all(t.split(". <user>")[0] in every for t in half if "<user>" in t)  # same scene, history after it
    assert all("<user>" in t for t in left(0.0))
