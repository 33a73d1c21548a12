"""The synthetic world: contract, determinism, consistency, and clicks that depend on scene meaning."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from larr.data import synth as S
from larr.data import world as W
from larr.data.schema import SHOPS, USERS, impressions_table, read_scene_features, validate_dir

WARMING = ("hotpot", "noodle soup", "breakfast congee", "malatang", "dumplings")
ICED = ("ice cream", "bubble tea", "cold noodles", "fruit & juice")
FILES = ("shops.parquet", "users.parquet", "impressions.parquet", "dataset.json", "world.json",
         "scene_attributes.parquet", "cuisine_attributes.parquet")


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("quick0")
    return out, S.generate(out, preset="quick", seed=0, progress=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict, dict]:
    """The demo world of seed 0 (≈ 300k rows, ≈ 3 s): generated once for the tests that need its size."""
    out = tmp_path_factory.mktemp("demo0")
    summary = S.generate(out, preset="demo", seed=0, progress=False)
    return out, summary, json.loads((out / "world.json").read_text())


@pytest.fixture(scope="module")
def tables(quick) -> dict[str, pd.DataFrame]:
    out, _ = quick
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in ("shops", "users", "impressions")}


@pytest.fixture(scope="module")
def facts(quick) -> dict:
    return json.loads((quick[0] / "world.json").read_text())


def _split_values(imp: pd.DataFrame, feature: str, split: str) -> set[str]:
    return set(imp.loc[imp["split"] == split, feature].astype(str))


# ---------------------------------------------------------------------------- contract


def test_presets_are_frozen_sizes():
    assert {"quick", "demo", "large"} <= set(S.PRESETS)
    p = S.PRESETS["quick"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.n_shops = 1  # type: ignore[misc]
    assert S.PRESETS["large"].n_requests * (S.K_MIN + S.K_MAX) / 2 >= 20_000_000


def test_files_validate_and_match_the_declared_schema(quick):
    out, summary = quick
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no temp files left behind
    counts = validate_dir(out)
    assert counts["impressions"] == summary["impressions"]
    scene = read_scene_features(out)
    assert [f.name for f in scene] == S.SCENE_NAMES
    assert pq.read_schema(out / "impressions.parquet").names == impressions_table(scene).column_names
    assert pq.read_schema(out / "shops.parquet").names == SHOPS.column_names
    assert pq.read_schema(out / "users.parquet").names == USERS.column_names
    meta = json.loads((out / "dataset.json").read_text())
    assert (meta["name"], meta["preset"], meta["seed"]) == ("synth", "quick", 0)


def test_summary_has_what_the_cli_prints(quick, facts):
    _, summary = quick
    assert set(summary["ctr"]) == {"train", "valid", "test"}
    assert summary["unseen_share"]["train"] == 0.0
    assert summary["rows_per_s"] > 0 and summary["seconds"] > 0
    assert summary["impressions"] == sum(facts["rows"].values())
    assert 0.5 * S.PRESETS["quick"].n_requests < summary["requests"] < 2 * S.PRESETS["quick"].n_requests
    assert S.K_MIN / 2 <= summary["impressions"] / summary["requests"] <= S.K_MAX


def test_every_scene_value_has_hidden_attributes(quick, tables):
    out, _ = quick
    attrs = pd.read_parquet(out / "scene_attributes.parquet")
    assert list(attrs.columns) == ["feature", "value", *W.DIMS]
    known = set(zip(attrs["feature"], attrs["value"]))
    imp = tables["impressions"]
    for f in S.SCENE_NAMES:
        assert {(f, str(v)) for v in imp[f].unique()} <= known, f
    cuisines = pd.read_parquet(out / "cuisine_attributes.parquet")
    assert set(tables["shops"]["category"]) <= set(cuisines["category"])


# ---------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(quick, tmp_path):
    out, _ = quick
    S.generate(tmp_path, preset="quick", seed=0, progress=False)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_descriptions_name_each_long_tail_value_and_change_nothing_else(quick, tables, tmp_path):
    out, _ = quick
    S.generate(tmp_path, preset="quick", seed=0, progress=False, descriptions=True)
    for name in set(FILES) - {"dataset.json"}:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    feats = {f.name: f for f in read_scene_features(tmp_path)}
    assert {n for n, f in feats.items() if f.descriptions} == set(W.LONG_TAIL_FEATURES)
    landmark_types = {t.name for t in W.LANDMARK_TYPES}
    event_types = {t.name for t in W.EVENT_TYPES}
    imp = tables["impressions"]
    for value in imp["landmark"].unique():
        assert feats["landmark"].descriptions[value] in landmark_types
        assert feats["landmark"].render(value) == f"nearby landmark: {value} ({feats['landmark'].descriptions[value]})"
    for value in set(imp["event"].unique()) - {"none"}:
        assert feats["event"].descriptions[value] in event_types
    assert feats["event"].render("none") == "local event: none"
    assert feats["weather"].render("heavy rain") == "weather: heavy rain"


def test_data_stage_writes_descriptions_when_configured(tmp_path):
    from larr import layout
    from larr.config import load_config
    from larr.pipeline import run_data

    run_data(load_config(None, ["data.preset=quick", "data.descriptions=true"]), tmp_path)
    feats = {f.name: f for f in read_scene_features(layout.data_dir(tmp_path))}
    assert feats["landmark"].descriptions and feats["event"].descriptions and not feats["hour"].descriptions


def test_different_seed_gives_a_different_world(quick, tmp_path):
    out, _ = quick
    S.generate(tmp_path, preset="quick", seed=1, progress=False)
    for name in ("shops.parquet", "users.parquet", "impressions.parquet"):
        assert (tmp_path / name).read_bytes() != (out / name).read_bytes(), name


def test_row_groups_do_not_change_the_data(tables, tmp_path):
    small = dataclasses.replace(S.PRESETS["quick"], chunk_rows=3_000)
    for run in ("a", "b"):
        S.generate(tmp_path / run, preset=small, seed=0, progress=False)
    path = tmp_path / "a" / "impressions.parquet"
    assert pq.ParquetFile(path).metadata.num_row_groups > 3
    assert path.read_bytes() == (tmp_path / "b" / "impressions.parquet").read_bytes()
    assert pd.read_parquet(path).equals(tables["impressions"])


# ---------------------------------------------------------------------------- unseen scenes, new shops


def test_unseen_scene_flag_is_exact(tables):
    imp = tables["impressions"]
    train = imp["split"] == "train"
    unseen = np.zeros(len(imp), dtype=bool)
    for f in S.SCENE_NAMES:
        unseen |= ~imp[f].astype(str).isin(set(imp.loc[train, f].astype(str)))
    assert (imp["unseen_scene"].to_numpy() == unseen).all()
    assert not imp.loc[train, "unseen_scene"].any()
    assert imp.loc[imp["split"] == "test", "unseen_scene"].mean() > 0.1


def test_test_only_values_are_absent_from_train(tables, facts):
    imp = tables["impressions"]
    listed = facts["test_only_values"]
    for f, values in W.TEST_ONLY.items():  # the scheduled ones are all there
        assert set(values) <= set(listed.get(f, [])), f
    for f, values in listed.items():
        assert not set(values) & _split_values(imp, f, "train"), f
        assert set(values) <= _split_values(imp, f, "test"), f
    for key, neighbour in facts["nearest_seen_value"].items():
        f = key.split(": ")[0]
        assert neighbour in _split_values(imp, f, "train")
    assert facts["nearest_seen_value"]["weather: typhoon"] in ("thunderstorm", "heavy rain")
    assert facts["nearest_seen_value"]["holiday: Qixi Festival"] == "Valentine's Day"


def test_new_shops_open_in_test_and_never_show_before(tables, facts):
    shops, imp = tables["shops"], tables["impressions"]
    test_start = facts["split_days"]["test"][0]
    new = shops.loc[shops["open_day"] >= test_start, "shop_id"]
    assert len(new) == facts["new_shops"] > 0
    first_shown = imp.groupby("shop_id")["day"].min()
    open_day = shops.set_index("shop_id")["open_day"]
    assert (first_shown >= open_day.loc[first_shown.index]).all()
    shown_new = imp[imp["shop_id"].isin(new)]
    assert len(shown_new) and (shown_new["split"] == "test").all()


# ---------------------------------------------------------------------------- consistency


def test_scene_is_consistent(tables):
    imp = tables["impressions"]
    when = pd.to_datetime(imp["ts"], unit="s", utc=True)
    assert (when.dt.hour == imp["hour"]).all()
    assert (imp["time_slot"].astype(str) == [W.TIME_SLOTS[W.HOUR_SLOT[h]] for h in imp["hour"]]).all()
    assert (imp["weekday"].astype(str) == when.dt.day_name()).all()
    for col in ("weather", "temperature", "holiday", "day_type", "weekday"):  # city-wide, per day
        assert (imp.groupby("day")[col].nunique() == 1).all(), col
    weekend = imp["weekday"].isin(["Saturday", "Sunday"])
    assert (imp.loc[weekend, "day_type"] != "weekday").all()
    assert (imp.loc[~weekend, "day_type"] != "weekend").all()
    kind = {d.name: d.kind for d in W.DISTRICTS}
    assert (imp["district_type"].astype(str) == imp["district"].astype(str).map(kind)).all()
    allowed = {"home": {"residential", "suburb", "nightlife"}, "office": {"office"}, "campus": {"university"},
               "entertainment venue": {"nightlife"}, "friend's home": {"residential", "suburb"},
               "hotel": {"office", "nightlife", "suburb"}}
    pairs = imp.groupby(["location_type", "district_type"], observed=True).size().index
    assert all(dtype in allowed[loc] for loc, dtype in pairs), list(pairs)


def test_temperature_follows_weather():
    world = S.build_world("demo", seed=3)
    cal, vocab = world.calendar, S.scene_vocab()
    weather = np.array(vocab["weather"])[cal.weather]
    band = np.array(vocab["temperature"])[cal.temperature]
    assert (band[weather == "snow"] == "freezing (below 0°C)").all()
    assert np.isin(band[weather == "heatwave"], ["scorching (35-40°C)", "extreme heat (above 40°C)"]).all()
    months = np.array([d.month for d in cal.date])
    assert not np.isin(months[weather == "snow"], [5, 6, 7, 8, 9]).any()
    assert [d.weekday() for d in cal.date] == list(cal.weekday)
    assert cal.date[0] == dt.date(*W.START_DATE) and all(a < b for a, b in zip(cal.date, cal.date[1:]))


def test_users_order_mostly_from_home_or_work(tables):
    imp = tables["impressions"].drop_duplicates("request_id")
    users = tables["users"].set_index("user_id")
    d = imp["district"].astype(str).to_numpy()
    home = users.loc[imp["user_id"], "home_district"].to_numpy()
    work = users.loc[imp["user_id"], "work_district"].to_numpy()
    assert ((d == home) | (d == work)).mean() > 0.7


def test_shop_texts_vary_and_carry_cues():
    world = S.build_world("demo", seed=0)
    shops = world.shops
    assert len(set(shops.name)) == len(shops.name)
    assert len(set(shops.description)) == len(shops.description)
    late = shops.close_hour >= 25
    says_late = np.array(["Open till" in d for d in shops.description])
    assert late.any() and (says_late == late).all()
    names = np.array([W.CUISINES[c].name for c in shops.cuisine])
    warm_words = W.CUE_PHRASES["warmth"]
    share = {grp: np.mean([any(w in d.lower() for w in warm_words)
                           for d, n in zip(shops.description, names) if n in grp]) for grp in (WARMING, ICED)}
    assert share[WARMING] > 2 * share[ICED]
    assert all(";" in m and "¥" in m for m in shops.menu)


# ---------------------------------------------------------------------------- the click model


def _logit_under(world: S.World, batch: S.DayBatch, **values: str) -> np.ndarray:
    """The exact click logits of one day's rows had the scene taken the given values instead."""
    vocab = S.scene_vocab()
    scene = {f: v.copy() for f, v in batch.scene.items()}
    for f, v in values.items():
        scene[f][:] = vocab[f].index(v)
    need = S.scene_need(world, scene)
    return batch.logit - batch.affinity + S.BETA * np.einsum(
        "nd,nd->n", need[batch.req], world.cuisine_centred[world.shops.cuisine[batch.shop]])


