"""The embedded default data set: a food-delivery city whose clicks depend on what the scene *means*.

``generate(out_dir, preset, seed)`` writes shops, users and impressions (plus the hidden
attribute tables used only for evaluation) and returns a summary. The world, the click model
and what is unseen in the test period are documented in ``docs/world.md``; the vocabularies
and hidden attributes live in :mod:`larr.data.world`.

World v2 adds two long-tail scene features, ``landmark`` and ``event``: hundreds of named,
Zipf-popular instances whose hidden attributes come from their type (a hospital, a concert),
drawn per world; new landmarks open over time and events are dated.

Everything is vectorised numpy, one day at a time with its own random generator (so the
output depends only on the seed, never on chunking), written to Parquet row group by row
group with bounded memory.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from larr.data import world as W
from larr.data.schema import SHOPS, SPLITS, USERS, SceneFeature, Table, impressions_table, write_dataset_meta
from larr.errors import LarrError
from larr.io import atomic_path, atomic_write_text, write_parquet


@dataclass(frozen=True)
class Preset:
    """Sizes of one world. ``n_requests`` is the expected number of feed requests (≈15 rows each)."""

    n_shops: int
    n_users: int
    n_days: int
    n_requests: int
    chunk_rows: int  # rows per Parquet row group (bounded memory for large worlds)
    n_landmarks: int = 360  # named nearby landmarks (long tail)
    n_events: int = 160  # named local events (long tail), "none" not counted


PRESETS: dict[str, Preset] = {
    "quick": Preset(n_shops=60, n_users=300, n_days=120, n_requests=1_500, chunk_rows=1 << 20,
                    n_landmarks=60, n_events=20),
    "demo": Preset(n_shops=500, n_users=3_000, n_days=180, n_requests=20_000, chunk_rows=1 << 20,
                   n_landmarks=600, n_events=180),
    "large": Preset(n_shops=5_000, n_users=200_000, n_days=365, n_requests=1_450_000, chunk_rows=1 << 20,
                    n_landmarks=3_000, n_events=1_500),
}

SPLIT_FRACS = (0.75, 0.10, 0.15)
"""Share of days in train / valid / test (consecutive, by day)."""

# ---------------------------------------------------------------------------- click model
# logit = B0 + intent + taste[user, cuisine] + Q_W·quality + price fit + DIST_W·km
#         + POS_W·log1p(position) + CLOSED_LOGIT·closed + BETA·need(scene)·(cuisine − mean cuisine)
B0 = -2.1
INTENT_SD = 0.5  # per-request mood: some requests end with nothing clicked
TASTE_SD = 0.55  # idiosyncratic user × cuisine taste (plus the persona's offsets)
Q_W = 0.35  # shop quality (also drives rating and retrieval popularity)
PRICE_W = 1.5  # price sensitivity × price level penalty
DIST_W = -0.12  # per km between the request's district and the shop's
POS_W = -0.35  # position bias, per log(1 + position)
CLOSED_LOGIT = -2.0  # closed shops are shown greyed out for pre-order, rarely clicked
BETA = 0.8  # scale of the scene–cuisine affinity

# ---------------------------------------------------------------------------- feed
DRAWS = 40  # candidate draws per request (with replacement, de-duplicated)
K_MIN, K_MAX = 10, 20  # shown shops per request
RETRIEVAL_KM = 2.5  # candidate weight ∝ exp(−km / RETRIEVAL_KM)
CLOSED_RETRIEVAL = 0.03  # closed shops are rarely retrieved
HOTEL_SHARE = 0.05  # share of requests from hotels once hotel delivery has launched
NEW_SHOP_SHARE = 0.05  # shops opening during the test period

AUC_BINS = 8192  # streaming AUC: histogram of logits over [-12, 8)
RARE_ROWS = 20  # a seen scene value with fewer train rows than this (≈ one request) is *rare*
SPARSE_ROWS = 100  # ... with RARE_ROWS..99 train rows (≈ 2-6 requests) *sparse*
SLICES = ("unseen", "rare", "sparse", "frequent")
"""Test rows by their rarest scene value: any value unseen in train / else its train rows < 20 / < 100 / more."""
ID_PRIOR_ROWS = 30  # the ID oracle shrinks a value seen in k train rows: k/(k+30) own, the rest feature mean

# ---------------------------------------------------------------------------- long tail (landmarks, events)
LANDMARK_OPEN = (0.80, 0.05, 0.06, 0.05, 0.04)  # landmarks open from day 0 / opening in train / in its last
LATE_TRAIN = 0.1  # tenth (LATE_TRAIN) / in valid / in test (its first 70 %)
RAMP_DAYS = 10  # a new landmark's traffic grows linearly over its first 10 (sampled) days
NEW_LANDMARK_RANKS = (0.05, 0.4)  # a landmark opening after day 0 draws its popularity rank from this band
# of the ranks (5 %-40 %: busier than the typical landmark, never one of the few giants)
EVENT_REACH = 0.9  # share of its district's requests (in its hours) the most popular event reaches
EVENT_REACH_MIN = 0.1  # ... and the least popular (Zipf in between)
EVENT_NEAR_KM, EVENT_NEAR_FACTOR = 4.0, 0.3  # districts this close see the event at this share of its reach
RECURRING_SHARE = 0.04  # of events: weekly series (a farmers' market, a league team's home games)
RECURRING_DAY_P = 0.5  # a series is on with this probability on each weekend day

SCENE_FEATURES = W.SCENE_FEATURES
SCENE_NAMES = [f.name for f in SCENE_FEATURES]
STR_SCENE = [f.name for f in SCENE_FEATURES if f.kind == "str"]


# ---------------------------------------------------------------------------- vocabularies


def scene_vocab(world: World | None = None) -> dict[str, tuple[str, ...]]:
    """Every value of every scene feature, as it appears in impressions (hours stringified).

    The long-tail features (landmark, event) are drawn per world: without ``world`` only the ten
    fixed features are returned (their codes are the same in every world).
    """
    if world is not None:
        return world.vocab
    return {
        "time_slot": W.TIME_SLOTS,
        "hour": tuple(str(h) for h in range(24)),
        "weekday": W.WEEKDAYS,
        "day_type": W.DAY_TYPES,
        "holiday": W.HOLIDAY_VALUES,
        "weather": tuple(W.WEATHER),
        "temperature": tuple(b[0] for b in W.TEMPERATURE_BANDS),
        "district": tuple(d.name for d in W.DISTRICTS),
        "district_type": W.DISTRICT_TYPES,
        "location_type": W.LOCATION_TYPES,
    }


def _hour_attrs(h: int) -> np.ndarray:
    """An hour means its time slot, a little less strongly, plus the pull of the extremes."""
    v = W.HOUR_SCALE * np.array(W.TIME_SLOT_ATTRS[W.TIME_SLOTS[W.HOUR_SLOT[h]]])
    extra = W.vec(late_night=0.2 if h <= 3 else 0.0, breakfast=0.2 if h in (7, 8) else 0.0,
                  speed=0.1 if h == 12 else 0.0)
    return v + np.array(extra)


def scene_attributes(world: World | None = None) -> dict[str, np.ndarray]:
    """Hidden attribute matrix (values × DIMS) of every scene feature, rows in vocabulary order.

    Scaled by FEATURE_SCALE. Without ``world`` only the ten fixed features (see :func:`scene_vocab`).
    """
    if world is not None:
        return world.scene_attrs
    holiday_attrs = {"none": W.vec(), **{h.name: h.attrs for h in W.HOLIDAYS}}
    dtype_of = {d.name: d.kind for d in W.DISTRICTS}
    table = {
        "time_slot": [W.TIME_SLOT_ATTRS[v] for v in W.TIME_SLOTS],
        "hour": [_hour_attrs(h) for h in range(24)],
        "weekday": [W.WEEKDAY_ATTRS[v] for v in W.WEEKDAYS],
        "day_type": [W.DAY_TYPE_ATTRS[v] for v in W.DAY_TYPES],
        "holiday": [holiday_attrs[v] for v in W.HOLIDAY_VALUES],
        "weather": list(W.WEATHER.values()),
        "temperature": [b[2] for b in W.TEMPERATURE_BANDS],
        "district": [W.DISTRICT_SCALE * np.array(W.DISTRICT_TYPE_ATTRS[dtype_of[d.name]]) + np.array(d.extra)
                     for d in W.DISTRICTS],
        "district_type": [W.DISTRICT_TYPE_ATTRS[v] for v in W.DISTRICT_TYPES],
        "location_type": [W.LOCATION_ATTRS[v] for v in W.LOCATION_TYPES],
    }
    return {f: W.FEATURE_SCALE.get(f, 1.0) * np.asarray(rows, dtype=np.float64) for f, rows in table.items()}


def cuisine_attributes() -> np.ndarray:
    """Hidden attributes of every cuisine (cuisines × DIMS), as declared (not centred)."""
    return np.array([c.attrs for c in W.CUISINES], dtype=np.float64)


def _code(values: tuple[str, ...], value: str) -> int:
    return values.index(value)


# ---------------------------------------------------------------------------- the world


@dataclass
class Calendar:
    """One row per day: its date and the city-wide scene (codes into :func:`scene_vocab`)."""

    date: list[dt.date]
    weekday: np.ndarray
    day_type: np.ndarray
    holiday: np.ndarray
    weather: np.ndarray
    temperature: np.ndarray
    celsius: np.ndarray
    split: np.ndarray  # 0 train, 1 valid, 2 test
    n_requests: np.ndarray  # requests generated that day
    hotel_share: np.ndarray  # share of requests from hotels (0 before the launch)
    split_start: tuple[int, int, int]


@dataclass
class Shops:
    cuisine: np.ndarray
    district: np.ndarray
    price_level: np.ndarray
    quality: np.ndarray
    rating: np.ndarray
    open_hour: np.ndarray
    close_hour: np.ndarray
    open_day: np.ndarray
    name: list[str]
    description: list[str]
    menu: list[str]

    def open_at(self, hour: int) -> np.ndarray:
        return (hour - self.open_hour) % 24 < (self.close_hour - self.open_hour)


@dataclass
class Users:
    persona: np.ndarray
    home: np.ndarray
    work: np.ndarray
    price_sensitivity: np.ndarray
    activity: np.ndarray
    taste: np.ndarray  # users × cuisines, hidden
    profile: list[str]


@dataclass
class World:
    """Everything static: the city, shops, users, the calendar and the tables the feed samples from."""

    preset: Preset
    seed: int
    calendar: Calendar
    shops: Shops
    users: Users
    km: np.ndarray  # districts × shops, delivery distance
    retrieval: Retrieval
    persona_hour_cdf: np.ndarray  # 2 (workday?) × (personas·24)
    persona_users: np.ndarray  # user ids grouped by persona
    persona_user_cdf: np.ndarray  # per persona activity CDF, persona p offset by p
    persona_end: np.ndarray  # end offset of each persona's users in persona_users
    where_cdf: np.ndarray  # personas × 2 × slots × 3
    leisure_cdf: np.ndarray
    hotel_cdf: np.ndarray
    scene_attrs: dict[str, np.ndarray]
    cuisine_centred: np.ndarray  # cuisines × DIMS, minus the mean cuisine
    landmarks: Landmarks
    events: Events
    vocab: dict[str, tuple[str, ...]]  # every scene feature's values (scene_vocab(world))


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per (seed, purpose, index): results never depend on call order."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def district_km() -> np.ndarray:
    xy = np.array([d.xy for d in W.DISTRICTS])
    km = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(km, W.SAME_DISTRICT_KM)
    return km


def build_world(preset: Preset | str = "demo", seed: int = 0) -> World:
    """Draw the static world of one seed: calendar, shops (with texts), users (with texts)."""
    if isinstance(preset, str) and preset not in PRESETS:
        raise LarrError(f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})")
    p = PRESETS[preset] if isinstance(preset, str) else preset
    if not 40 <= p.n_days <= 365:
        raise LarrError(f"n_days must be 40..365 (one year, sampled), got {p.n_days}")
    if seed < 0:
        raise LarrError(f"seed must be >= 0, got {seed}")
    cal = build_calendar(p, _rng(seed, 0))
    shops = build_shops(p, cal, _rng(seed, 1))
    users = build_users(p, _rng(seed, 2))
    km = district_km()[:, shops.district].astype(np.float32)
    landmarks = build_landmarks(p, cal, _rng(seed, 4))
    events = build_events(p, cal, landmarks, _rng(seed, 5))
    vocab = {**scene_vocab(), "landmark": tuple(landmarks.name), "event": tuple(events.name)}
    attrs = {**scene_attributes(), "landmark": W.FEATURE_SCALE["landmark"] * landmarks.attrs,
             "event": W.FEATURE_SCALE["event"] * events.attrs}
    cuis = cuisine_attributes()
    return World(
        preset=p, seed=seed, calendar=cal, shops=shops, users=users, km=km,
        retrieval=_retrieval(shops, district_km()),
        persona_hour_cdf=_persona_hour_cdf(users),
        **_persona_user_tables(users),
        where_cdf=_where_cdf(),
        leisure_cdf=_district_cdf(W.LEISURE_DISTRICT_WEIGHT),
        hotel_cdf=_district_cdf(W.HOTEL_DISTRICT_WEIGHT),
        scene_attrs=attrs,
        cuisine_centred=cuis - cuis.mean(0),
        landmarks=landmarks, events=events, vocab=vocab,
    )


# ---------------------------------------------------------------------------- calendar


def _sample_dates(n_days: int) -> list[dt.date]:
    """``n_days`` dates spread evenly over the year, always including every holiday's first day.

    Small worlds sample every few days of the year rather than compressing it, so dates,
    weekdays, seasons and holidays stay mutually consistent at every size.
    """
    start = dt.date(*W.START_DATE)
    year = 365
    offsets = set(int(o) for o in (np.arange(n_days) * year) // n_days)
    pinned = sorted({(_holiday_start(h) - start).days for h in W.HOLIDAYS})
    for o in pinned:
        if o not in offsets:
            free = sorted((abs(x - o), x) for x in offsets if x not in pinned)
            offsets.remove(free[0][1])
            offsets.add(o)
    return [start + dt.timedelta(days=o) for o in sorted(offsets)]


def _holiday_start(h: W.Holiday) -> dt.date:
    y0 = W.START_DATE[0]
    return dt.date(y0 if h.month >= W.START_DATE[1] else y0 + 1, h.month, h.day)


def _holiday_of(date: dt.date) -> W.Holiday | None:
    found = None
    for h in W.HOLIDAYS:  # later entries win (single days listed after the periods they fall in)
        if 0 <= (date - _holiday_start(h)).days < h.days:
            found = h
    return found


def _season_celsius(date: dt.date) -> float:
    """Typical daytime temperature: 2 °C in mid-January, 32 °C in late July."""
    peak = dt.date(date.year, 7, 20)
    return 17.0 + 15.0 * float(np.cos(2 * np.pi * (date - peak).days / 365.0))


def _weather_weights(date: dt.date, t: float) -> np.ndarray:
    """Unnormalised P(weather) of a day from its season (order of W.WEATHER; typhoon 0)."""
    summer = 5 <= date.month <= 9
    winter = date.month in (11, 12, 1, 2)
    w = {
        "sunny": 0.32, "cloudy": 0.2, "overcast": 0.12, "windy": 0.05 if summer else 0.08,
        "light rain": 0.12 if summer else 0.1, "heavy rain": 0.08 if summer else 0.03,
        "thunderstorm": 0.08 if summer else 0.005, "snow": 0.25 if t < 5 else 0.0,
        "haze": 0.08 if winter else 0.02, "heatwave": 0.3 if t >= 29 else 0.1 if t >= 27 else 0.0, "typhoon": 0.0,
    }
    return np.array([w[k] for k in W.WEATHER])


def build_calendar(p: Preset, rng: np.random.Generator) -> Calendar:
    """Dates, city-wide scene per day, the split, the launch of hotel delivery and request counts."""
    dates = _sample_dates(p.n_days)
    n = len(dates)
    bounds = np.round(np.cumsum(SPLIT_FRACS) * n).astype(int)
    split = np.searchsorted(bounds, np.arange(n), side="right").clip(0, 2)
    starts = (0, int(bounds[0]), int(bounds[1]))

    weather_names = tuple(W.WEATHER)
    season = np.array([_season_celsius(d) for d in dates])
    wprob = np.array([_weather_weights(d, t) for d, t in zip(dates, season)])
    wprob /= wprob.sum(1, keepdims=True)
    weather = (wprob.cumsum(1) > rng.random(n)[:, None]).argmax(1)
    _cover_train_weather(weather, wprob, split)

    holidays = [_holiday_of(d) for d in dates]
    late = {h.name for h, sp in zip(holidays, split) if h is not None and sp == 2}
    if not set(W.TEST_ONLY["holiday"]) <= late or late & {h.name for h, sp in zip(holidays, split) if h and sp < 2}:
        raise ValueError(f"{n} days put the test-only festivals outside the test period")
    test_days = np.flatnonzero((split == 2) & np.array([h is None for h in holidays]))
    typhoon, extreme = _schedule_test_events(test_days, rng)
    weather[typhoon] = _code(weather_names, "typhoon")
    weather[extreme] = _code(weather_names, "heatwave")

    celsius = _daily_celsius(season, weather, weather_names, rng)
    celsius[extreme] = 40.5 + 2.0 * rng.random(len(extreme))
    uppers = np.array([b[1] for b in W.TEMPERATURE_BANDS])
    temperature = np.searchsorted(uppers, celsius, side="right")

    weekday = np.array([d.weekday() for d in dates])
    public = np.array([h is not None and h.public for h in holidays])
    day_type = np.where(public, 2, np.where(weekday >= 5, 1, 0))
    holiday = np.array([0 if h is None else W.HOLIDAY_VALUES.index(h.name) for h in holidays])

    hotel_launch = starts[1] + int(np.ceil(0.6 * (starts[2] - starts[1])))
    hotel_share = np.where(np.arange(n) >= hotel_launch, HOTEL_SHARE, 0.0)
    demand = (np.where(day_type == 1, 1.15, 1.0) * np.where(public, 1.2, 1.0)
              * np.array([W.WEATHER_DEMAND.get(weather_names[w], 1.0) for w in weather])
              * (1.0 + 0.2 * np.arange(n) / n) * rng.lognormal(0.0, 0.08, n))
    n_requests = rng.poisson(p.n_requests * demand / demand.sum())
    return Calendar(dates, weekday, day_type, holiday, weather, temperature, celsius, split, n_requests,
                    hotel_share, starts)


def _cover_train_weather(weather: np.ndarray, wprob: np.ndarray, split: np.ndarray) -> None:
    """Make sure every non-test weather occurs in train (small worlds could miss snow or heatwaves)."""
    train = np.flatnonzero(split == 0)
    for w in range(wprob.shape[1]):
        if tuple(W.WEATHER)[w] == "typhoon" or (weather[train] == w).any():
            continue
        counts = np.bincount(weather[train], minlength=wprob.shape[1])
        spare = train[counts[weather[train]] > 1]
        weather[spare[np.argmax(wprob[spare, w])]] = w


def _schedule_test_events(test_days: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pick the test-only typhoon days and the extreme-heat days (those in the hot first half)."""
    n_test = len(test_days)
    typhoon = np.sort(rng.choice(test_days, size=max(1, round(0.06 * n_test)), replace=False))
    rest = np.setdiff1d(test_days, typhoon)
    early = rest[: max(1, len(rest) // 2)]
    extreme = np.sort(rng.choice(early, size=min(len(early), max(1, round(0.05 * n_test))), replace=False))
    return typhoon, extreme


def _daily_celsius(season: np.ndarray, weather: np.ndarray, names: tuple[str, ...],
                   rng: np.random.Generator) -> np.ndarray:
    """A day's temperature, consistent with its weather (snow below 0 °C, heatwaves 35-40 °C)."""
    t = season + rng.normal(0.0, 2.5, len(season))
    offset = {"light rain": -1.5, "heavy rain": -3.0, "thunderstorm": -2.0, "typhoon": -3.0}
    t += np.array([offset.get(names[w], 0.0) for w in weather])
    is_ = {k: weather == _code(names, k) for k in ("snow", "heatwave")}
    t = np.where(is_["snow"], np.minimum(t, -0.5 - 4.0 * rng.random(len(t))), t)
    t = np.where(is_["heatwave"], np.clip(np.maximum(t + 4.0, 35.5 + 3.0 * rng.random(len(t))), None, 39.5),
                 np.minimum(t, 34.5))
    return t


# ---------------------------------------------------------------------------- long tail: landmarks, events

# Which district kinds each location type occurs in (see _requests); a landmark serves the
# location types of its LandmarkType, so an office request is near an office tower, not a school.
LOCATION_DISTRICTS: dict[str, tuple[str, ...]] = {
    "home": ("residential", "suburb", "nightlife"), "office": ("office",), "campus": ("university",),
    "entertainment venue": ("nightlife",), "friend's home": ("residential", "suburb"),
    "hotel": ("office", "nightlife", "suburb"),
}


@dataclass
class Landmarks:
    """Named landmarks: the nearest one to a request's delivery address is its ``landmark`` value."""

    name: list[str]
    kind: np.ndarray  # index into W.LANDMARK_TYPES
    district: np.ndarray
    attrs: np.ndarray  # landmarks × DIMS, type vector + noise (unscaled)
    weight: np.ndarray  # Zipf popularity
    open_day: np.ndarray
    pair_segment: np.ndarray  # (segment, landmark) pairs, by segment: segment = district·locations + location
    pair_landmark: np.ndarray  # a landmark serves its location types in its district

    def day_cdf(self, day: int) -> np.ndarray:
        """Per-segment CDFs over the pairs, ∝ popularity × ramp-up on ``day``; segment s spans (s, s+1]."""
        ramp = np.clip((day - self.open_day + 1) / np.where(self.open_day > 0, RAMP_DAYS, 1), 0.0, 1.0)
        w = (self.weight * ramp)[self.pair_landmark]
        n_seg = len(W.DISTRICTS) * len(W.LOCATION_TYPES)
        mass = np.bincount(self.pair_segment, weights=w, minlength=n_seg)
        before = np.concatenate([[0.0], np.cumsum(mass)[:-1]])
        c = (np.cumsum(w) - before[self.pair_segment]) / np.maximum(mass, 1e-300)[self.pair_segment]
        last = np.r_[self.pair_segment[1:] != self.pair_segment[:-1], True]
        c[last] = 1.0
        return self.pair_segment + np.minimum(c, 1.0)

    def draw(self, cdf: np.ndarray, district: np.ndarray, location: np.ndarray, u: np.ndarray) -> np.ndarray:
        seg = district * len(W.LOCATION_TYPES) + location
        return self.pair_landmark[np.searchsorted(cdf, seg + u, side="right")]


def _zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Popularity r^-s for a random assignment of ranks 1..n."""
    return (1.0 + rng.permutation(n)) ** -s


def _fill(template: str, rng: np.random.Generator, **given: str) -> str:
    pick = {
        "place": _choose(rng, W.LANDMARK_PLACES), "brand": "",
        "side": _choose(rng, W.LANDMARK_SIDES), "exit": _choose(rng, W.LANDMARK_EXITS),
        "n": str(int(rng.integers(1, 10))), "artist": _choose(rng, W.EVENT_ARTISTS),
        "game": _choose(rng, W.EVENT_GAMES), "industry": _choose(rng, W.EVENT_INDUSTRIES),
        "food": _choose(rng, W.EVENT_FOODS),
    }
    teams = rng.permutation(len(W.EVENT_TEAMS))[:2]
    pick.update(team=W.EVENT_TEAMS[teams[0]], team2=W.EVENT_TEAMS[teams[1]])
    pick.update(given)
    return template.format(**pick)


def _unique(name: str, taken: set[str], suffix: str) -> str:
    """A unique name: a repeated one gets ``(suffix)`` (its district or date), then a number."""
    if name in taken and suffix not in name:
        name = f"{name} ({suffix})"
    base, k = name, 2
    while name in taken:
        name, k = f"{base} No. {k}", k + 1
    taken.add(name)
    return name


def build_landmarks(p: Preset, cal: Calendar, rng: np.random.Generator) -> Landmarks:
    """Landmarks of the city: every occurring (district, location type) gets one from day 0, the rest
    drawn by type weight; Zipf popularity; most exist from day 0, some open in train, valid or test."""
    types = W.LANDMARK_TYPES
    kinds, dists = [], []
    for d, district in enumerate(W.DISTRICTS):  # anchors
        for loc, where in LOCATION_DISTRICTS.items():
            if district.kind not in where or any(loc in types[k].locations for k, dd in zip(kinds, dists) if dd == d):
                continue
            ok = [k for k, t in enumerate(types) if district.kind in t.districts and loc in t.locations]
            w = np.array([types[k].weight for k in ok])
            kinds.append(ok[int(rng.choice(len(ok), p=w / w.sum()))])
            dists.append(d)
    n_anchor = len(kinds)
    tw = np.array([t.weight for t in types])
    for _ in range(max(0, p.n_landmarks - n_anchor)):
        k = int(rng.choice(len(types), p=tw / tw.sum()))
        ok = [d for d, x in enumerate(W.DISTRICTS) if x.kind in types[k].districts]
        kinds.append(k)
        dists.append(ok[int(rng.integers(len(ok)))])
    kind, district = np.array(kinds), np.array(dists)
    n = len(kind)

    n_days = len(cal.date)
    train_end, test_start = cal.split_start[1], cal.split_start[2]
    phase = np.minimum(np.searchsorted(np.cumsum(LANDMARK_OPEN), rng.random(n), side="right"), 4)
    phase[:n_anchor] = 0
    late = max(1, round((1 - LATE_TRAIN) * train_end))
    lo = np.array([0, 1, late, train_end, test_start])[phase]
    hi = np.array([1, late, train_end, test_start, test_start + max(1, int(0.7 * (n_days - test_start)))])[phase]
    open_day = (lo + rng.random(n) * (hi - lo)).astype(np.int64)

    weight = _zipf_weights(n, W.LANDMARK_ZIPF_S, rng)
    new = open_day > 0
    lo_rank, hi_rank = (max(1, int(f * n)) for f in NEW_LANDMARK_RANKS)
    weight[new] = rng.integers(lo_rank, hi_rank + 1, int(new.sum())).astype(np.float64) ** -W.LANDMARK_ZIPF_S
    attrs = np.array([types[k].attrs for k in kind]) + rng.normal(0.0, W.LONG_TAIL_NOISE, (n, len(W.DIMS)))
    taken: set[str] = set()
    names = []
    for k, d in zip(kind, district):
        dname = W.DISTRICTS[d].name
        place = dname if rng.random() < 0.4 and "University" not in dname else _choose(rng, W.LANDMARK_PLACES)
        brand = _choose(rng, W.LANDMARK_BRANDS.get(types[k].name, ("City",)))
        names.append(_unique(_fill(_choose(rng, types[k].names), rng, place=place, brand=brand), taken, dname))

    n_loc = len(W.LOCATION_TYPES)
    pairs = {(d * n_loc + W.LOCATION_TYPES.index(loc), j) for j, (k, d) in enumerate(zip(kind, district))
             for loc in types[k].locations}
    covered = {seg for seg, _ in pairs}
    for seg in range(len(W.DISTRICTS) * n_loc):  # a pair that never occurs: any landmark of the district
        if seg not in covered:
            pairs |= {(seg, j) for j in np.flatnonzero(district == seg // n_loc)}
    pair = np.array(sorted(pairs), dtype=np.int64)
    return Landmarks(names, kind, district, attrs, weight, open_day, pair[:, 0], pair[:, 1])


@dataclass
class Events:
    """Named local events; code 0 is "none". An event is on in its district (and, weaker, nearby
    districts) on its days and hours, reaching a Zipf-distributed share of the requests there."""

    name: list[str]
    kind: np.ndarray  # index into W.EVENT_TYPES, -1 for none
    district: np.ndarray
    attrs: np.ndarray  # (1 + events) × DIMS, row 0 zero (unscaled)
    reach: np.ndarray
    hours: np.ndarray  # (1 + events) × 2: first hour, last hour (may exceed 23: past midnight)
    first_day: np.ndarray  # first active day (-1 for none)
    by_day: list[np.ndarray]  # per day: active events, most popular first


def build_events(p: Preset, cal: Calendar, landmarks: Landmarks, rng: np.random.Generator) -> Events:
    types = W.EVENT_TYPES
    n_days = len(cal.date)
    months = np.array([d.month for d in cal.date])
    n_rec = max(2, round(RECURRING_SHARE * p.n_events))
    names, kinds, dists, hours, active = ["none"], [-1], [0], [(0, 0)], [np.zeros(0, np.int64)]
    taken = {"none"}
    landmark_type = np.array([W.LANDMARK_TYPES[x].name for x in landmarks.kind])
    for j in range(p.n_events):
        recurring = j < n_rec
        pool = [k for k, t in enumerate(types) if t.recurring == recurring]
        w = np.array([types[k].weight for k in pool])
        for _attempt in range(50):
            k = pool[int(rng.choice(len(pool), p=w / w.sum()))]
            t = types[k]
            ok = [d for d, x in enumerate(W.DISTRICTS) if x.kind in t.districts]
            d = ok[int(rng.integers(len(ok)))]
            if recurring:  # half the series run from early on, half start late in train (seen a few times)
                train_end = cal.split_start[1]
                start = (int(rng.integers(0, max(1, train_end // 3))) if j % 2 == 0
                         else int(rng.integers(int((1 - LATE_TRAIN) * train_end), train_end)))
                days = np.flatnonzero((np.arange(n_days) >= start) & (cal.weekday >= 5)
                                      & (rng.random(n_days) < RECURRING_DAY_P))
            else:
                allowed = np.flatnonzero(np.isin(months, t.months)) if t.months else np.arange(n_days)
                if not len(allowed):
                    continue
                start = int(allowed[int(rng.integers(len(allowed)))])
                days = np.arange(start, min(n_days, start + int(rng.integers(t.days[0], t.days[1] + 1))))
            venues = np.flatnonzero((landmarks.district == d) & (landmarks.open_day <= start)
                                    & np.isin(landmark_type, t.venues))
            if len(venues):
                venue = _venue_name(landmarks.name[int(venues[int(rng.integers(len(venues)))])])
            elif "" in t.venues:
                venue = W.DISTRICTS[d].name
            else:
                continue
            dname = W.DISTRICTS[d].name
            uni = dname if "University" in dname else f"{dname} University"
            name = _fill(_choose(rng, t.names), rng, venue=venue, district=dname, uni=uni)
            names.append(_unique(name, taken, cal.date[start].strftime("%d %b").lstrip("0")))
            kinds.append(k)
            dists.append(d)
            hours.append(t.hours)
            active.append(days)
            break
    n = len(names)
    kind = np.array(kinds)
    attrs = np.zeros((n, len(W.DIMS)))
    attrs[1:] = np.array([types[k].attrs for k in kind[1:]]) + rng.normal(0.0, W.LONG_TAIL_NOISE, (n - 1, len(W.DIMS)))
    reach = np.zeros(n)
    reach[1:] = np.clip(EVENT_REACH * _zipf_weights(n - 1, W.EVENT_ZIPF_S, rng), EVENT_REACH_MIN, None)
    rec = np.flatnonzero([k >= 0 and types[k].recurring for k in kind])  # the series are the head
    reach[rec] = np.sort(reach[1:])[::-1][: len(rec)]
    by_day = [[] for _ in range(n_days)]
    for e in np.argsort(-reach, kind="stable"):
        for day in active[e]:
            by_day[day].append(e)
    first = np.array([int(a[0]) if len(a) else -1 for a in active])
    return Events(names, kind, np.array(dists), attrs, reach, np.array(hours), first,
                  [np.array(x, dtype=np.int64) for x in by_day])


def _venue_name(landmark: str) -> str:
    """"north gate of Riverside Stadium, stand B" → "Riverside Stadium" (where an event takes place)."""
    for side in W.LANDMARK_SIDES:
        prefix = f"{side} gate of "
        if landmark.lower().startswith(prefix):
            landmark = landmark[len(prefix):]
    return landmark.split(",")[0]


def request_events(world: World, day: int, hour: np.ndarray, district: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Event code of each request (0 = none): the most popular event on there that reaches it."""
    ev = world.events
    out = np.zeros(len(hour), dtype=np.int64)
    near = district_km() <= EVENT_NEAR_KM
    for e in world.events.by_day[day]:
        h0, h1 = ev.hours[e]
        d = ev.district[e]
        share = np.where(district == d, 1.0, np.where(near[d, district], EVENT_NEAR_FACTOR, 0.0))
        on = ((hour - h0) % 24 <= h1 - h0) & (out == 0) & (rng.random(len(hour)) < ev.reach[e] * share)
        out[on] = e
    return out


# ---------------------------------------------------------------------------- shops


def build_shops(p: Preset, cal: Calendar, rng: np.random.Generator) -> Shops:
    """Cuisine, district, price, quality, hours and opening day of every shop, then its texts."""
    n = p.n_shops
    cw = np.array([c.weight for c in W.CUISINES])
    cuisine = rng.choice(len(W.CUISINES), size=n, p=cw / cw.sum())
    dw = np.array([W.SHOP_DISTRICT_WEIGHT[d.kind] for d in W.DISTRICTS])
    district = rng.choice(len(W.DISTRICTS), size=n, p=dw / dw.sum())
    price_p = np.array([c.price_p for c in W.CUISINES])[cuisine]
    price_level = 1 + (price_p.cumsum(1) > rng.random(n)[:, None]).argmax(1)
    quality = rng.normal(0.0, 1.0, n).astype(np.float32)
    rating = np.round(np.clip(4.3 + 0.35 * quality + rng.normal(0.0, 0.2, n), 2.8, 5.0), 1)

    hours = np.array([c.hours for c in W.CUISINES])[cuisine]
    open_hour = hours[:, 0] + rng.integers(-1, 2, n)
    close_hour = hours[:, 1] + rng.integers(-1, 2, n)
    late = (close_hour <= 24) & (rng.random(n) < 0.12)  # some day shops stay open after midnight
    close_hour = np.where(late, 25 + rng.integers(0, 3, n), close_hour)
    open_hour = np.clip(open_hour, 5, 18)
    close_hour = np.clip(close_hour, open_hour + 6, open_hour + 23)

    open_day = _open_days(n, cal, rng)
    texts = [shop_texts(int(c), int(pl), int(o), int(cl), rng)
             for c, pl, o, cl in zip(cuisine, price_level, open_hour, close_hour)]
    names = _unique_names([t[0] for t in texts], district)
    return Shops(cuisine, district, price_level, quality, rating, open_hour, close_hour, open_day,
                 names, [t[1] for t in texts], [t[2] for t in texts])


def _open_days(n: int, cal: Calendar, rng: np.random.Generator) -> np.ndarray:
    """Most shops exist from day 0; a few open during train; ≈5% open during the test period."""
    n_days = len(cal.date)
    train_end, test_start = cal.split_start[1], cal.split_start[2]
    open_day = np.where(rng.random(n) < 0.06, rng.integers(1, train_end, n), 0)
    n_new = max(2, round(NEW_SHOP_SHARE * n))
    new = rng.choice(n, size=n_new, replace=False)
    last = test_start + max(1, int(0.6 * (n_days - test_start)))
    open_day[new] = rng.integers(test_start, last, n_new)
    return open_day


def _choose(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def shop_texts(c: int, price_level: int, open_hour: int, close_hour: int,
               rng: np.random.Generator) -> tuple[str, str, str]:
    """Name, description and menu of one shop; wording varies, semantic cues follow its attributes."""
    cu = W.CUISINES[c]
    name = _choose(rng, cu.names).format(surname=_choose(rng, W.SURNAMES), adj=_choose(rng, W.ADJECTIVES),
                                         place=_choose(rng, cu.places))
    phrases = [cu.phrases[i] for i in rng.permutation(len(cu.phrases))[: 1 + int(rng.integers(1, 3))]]
    opening = _choose(rng, W.OPENINGS).format(name=name, year=2000 + int(rng.integers(0, 23)))
    sentences = [_sentence(_cues(cu, open_hour, close_hour, rng)),
                 _sentence([_choose(rng, W.PRICE_PHRASES[price_level])]), _hours_sentence(open_hour, close_hour, rng)]
    sentences = [s for s in sentences if s]
    body = " ".join(sentences[i] for i in rng.permutation(len(sentences)))
    description = f"{opening} {', '.join(phrases)}. {body}".strip()

    k = int(rng.integers(4, min(7, len(cu.dishes)) + 1))
    picked = np.sort(rng.choice(len(cu.dishes), size=k, replace=False))
    factor = 0.75 + 0.15 * price_level
    items = []
    for i in picked:
        dish, base = cu.dishes[i]
        price = base * factor * rng.uniform(0.9, 1.1)
        price = round(price * 2) / 2 if price < 10 else round(price)
        items.append(f"{dish} ¥{price:g}")
    return name, description, "; ".join(items)


def _cues(cu: W.Cuisine, open_hour: int, close_hour: int, rng: np.random.Generator) -> list[str]:
    """Cue phrases ("warming", "iced", "family-size"), more likely the stronger the attribute."""
    strength = np.clip(1.2 * (np.array(cu.attrs) - 0.35), 0.0, 0.9)
    strength[W.DIMS.index("late_night")] = 0.5 if close_hour >= 25 else 0.0
    strength[W.DIMS.index("breakfast")] *= open_hour <= 8
    picked = np.flatnonzero(rng.random(len(W.DIMS)) < strength)
    picked = picked[rng.permutation(len(picked))][:3]
    return [_choose(rng, W.CUE_PHRASES[W.DIMS[k]]) for k in picked]


def _hours_sentence(open_hour: int, close_hour: int, rng: np.random.Generator) -> str:
    if close_hour >= 25:
        return f"Open till {close_hour - 24}am."
    if open_hour <= 7:
        return f"Open from {open_hour}am."
    return f"Open {open_hour}:00-{close_hour}:00." if rng.random() < 0.5 else ""


def _sentence(parts: list[str]) -> str:
    if not parts:
        return ""
    text = ", ".join(parts)
    return text[0].upper() + text[1:] + "."


def _unique_names(names: list[str], district: np.ndarray) -> list[str]:
    """Shop names are unique: a repeated name becomes a district branch, then gets a number."""
    seen: set[str] = set()
    out = []
    for name, d in zip(names, district):
        if name in seen:
            name = f"{name} ({W.DISTRICTS[d].name})"
        k = 2
        base = name
        while name in seen:
            name, k = f"{base} No. {k}", k + 1
        seen.add(name)
        out.append(name)
    return out


# ---------------------------------------------------------------------------- users


def _districts_of_kind(weights: dict[str, float]) -> np.ndarray:
    """P(district) from weights per district type (spread evenly over districts of a type)."""
    kinds = [d.kind for d in W.DISTRICTS]
    w = np.array([weights.get(k, 0.0) / kinds.count(k) for k in kinds])
    return w / w.sum()


def _district_cdf(weights: dict[str, float]) -> np.ndarray:
    return np.cumsum(_districts_of_kind(weights))


def build_users(p: Preset, rng: np.random.Generator) -> Users:
    """Persona, home/work districts, price sensitivity, activity, hidden taste and profile text."""
    n = p.n_users
    shares = np.array([q.share for q in W.PERSONAS])
    persona = rng.choice(len(W.PERSONAS), size=n, p=shares / shares.sum())
    home = np.zeros(n, dtype=np.int64)
    work = np.zeros(n, dtype=np.int64)
    ps = np.zeros(n)
    offsets = np.zeros((len(W.PERSONAS), len(W.CUISINES)))
    cuisine_names = [c.name for c in W.CUISINES]
    for k, q in enumerate(W.PERSONAS):
        idx = np.flatnonzero(persona == k)
        home[idx] = rng.choice(len(W.DISTRICTS), size=len(idx), p=_districts_of_kind(q.home))
        same = q.work.get("same", 0.0) > 0
        work[idx] = home[idx] if same else rng.choice(len(W.DISTRICTS), size=len(idx), p=_districts_of_kind(q.work))
        ps[idx] = rng.beta(*q.price_beta, size=len(idx))
        for c, v in q.taste.items():
            offsets[k, cuisine_names.index(c)] = v
    taste = offsets[persona] + rng.normal(0.0, TASTE_SD, (n, len(W.CUISINES)))
    activity = rng.lognormal(0.0, 0.6, n)
    profile = user_profiles(persona, home, work, ps, taste, rng)
    return Users(persona, home, work, np.round(ps, 3), activity, taste.astype(np.float32), profile)


def user_profiles(persona: np.ndarray, home: np.ndarray, work: np.ndarray, ps: np.ndarray,
                  taste: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Short profile texts; they name favourite cuisines only noisily (taste stays hidden)."""
    n = len(persona)
    lo = np.array([q.age[0] for q in W.PERSONAS])[persona]
    hi = np.array([q.age[1] for q in W.PERSONAS])[persona]
    age = lo + (rng.random(n) * (hi - lo + 1)).astype(int)
    top = np.argsort(-(taste + rng.normal(0.0, 0.4, taste.shape)), axis=1)[:, :2]
    mention = rng.random(n)
    out = []
    for i in range(n):
        q = W.PERSONAS[persona[i]]
        text = f"{age[i]}-year-old {q.noun}, lives in {W.DISTRICTS[home[i]].name}"
        if q.work.get("same"):
            text += ", studies there."
        elif q.name == "freelancer":
            text += f", sometimes works from a co-working space in {W.DISTRICTS[work[i]].name}."
        else:
            text += f", works in {W.DISTRICTS[work[i]].name}."
        a, b = W.CUISINES[top[i, 0]].name, W.CUISINES[top[i, 1]].name
        if mention[i] < 0.55:
            text += f" Often orders {a} and {b}."
        elif mention[i] < 0.8:
            text += f" Likes {a}."
        text += (" Watches prices closely." if ps[i] > 0.7 else " Happy to pay for quality." if ps[i] < 0.3
                 else " Looks for good value.")
        out.append(text)
    return out


def _persona_hour_cdf(users: Users) -> np.ndarray:
    """P(persona, hour) for workdays and days off, flattened as persona·24 + hour."""
    slot = np.array(W.HOUR_SLOT)
    out = []
    for base in (W.HOUR_WEIGHT_WORKDAY, W.HOUR_WEIGHT_DAYOFF):
        rows = []
        for k, q in enumerate(W.PERSONAS):
            h = np.array(base) * np.where(slot == 4, q.night, 1.0) * np.where(slot == 0, q.morning, 1.0)
            rows.append(users.activity[users.persona == k].sum() * h / h.sum())
        joint = np.concatenate(rows)
        out.append(np.cumsum(joint) / joint.sum())
    return np.stack(out)


def _persona_user_tables(users: Users) -> dict[str, np.ndarray]:
    """Users grouped by persona with activity CDFs (persona p's CDF offset by p) for vectorised draws."""
    order = np.argsort(users.persona, kind="stable")
    cdfs, ends = [], []
    for k in range(len(W.PERSONAS)):
        a = users.activity[order][users.persona[order] == k]
        cdfs.append(k + (np.cumsum(a) / a.sum() if len(a) else np.zeros(0)))
        ends.append(sum(len(x) for x in cdfs))
    return {"persona_users": order, "persona_user_cdf": np.concatenate(cdfs), "persona_end": np.array(ends)}


def _where_cdf() -> np.ndarray:
    table = np.array([[W.WHERE_P[q.name][wd] for wd in (True, False)] for q in W.PERSONAS])
    return np.cumsum(table / table.sum(-1, keepdims=True), -1)


@dataclass
class AliasTables:
    """Many discrete distributions (segments) stored back to back, each drawn in O(1) (Walker's alias method).

    ``searchsorted`` on a CDF costs a cache-missing binary search per draw; the alias method
    costs two look-ups, which is what lets the large world generate half a million rows a second.
    """

    start: np.ndarray  # first slot of each segment
    size: np.ndarray  # outcomes of each segment
    prob: np.ndarray  # P(keep the slot's own outcome)
    alias: np.ndarray  # the slot's other outcome (segment-local)

    @classmethod
    def build(cls, weights: list[np.ndarray]) -> AliasTables:
        sizes = np.array([len(w) for w in weights])
        start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        prob = np.ones(int(sizes.sum()))
        alias = np.zeros(int(sizes.sum()), dtype=np.int64)
        for s0, w in zip(start, weights):
            if len(w) and w.sum() > 0:
                prob[s0: s0 + len(w)], alias[s0: s0 + len(w)] = _vose(np.asarray(w, dtype=np.float64))
        return cls(start, sizes, prob, alias)

    def draw(self, segment: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Segment-local outcomes for uniforms ``u`` (the fractional part doubles as the coin)."""
        x = u * self.size[segment]
        k = x.astype(np.int64)
        slot = self.start[segment] + k
        return np.where(x - k < self.prob[slot], k, self.alias[slot])


def _vose(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(w)
    scaled = w * n / w.sum()
    prob, alias = np.ones(n), np.arange(n)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return prob, alias


@dataclass
class Retrieval:
    """Candidate retrieval: P(shop district | request district, hour), then P(shop | its district, hour).

    Weights ∝ exp(−km / RETRIEVAL_KM) · popularity · (1 if open else CLOSED_RETRIEVAL); factorising
    by district keeps the tables small (districts·24 segments of districts, and of shops).
    """

    districts: AliasTables  # segment: request district·24 + hour
    shops: AliasTables  # segment: shop district·24 + hour
    shop_order: np.ndarray  # shop ids sorted by district
    district_start: np.ndarray  # start of each district in shop_order

    def draw(self, district: np.ndarray, hour: np.ndarray, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
        j = self.districts.draw((district * 24 + hour)[:, None], u1)
        local = self.shops.draw(j * 24 + hour[:, None], u2)
        return self.shop_order[self.district_start[j] + local]


def _retrieval(shops: Shops, km: np.ndarray) -> Retrieval:
    n_d = len(W.DISTRICTS)
    open_h = np.stack([shops.open_at(h) for h in range(24)], 1)  # shops × 24
    w = np.exp(0.5 * shops.quality.astype(np.float64))[:, None] * np.where(open_h, 1.0, CLOSED_RETRIEVAL)
    order = np.argsort(shops.district, kind="stable")
    counts = np.bincount(shops.district, minlength=n_d)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mass = np.zeros((n_d, 24))  # shop district × hour
    np.add.at(mass, shops.district, w)
    near = np.exp(-km / RETRIEVAL_KM)  # request district × shop district
    districts = AliasTables.build([near[d] * mass[:, h] for d in range(n_d) for h in range(24)])
    shop_w = [w[order[start[j]: start[j] + counts[j]], h] for j in range(n_d) for h in range(24)]
    return Retrieval(districts, AliasTables.build(shop_w), order, start)


# ---------------------------------------------------------------------------- one day of traffic


@dataclass
class DayBatch:
    """One day of impressions: request-level arrays (length R) and row-level arrays (length N)."""

    day: int
    ts: np.ndarray  # R
    user: np.ndarray  # R
    scene: dict[str, np.ndarray]  # feature -> codes (R)
    need: np.ndarray  # R × DIMS, summed scene attributes
    req: np.ndarray  # N: index of the row's request
    shop: np.ndarray  # N
    position: np.ndarray  # N
    label: np.ndarray  # N
    logit: np.ndarray  # N, the exact click logit
    affinity: np.ndarray  # N, the scene–cuisine part of the logit


def simulate_day(world: World, day: int) -> DayBatch:
    """Requests, shown candidates and clicks of one day, from the day's own random generator."""
    rng = _rng(world.seed, 3, day)
    cal = world.calendar
    ts, user, hour, district, location = _requests(world, day, rng)
    n_req = len(ts)
    dtype_of = np.array([W.DISTRICT_TYPES.index(d.kind) for d in W.DISTRICTS])
    scene = {
        "time_slot": np.array(W.HOUR_SLOT)[hour], "hour": hour,
        "weekday": np.full(n_req, cal.weekday[day]), "day_type": np.full(n_req, cal.day_type[day]),
        "holiday": np.full(n_req, cal.holiday[day]), "weather": np.full(n_req, cal.weather[day]),
        "temperature": np.full(n_req, cal.temperature[day]),
        "district": district, "district_type": dtype_of[district], "location_type": location,
    }
    tail_rng = _rng(world.seed, 6, day)  # the long-tail draws have their own stream
    scene["landmark"] = world.landmarks.draw(world.landmarks.day_cdf(day), district, location, tail_rng.random(n_req))
    scene["event"] = request_events(world, day, hour, district, tail_rng)
    need = scene_need(world, scene)
    req, shop, position = _feed(world, day, user, hour, district, rng)
    logit, affinity = click_logit(world, user[req], shop, position, district[req], hour[req], need[req],
                                  rng.normal(0.0, INTENT_SD, n_req)[req])
    label = (rng.random(len(req)) < _sigmoid(logit)).astype(np.int32)
    return DayBatch(day, ts, user, scene, need, req, shop, position, label, logit, affinity)


def _requests(world: World, day: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Who requests when and from where: (ts, user, hour, district, location_type), sorted by time."""
    cal, users = world.calendar, world.users
    n = int(cal.n_requests[day])
    workday = cal.day_type[day] == 0
    flat = np.searchsorted(world.persona_hour_cdf[0 if workday else 1], rng.random(n), side="right")
    persona, hour = np.divmod(np.minimum(flat, len(W.PERSONAS) * 24 - 1), 24)
    pick = np.searchsorted(world.persona_user_cdf, persona + rng.random(n), side="right")
    pick = np.minimum(pick, world.persona_end[persona] - 1)
    user = world.persona_users[pick]

    slot = np.array(W.HOUR_SLOT)[hour]
    where = (world.where_cdf[persona, 0 if workday else 1, slot] < rng.random(n)[:, None]).sum(1)
    leisure = np.searchsorted(world.leisure_cdf, rng.random(n) * world.leisure_cdf[-1], side="right")
    district = np.select([where == 0, where == 1], [users.home[user], users.work[user]], leisure)
    kind = np.array([d.kind for d in W.DISTRICTS])[district]
    loc = W.LOCATION_TYPES.index
    location = np.select(
        [where == 0, where == 1, kind == "nightlife"],
        [np.where(kind == "university", loc("campus"), loc("home")),
         np.where(kind == "university", loc("campus"), loc("office")), loc("entertainment venue")],
        loc("friend's home"))
    hotel = rng.random(n) < cal.hotel_share[day]
    hotel_district = np.searchsorted(world.hotel_cdf, rng.random(n) * world.hotel_cdf[-1], side="right")
    district = np.where(hotel, hotel_district, district)
    location = np.where(hotel, loc("hotel"), location)

    midnight = int(dt.datetime(*cal.date[day].timetuple()[:3], tzinfo=dt.timezone.utc).timestamp())
    ts = midnight + hour * 3600 + rng.integers(0, 3600, n)
    order = np.argsort(ts, kind="stable")
    return ts[order], user[order], hour[order], district[order], location[order]


def _feed(world: World, day: int, user: np.ndarray, hour: np.ndarray, district: np.ndarray,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates per request, ordered by a noisy production ranker: (request index, shop, position)."""
    shops = world.shops
    shape = (len(user), DRAWS)
    cand = np.sort(world.retrieval.draw(district, hour, rng.random(shape), rng.random(shape)), axis=1)
    ok = np.ones(cand.shape, dtype=bool)
    ok[:, 1:] = cand[:, 1:] != cand[:, :-1]
    ok &= shops.open_day[cand] <= day

    # the production ranker knows quality, distance and (noisily) taste, but not the scene's meaning
    taste = world.users.taste[user[:, None], shops.cuisine[cand]]
    score = (0.6 * shops.quality[cand] + 0.5 * taste + DIST_W * world.km[district[:, None], cand]
             + 1.3 * rng.standard_normal(cand.shape, dtype=np.float32))
    score = np.where(ok, score, -np.inf)
    top = np.argsort(-score, axis=1, kind="stable")[:, :K_MAX]
    shown = np.take_along_axis(cand, top, 1)
    k = rng.integers(K_MIN, K_MAX + 1, len(user))
    visible = (np.arange(K_MAX)[None, :] < k[:, None]) & np.isfinite(np.take_along_axis(score, top, 1))
    req, position = np.nonzero(visible)
    return req, shown[req, position], position


def scene_need(world: World, scene: dict[str, np.ndarray], attrs: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Summed hidden attributes of a request's scene values (requests × DIMS)."""
    attrs = world.scene_attrs if attrs is None else attrs
    return sum(attrs[f][scene[f]] for f in SCENE_NAMES)


def click_logit(world: World, user: np.ndarray, shop: np.ndarray, position: np.ndarray, district: np.ndarray,
                hour: np.ndarray, need: np.ndarray, intent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hidden click model (see docs/world.md): returns (logit, scene–cuisine affinity part)."""
    s, u = world.shops, world.users
    c = s.cuisine[shop]
    affinity = BETA * np.einsum("nd,nd->n", need, world.cuisine_centred[c])
    closed = ~((hour - s.open_hour[shop]) % 24 < (s.close_hour[shop] - s.open_hour[shop]))
    price = -(PRICE_W * u.price_sensitivity[user] - 0.3) * (s.price_level[shop] - 1) / 3.0
    logit = (B0 + intent + u.taste[user, c] + Q_W * s.quality[shop] + price + DIST_W * world.km[district, shop]
             + POS_W * np.log1p(position) + CLOSED_LOGIT * closed + affinity)
    return logit, affinity


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def iter_days(world: World) -> Iterator[DayBatch]:
    for day in range(len(world.calendar.date)):
        yield simulate_day(world, day)


# ---------------------------------------------------------------------------- writing


class ImpressionWriter:
    """Streams day batches into impressions.parquet, marks unseen scenes, and keeps statistics.

    Train days come first, so by the first valid day every value seen in train is known and
    ``unseen_scene`` is exact. The same pass keeps streaming AUC histograms, on the test rows and
    their slices (``SLICES``: unseen / rare / sparse / frequent by the row's rarest value), of the
    exact click logit (the oracle), of the logit an ID model could at best know (each value's
    attributes shrunk towards its feature's train average by its train rows, see ``ID_PRIOR_ROWS``;
    an unseen value is the average) and of the logit without the scene affinity.
    """

    def __init__(self, world: World, path: Path):
        self.world = world
        self.vocab = scene_vocab(world)
        self.index_type = {f: pa.int8() if len(v) < 128 else pa.int16() for f, v in self.vocab.items()}
        self.table = impressions_table(SCENE_FEATURES)
        self.schema = _impressions_schema(self.table, self.index_type)
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd", use_dictionary=["split", *STR_SCENE],
                                       write_statistics=["request_id", "ts", "day", "split"])
        # Parquet encoding releases the GIL: one background thread compresses a row group while the
        # next days are simulated (at most two chunks in memory; row groups stay in order).
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.writing: Future | None = None
        self.seen = {f: np.zeros(len(v), dtype=bool) for f, v in self.vocab.items()}
        self.train_count = {f: np.zeros(len(v), dtype=np.int64) for f, v in self.vocab.items()}
        self.by_split = {s: {"rows": 0, "clicks": 0, "unseen_rows": 0, "requests": 0} for s in SPLITS}
        self.values_by_split = {s: {f: np.zeros(len(v), dtype=bool) for f, v in self.vocab.items()} for s in SPLITS}
        self.auc_hist = {f"{k}_{part}": np.zeros((AUC_BINS, 2), dtype=np.int64)
                         for k in ("oracle", "id", "no_scene") for part in ("test", *SLICES)}
        self.slice_rows = {part: 0 for part in SLICES}
        self.id_attrs: dict[str, np.ndarray] | None = None  # fixed once train is over
        self.pending: list[dict[str, np.ndarray]] = []
        self.pending_rows = 0
        self.next_request = 0
        self.rows = 0

    def add(self, b: DayBatch) -> None:
        split = int(self.world.calendar.split[b.day])
        if split == 0:
            for f in SCENE_NAMES:
                self.seen[f][b.scene[f]] = True
                self.train_count[f] += np.bincount(b.scene[f][b.req], minlength=len(self.vocab[f]))
        unseen_feat = {f: ~self.seen[f][b.scene[f]] for f in SCENE_NAMES}
        unseen_req = np.logical_or.reduce(list(unseen_feat.values()))
        unseen = unseen_req[b.req]
        self._stats(b, split, unseen)

        n = len(b.req)
        cols = {
            "request_id": (self.next_request + b.req).astype(np.int64),
            "ts": b.ts[b.req].astype(np.int64),
            "day": np.full(n, b.day, dtype=np.int32),
            "user_id": b.user[b.req].astype(np.int32),
            "shop_id": b.shop.astype(np.int32),
            "position": b.position.astype(np.int32),
            "label": b.label,
            "split": np.full(n, split, dtype=np.int8),
            "unseen_scene": unseen,
            **{f: b.scene[f][b.req].astype(np.int32 if f == "hour" else self.index_type[f].to_pandas_dtype())
               for f in SCENE_NAMES},
        }
        self.next_request += len(b.ts)
        self.pending.append(cols)
        self.pending_rows += n
        if self.pending_rows >= self.world.preset.chunk_rows:
            self.flush()

    def _stats(self, b: DayBatch, split: int, unseen: np.ndarray) -> None:
        name = SPLITS[split]
        st = self.by_split[name]
        st["rows"] += len(b.req)
        st["clicks"] += int(b.label.sum())
        st["unseen_rows"] += int(unseen.sum())
        st["requests"] += len(b.ts)
        for f in SCENE_NAMES:
            self.values_by_split[name][f][b.scene[f]] = True
        if name != "test":
            return
        rarest = np.min([self.train_count[f][b.scene[f]] for f in SCENE_NAMES], axis=0)[b.req]
        masks = {"test": np.ones(len(b.req), dtype=bool), "unseen": unseen, "rare": ~unseen & (rarest < RARE_ROWS),
                 "sparse": ~unseen & (rarest >= RARE_ROWS) & (rarest < SPARSE_ROWS), "frequent": rarest >= SPARSE_ROWS}
        logits = {"oracle": b.logit, "no_scene": b.logit - b.affinity,
                  "id": b.logit - b.affinity + self._id_affinity(b)}
        for part, m in masks.items():
            if part != "test":
                self.slice_rows[part] += int(m.sum())
            if m.any():
                for k, x in logits.items():
                    self._hist(f"{k}_{part}", x[m], b.label[m])

    def _id_affinity(self, b: DayBatch) -> np.ndarray:
        """The affinity an ID model could know from the train split (see ``ID_PRIOR_ROWS``).

        A value seen in k train rows keeps k/(k + ID_PRIOR_ROWS) of its attributes and takes the rest
        from its feature's train average; an unseen value (k = 0) is the train average.
        """
        if self.id_attrs is None:
            self.id_attrs = {}
            for f in SCENE_NAMES:
                attrs, k = self.world.scene_attrs[f], self.train_count[f].astype(np.float64)
                mean = k @ attrs / max(1.0, k.sum())
                w = (k / (k + ID_PRIOR_ROWS))[:, None]
                self.id_attrs[f] = w * attrs + (1.0 - w) * mean
        need = scene_need(self.world, b.scene, self.id_attrs)
        c = self.world.shops.cuisine[b.shop]
        return BETA * np.einsum("nd,nd->n", need[b.req], self.world.cuisine_centred[c])

    def _hist(self, key: str, logit: np.ndarray, label: np.ndarray) -> None:
        bins = np.clip(((logit + 12.0) / 20.0 * AUC_BINS).astype(np.int64), 0, AUC_BINS - 1)
        self.auc_hist[key] += np.bincount(bins * 2 + label, minlength=2 * AUC_BINS).reshape(AUC_BINS, 2)

    def flush(self) -> None:
        if not self.pending:
            return
        cols = {k: np.concatenate([p[k] for p in self.pending]) for k in self.pending[0]}
        arrays = []
        for field in self.schema:
            v = cols[field.name]
            if pa.types.is_dictionary(field.type):
                arrays.append(pa.DictionaryArray.from_arrays(pa.array(v, field.type.index_type),
                                                             self._dictionary(field.name)))
            else:
                arrays.append(pa.array(v, field.type))
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        self._wait()
        self.writing = self.pool.submit(self.writer.write_table, table, row_group_size=table.num_rows)
        self.rows += len(cols["label"])
        self.pending, self.pending_rows = [], 0

    def _dictionary(self, name: str) -> pa.Array:
        return pa.array(list(SPLITS) if name == "split" else list(self.vocab[name]), pa.string())

    def _wait(self) -> None:
        if self.writing is not None:
            self.writing.result()
            self.writing = None

    def close(self) -> None:
        try:
            self.flush()
            self._wait()
        finally:
            self.pool.shutdown()
            self.writer.close()


def _impressions_schema(table: Table, index_type: dict[str, pa.DataType]) -> pa.Schema:
    """String scene columns are dictionary-encoded, int8 codes (int16 for features over 127 values)."""
    types = {"request_id": pa.int64(), "ts": pa.int64(), "unseen_scene": pa.bool_()}
    fields = []
    for col in table.columns:
        if col.name == "split" or col.name in STR_SCENE:
            t = pa.dictionary(index_type.get(col.name, pa.int8()), pa.string())
        else:
            t = types.get(col.name, pa.int32())
        fields.append(pa.field(col.name, t, nullable=False))
    return pa.schema(fields)


def auc_from_hist(hist: np.ndarray) -> float | None:
    """AUC from a (bins × [negatives, positives]) histogram of scores; ties count one half."""
    neg, pos = hist[:, 0].astype(np.float64), hist[:, 1].astype(np.float64)
    if neg.sum() == 0 or pos.sum() == 0:
        return None
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


# ---------------------------------------------------------------------------- tables


def shops_table(world: World) -> pa.Table:
    s = world.shops
    return pa.table({
        "shop_id": pa.array(np.arange(len(s.cuisine)), pa.int64()),
        "name": s.name,
        "category": [W.CUISINES[c].name for c in s.cuisine],
        "district": [W.DISTRICTS[d].name for d in s.district],
        "price_level": pa.array(s.price_level, pa.int64()),
        "rating": pa.array(s.rating, pa.float64()),
        "description": s.description,
        "menu": s.menu,
        "open_day": pa.array(s.open_day, pa.int64()),
    }).select(SHOPS.column_names)


def users_table(world: World) -> pa.Table:
    u = world.users
    return pa.table({
        "user_id": pa.array(np.arange(len(u.persona)), pa.int64()),
        "home_district": [W.DISTRICTS[d].name for d in u.home],
        "work_district": [W.DISTRICTS[d].name for d in u.work],
        "price_sensitivity": pa.array(u.price_sensitivity, pa.float64()),
        "profile": u.profile,
    }).select(USERS.column_names)


def scene_attributes_table(world: World) -> pa.Table:
    """Hidden attributes of every scene value (evaluation only; models never read it)."""
    vocab, attrs = scene_vocab(world), scene_attributes(world)
    feature = [f for f in SCENE_NAMES for _ in vocab[f]]
    value = [v for f in SCENE_NAMES for v in vocab[f]]
    mat = np.concatenate([attrs[f] for f in SCENE_NAMES])
    return pa.table({"feature": feature, "value": value, **{d: mat[:, k] for k, d in enumerate(W.DIMS)}})


def cuisine_attributes_table() -> pa.Table:
    mat = cuisine_attributes()
    return pa.table({"category": [c.name for c in W.CUISINES], **{d: mat[:, k] for k, d in enumerate(W.DIMS)}})


# ---------------------------------------------------------------------------- entry point


def described_features(world: World) -> list[SceneFeature]:
    """The scene features with what a platform knows of each long-tail value beyond its name: a
    landmark's category (its :class:`~larr.data.world.LandmarkType`), an event's kind. Only words
    a POI or event table would hold; the hidden attribute vectors stay hidden."""
    kinds = {"landmark": {n: W.LANDMARK_TYPES[k].name for n, k in zip(world.landmarks.name, world.landmarks.kind)},
             "event": {n: W.EVENT_TYPES[k].name for n, k in zip(world.events.name, world.events.kind) if k >= 0}}
    return [replace(f, descriptions=kinds[f.name]) if f.name in kinds else f for f in SCENE_FEATURES]


def generate(out_dir: Path, preset: str | Preset = "demo", seed: int = 0, progress: bool = True,
             descriptions: bool = False) -> dict:
    """Write the world of (preset, seed) into ``out_dir`` and return its summary.

    Files: shops/users/impressions.parquet, scene_attributes.parquet, cuisine_attributes.parquet,
    world.json and, last, dataset.json. Each file is written atomically; same seed, same bytes.
    ``descriptions``: dataset.json also carries each landmark's category and each event's kind
    (:func:`described_features`); the tables are the same bytes either way.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = preset if isinstance(preset, str) else "custom"
    world = build_world(preset, seed)

    write_parquet(shops_table(world), out_dir / SHOPS.file)
    write_parquet(users_table(world), out_dir / USERS.file)
    write_parquet(scene_attributes_table(world), out_dir / "scene_attributes.parquet")
    write_parquet(cuisine_attributes_table(), out_dir / "cuisine_attributes.parquet")
    with atomic_path(out_dir / "impressions.parquet") as tmp:
        sink = ImpressionWriter(world, tmp)
        try:
            for batch in _progress(iter_days(world), world, progress):
                sink.add(batch)
        finally:
            sink.close()
    seconds = time.perf_counter() - t0

    facts = world_facts(world, sink, name)
    atomic_write_text(out_dir / "world.json", json.dumps(facts, indent=2, ensure_ascii=False) + "\n")
    write_dataset_meta(
        out_dir, described_features(world) if descriptions else SCENE_FEATURES, name="synth", preset=name, seed=seed,
        label="click",
        split="by day: first 75% train, next 10% valid, last 15% test",
        period=facts["period"], timezone="city local time, written as UTC", documentation="docs/world.md",
    )
    return {**summary(facts), "rows_per_s": round(sink.rows / seconds), "seconds": round(seconds, 2)}


def _progress(batches: Iterator[DayBatch], world: World, enabled: bool) -> Iterator[DayBatch]:
    if not enabled:
        yield from batches
        return
    from tqdm import tqdm

    total = int(world.calendar.n_requests.sum())
    with tqdm(total=total, unit="req", unit_scale=True, desc="synth", leave=False) as bar:
        for b in batches:
            bar.update(len(b.ts))
            yield b


def world_facts(world: World, sink: ImpressionWriter, preset_name: str) -> dict:
    """world.json: counts, CTR and unseen share per split, test-only and valid-first values with their nearest
    seen value, the per-feature long-tail summary, new shops, reference AUCs per test slice."""
    cal, vocab = world.calendar, sink.vocab
    st = sink.by_split
    starts = cal.split_start + (len(cal.date),)
    new_shops = np.flatnonzero(world.shops.open_day >= cal.split_start[2])

    def unseen_values(split: str) -> dict[str, list[str]]:
        out = {}
        for f in SCENE_NAMES:
            vals = [vocab[f][i] for i in np.flatnonzero(sink.values_by_split[split][f] & ~sink.seen[f])]
            if vals:
                out[f] = vals
        return out

    test_only = unseen_values("test")
    valid_first = unseen_values("valid")
    h = {k: _round(auc_from_hist(v)) for k, v in sink.auc_hist.items()}
    return {
        "dataset": "synth",
        "preset": preset_name,
        "seed": world.seed,
        "shops": len(world.shops.cuisine),
        "new_shops": len(new_shops),
        "users": len(world.users.persona),
        "requests": sum(s["requests"] for s in st.values()),
        "impressions": sum(s["rows"] for s in st.values()),
        "days": len(cal.date),
        "period": f"{cal.date[0]} .. {cal.date[-1]}",
        "rows": {s: st[s]["rows"] for s in SPLITS},
        "ctr": {s: _ratio(st[s]["clicks"], st[s]["rows"]) for s in SPLITS},
        "unseen_share": {s: _ratio(st[s]["unseen_rows"], st[s]["rows"]) for s in SPLITS},
        "split_days": {s: [starts[i], starts[i + 1] - 1] for i, s in enumerate(SPLITS)},
        "test_only_values": test_only,
        "valid_first_values": valid_first,
        "valid_unseen_values": valid_first,
        "nearest_seen_value": _nearest_seen(world, {f: test_only.get(f, []) + [v for v in valid_first.get(f, [])
                                                                            if v not in test_only.get(f, [])]
                                                    for f in {**test_only, **valid_first}}, sink.seen),
        "long_tail": long_tail_facts(world, sink),
        "new_shop_ids": new_shops.tolist(),
        "hotel_launch_day": int(np.argmax(cal.hotel_share > 0)) if (cal.hotel_share > 0).any() else None,
        "reference_auc": {
            "test_oracle": h["oracle_test"],
            "test_id_oracle": h["id_test"],
            "test_no_scene": h["no_scene_test"],
            **{f"{part}_{k}": h[f"{key}_{part}"] for part in SLICES
               for k, key in (("oracle", "oracle"), ("id_oracle", "id"), ("no_scene", "no_scene"))},
        },
        "test_slice_rows": dict(sink.slice_rows),
        "attribute_dims": list(W.DIMS),
    }


def long_tail_facts(world: World, sink: ImpressionWriter) -> dict[str, dict]:
    """Per scene feature: values (vocabulary / occurring), the share of occurring values with fewer than
    RARE_ROWS train rows (unseen ones included) and among train-seen ones, test-only and valid-first counts."""
    out = {}
    for f in SCENE_NAMES:
        occurs = np.logical_or.reduce([sink.values_by_split[s][f] for s in SPLITS])
        k = sink.train_count[f]
        seen = k > 0
        test_new = sink.values_by_split["test"][f] & ~seen
        valid_new = sink.values_by_split["valid"][f] & ~seen
        out[f] = {
            "values": len(k), "occurring": int(occurs.sum()), "in_train": int(seen.sum()),
            "share_under_20_train_rows": _ratio(int((occurs & (k < RARE_ROWS)).sum()), int(occurs.sum())),
            "share_of_train_values_under_20_rows": _ratio(int((seen & (k < RARE_ROWS)).sum()), int(seen.sum())),
            "test_only": int(test_new.sum()), "test_only_not_in_valid": int((test_new & ~valid_new).sum()),
            "valid_first": int(valid_new.sum()),
            "top_value_train_rows": int(k.max()) if len(k) else 0,
            "median_train_rows_of_train_values": float(np.median(k[seen])) if seen.any() else 0.0,
        }
    return out


def _nearest_seen(world: World, listed: dict[str, list[str]], seen: dict[str, np.ndarray]) -> dict[str, str]:
    """For each listed value, the train-seen value of its feature with the most similar hidden attributes."""
    vocab, attrs = scene_vocab(world), scene_attributes(world)
    out = {}
    for f, values in listed.items():
        a = attrs[f] / np.maximum(np.linalg.norm(attrs[f], axis=1, keepdims=True), 1e-9)
        seen_idx = np.flatnonzero(seen[f])
        for v in values:
            i = vocab[f].index(v)
            cos = a[seen_idx] @ a[i]
            tied = seen_idx[cos >= cos.max() - 1e-9]  # same direction (warm vs scorching): the closer one
            out[f"{f}: {v}"] = vocab[f][tied[np.argmin(np.linalg.norm(attrs[f][tied] - attrs[f][i], axis=1))]]
    return out


def summary(facts: dict) -> dict:
    """The flat-ish summary printed by ``larr data synth``."""
    keys = ("preset", "seed", "shops", "new_shops", "users", "days", "requests", "impressions", "ctr",
            "unseen_share")
    out = {k: facts[k] for k in keys}
    ref = facts["reference_auc"]
    out["oracle_auc"] = {"test": ref["test_oracle"], "unseen": ref["unseen_oracle"],
                         "unseen_id": ref["unseen_id_oracle"], "rare": ref["rare_oracle"],
                         "rare_id": ref["rare_id_oracle"]}
    out["long_tail"] = {f: {k: facts["long_tail"][f][k] for k in ("occurring", "share_under_20_train_rows",
                                                                  "test_only", "valid_first")}
                        for f in W.LONG_TAIL_FEATURES}
    return out


def _ratio(a: int, b: int) -> float:
    return round(a / b, 4) if b else 0.0


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