def test_click_model_depends_on_scene_meaning():
    world = S.build_world("quick", seed=0)
    batch = S.simulate_day(world, 5)
    cuisine = np.array([W.CUISINES[c].name for c in world.shops.cuisine[batch.shop]])
    rain = _logit_under(world, batch, weather="heavy rain", temperature="cold (0-10°C)")
    heat = _logit_under(world, batch, weather="heatwave", temperature="scorching (35-40°C)")
    lift = rain - heat  # a cuisine's logit change from a hot to a cold, rainy day
    warm, iced = np.isin(cuisine, WARMING), np.isin(cuisine, ICED)
    assert warm.any() and iced.any()
    assert lift[warm].min() > 0 > lift[iced].max()
    # festivals favour sharing food; a workday office lunch favours fast food
    fest = _logit_under(world, batch, holiday="Spring Festival") - _logit_under(world, batch, holiday="none")
    assert fest[cuisine == "hotpot"].min() > 0 > fest[cuisine == "salads"].max()
    # the exact logits reproduce the labels' rate
    p = 1 / (1 + np.exp(-batch.logit))
    assert abs(p.mean() - batch.label.mean()) < 4 * np.sqrt(p.mean() / len(p)) + 0.01


def test_test_only_values_resemble_their_neighbours():
    attrs, vocab = S.scene_attributes(), S.scene_vocab()

    def cos(f: str, a: str, b: str) -> float:
        x, y = attrs[f][vocab[f].index(a)], attrs[f][vocab[f].index(b)]
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    assert cos("weather", "typhoon", "thunderstorm") > 0.9 > cos("weather", "typhoon", "sunny")
    assert cos("holiday", "Mid-Autumn Festival", "Spring Festival") > cos("holiday", "Mid-Autumn Festival",
                                                                            "exam week")
    assert cos("holiday", "Qixi Festival", "Valentine's Day") > 0.95
    assert cos("temperature", "extreme heat (above 40°C)", "scorching (35-40°C)") > 0.95


def test_demo_world_rewards_semantics(demo):
    """Empirical CTRs of the demo world follow the scene's meaning; the requirements' ranges hold."""
    out, summary, facts = demo
    imp = pd.read_parquet(out / "impressions.parquet", columns=["shop_id", "label", "weather", "temperature"])
    shops = pd.read_parquet(out / "shops.parquet", columns=["shop_id", "category"])
    cat = shops.set_index("shop_id")["category"].loc[imp["shop_id"]].to_numpy()
    cold = imp["weather"].isin(["snow", "heavy rain", "thunderstorm", "typhoon"]).to_numpy() | imp[
        "temperature"].isin(["freezing (below 0°C)"]).to_numpy()
    hot = imp["weather"].eq("heatwave").to_numpy()
    y = imp["label"].to_numpy()
    for group, sign in ((WARMING, 1), (ICED, -1)):
        g = np.isin(cat, group)
        assert sign * (y[g & cold].mean() - y[g & hot].mean()) > 0.05, group

    assert all(0.06 <= c <= 0.2 for c in summary["ctr"].values())
    assert 0.25 <= summary["unseen_share"]["test"] <= 0.5  # world v2: new landmarks and events (docs/world.md)
    assert 0.04 <= summary["unseen_share"]["valid"] <= 0.2  # enough unseen valid rows to select models on
    ref = facts["reference_auc"]
    assert 0.75 <= ref["test_oracle"] <= 0.88
    assert ref["test_oracle"] > ref["test_no_scene"] + 0.05  # the scene matters
    assert ref["unseen_oracle"] > ref["unseen_id_oracle"] + 0.015  # and its meaning matters where it is new
    assert ref["test_oracle"] >= ref["test_id_oracle"] >= ref["test_no_scene"]
    rows = facts["test_slice_rows"]
    assert sum(rows.values()) == facts["rows"]["test"] and rows["rare"] + rows["sparse"] > 500


# ---------------------------------------------------------------------------- world v2: the long tail


def test_demo_has_enough_test_only_and_valid_first_values(demo):
    _, _, facts = demo
    test_only, valid_first = facts["test_only_values"], facts["valid_first_values"]
    assert sum(len(v) for v in test_only.values()) >= 15 and len(test_only) >= 5
    assert sum(len(v) for v in valid_first.values()) >= 5
    assert {"landmark", "event"} <= set(test_only) and {"landmark", "event"} <= set(valid_first)
    for f, values in {**test_only, **valid_first}.items():
        for v in values:
            assert f"{f}: {v}" in facts["nearest_seen_value"]


def test_long_tail_features_are_long_tailed(demo):
    """Documented band (docs/world.md, "The long tail"): in demo, 25-75 % of the landmark and of the event
    values that occur have < 20 train rows (≈ one request), while the head is frequent: the top 10 % of
    landmarks carry most landmark rows and the top landmark has ≥ 1 % of all train rows."""
    out, _, facts = demo
    imp = pd.read_parquet(out / "impressions.parquet", columns=["split", "landmark", "event"])
    train = imp[imp["split"] == "train"]
    for f in W.LONG_TAIL_FEATURES:
        occurring = imp[f].astype(str).unique()
        counts = train[f].astype(str).value_counts().reindex(occurring, fill_value=0)
        share = float((counts < S.RARE_ROWS).mean())
        assert 0.25 <= share <= 0.75, (f, share)
        assert share == pytest.approx(facts["long_tail"][f]["share_under_20_train_rows"], abs=1e-4)
        assert len(occurring) >= 100, f
        assert counts.max() >= 0.01 * len(train), f  # a frequent head
    counts = train["landmark"].astype(str).value_counts()
    top = counts.iloc[: max(1, len(counts) // 10)].sum()
    assert top > 0.5 * counts.sum()


def test_listed_unseen_values_match_the_data(tables, facts):
    """test_only / valid_first in world.json: exactly the values of test / valid never seen in train."""
    imp = tables["impressions"]
    for key, split in (("test_only_values", "test"), ("valid_first_values", "valid")):
        listed = facts[key]
        for f in S.SCENE_NAMES:
            expected = _split_values(imp, f, split) - _split_values(imp, f, "train")
            assert set(listed.get(f, [])) == expected, (key, f)
    assert {"landmark", "event"} & set(facts["test_only_values"])
    for f, s in facts["long_tail"].items():
        assert s["test_only"] == len(facts["test_only_values"].get(f, []))
        assert s["valid_first"] == len(facts["valid_first_values"].get(f, []))


def test_landmarks_and_events_are_consistent(tables):
    """A landmark is in the request's district and fits its location type; an event is on its days,
    hours and in (or near) its district; names say what they are."""
    world = S.build_world("quick", seed=0)
    imp = tables["impressions"].drop_duplicates("request_id")
    lm, ev = world.landmarks, world.events
    code = {v: i for i, v in enumerate(lm.name)}
    li = imp["landmark"].astype(str).map(code).to_numpy()
    assert (np.array([W.DISTRICTS[d].name for d in lm.district])[li] == imp["district"].astype(str)).all()
    types = np.array([W.LANDMARK_TYPES[k].name for k in lm.kind])[li]
    for t, loc in set(zip(types, imp["location_type"].astype(str))):
        fits = loc in next(x for x in W.LANDMARK_TYPES if x.name == t).locations
        assert fits or t == "residential compound", (t, loc)  # a fallback only where nothing fits
    assert (lm.open_day[li] <= imp["day"].to_numpy()).all()
    ecode = {v: i for i, v in enumerate(ev.name)}
    on = imp[imp["event"] != "none"]
    assert len(on)
    near = S.district_km() <= S.EVENT_NEAR_KM
    dcode = {d.name: i for i, d in enumerate(W.DISTRICTS)}
    for name, day, hour, district in zip(on["event"].astype(str), on["day"], on["hour"], on["district"].astype(str)):
        e = ecode[name]
        assert e in ev.by_day[day]
        h0, h1 = ev.hours[e]
        assert (hour - h0) % 24 <= h1 - h0
        assert near[ev.district[e], dcode[district]]
    hosp = [n for n, k in zip(lm.name, lm.kind) if W.LANDMARK_TYPES[k].name == "hospital"]
    assert hosp and all("Hospital" in n for n in hosp)
    assert len(set(lm.name)) == len(lm.name) and len(set(ev.name)) == len(ev.name)


def test_long_tail_attributes_follow_their_type():
    """An instance's hidden vector is its type's plus noise, so the nearest value is mostly of the same type."""
    world = S.build_world("demo", seed=0)
    lm = world.landmarks
    a = lm.attrs / np.linalg.norm(lm.attrs, axis=1, keepdims=True)
    sim = a @ a.T
    np.fill_diagonal(sim, -2)
    same = lm.kind[sim.argmax(1)] == lm.kind
    assert same.mean() > 0.7
    hospital = [i for i, k in enumerate(lm.kind) if W.LANDMARK_TYPES[k].name == "hospital"]
    night = [i for i, k in enumerate(lm.kind) if W.LANDMARK_TYPES[k].name == "night market"]
    d = {k: W.DIMS.index(k) for k in ("health", "late_night")}
    assert lm.attrs[hospital, d["health"]].mean() > 0.6 > lm.attrs[night, d["health"]].mean()
    assert lm.attrs[night, d["late_night"]].mean() > 0.7


def test_long_tail_differs_across_seeds():
    a, b = S.build_world("quick", seed=0), S.build_world("quick", seed=1)
    assert a.landmarks.name != b.landmarks.name and a.events.name != b.events.name
    assert S.build_world("quick", seed=0).landmarks.name == a.landmarks.name
