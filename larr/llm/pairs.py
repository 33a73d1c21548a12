"""Stage-2 positive pairs, mined from **train-split clicks only**.

LARR turns the stage-1 LLM into an embedding model with three kinds of positive pairs. Each
builder below is a pure function of the click table with one documented rule, so a test can
check every returned pair against the rule (and that nothing breaking it is returned):

- :func:`user_user_pairs`: users whose sets of clicked shops overlap strongly
  (Jaccard ≥ ``min_jaccard`` and at least ``min_common`` shops in common);
- :func:`shop_shop_pairs`: shops clicked by the same users (at least ``min_coclick`` distinct
  users clicked both, and the co-click count normalised by ``sqrt(n_a · n_b)`` ≥ ``min_score``);
- :func:`user_shop_pairs`: one click event = one pair (a user at a moment, the shop clicked);
- optionally (weight ``contrastive.weights.scene_shop`` > 0) :func:`scene_shop_pairs`: a scene
  value's own text ("weather: heavy rain") and shops of the categories it lifts among clicks;
- optionally (weight ``contrastive.weights.scene_scene`` > 0) :func:`scene_scene_pairs`: two
  values of one scene feature whose clicks lean to the same categories ("weather: heavy rain",
  "weather: thunderstorm").

Text of each side (rendered with the stage-1 corpus functions, so both stages read one format):

- a shop: :func:`larr.llm.corpus.shop_text`;
- a user in a user–user pair: the stage-1 user document (profile, most clicked categories and
  shops, train clicks only);
- a user in a user–shop pair: the profile plus the most clicked categories and shops among the
  clicks made *before* this click, without the clicked shop itself — otherwise the shop's name
  inside the user text would make the pair a string match instead of a lesson in taste.

**The scene option** (``contrastive.scene_in_user_text``): stage 3 will encode short scene
texts ("weather: typhoon") that none of the pairs above contain. With the option, the user side
of a user–shop pair also carries the scene of that click — a seeded subset of
``scene_features_per_pair`` rendered features, e.g. ``"weather: heavy rain; hour: 12:00;
location: office. <user>…</user>"`` — so the model learns which shops a scene calls for. The
scene goes *first* so truncation to ``max_length`` can only shorten the history, never drop the
scene; a seeded ``scene_only_frac`` of the pairs carries the scene alone, the very form stage 3
encodes.

**Which setting, and why** (demo world, SmolLM2-135M, the same stage 1, 500 steps each, chosen
by the stage-3 ``larr`` row's *valid* AUC over seeds 0-2; scores of the values never seen in
training from :mod:`larr.llm.evaluate`):

===============================================  =========  =============  ================
stage-2 pairs                                    valid AUC  valid unseen   unseen × seen ρ
===============================================  =========  =============  ================
no scene (the paper's three pair types)          0.7531     0.7825         +0.235
scene in user text, 3 features                   0.7542     0.7770         +0.198
**… and 30 % of pairs the scene alone**          **0.7563** 0.7806         **+0.275**
… scene alone as one feature per text            0.7542     0.7852         +0.106
… plus scene_shop pairs (weight 1)               0.7560     0.7425         −0.236
===============================================  =========  =============  ================

The third row is the default (``scene_in_user_text``, ``scene_only_frac = 0.3``). Its lead on
valid AUC is small against the seed spread (±0.003-0.006) but it is ahead on every seed, and it
orders the unseen values best (all-MiniLM-L6-v2: +0.258). ``scene_shop`` pairs teach the seen
values' click lifts directly, which lifts the all-values semantics score (pooled −0.10 → +0.09)
yet places the unseen values worse than no scene training at all — "extreme heat" next to
"freezing" — and costs 0.04 valid-unseen AUC: it stays an option, off.

``scene_scene`` pairs (weight 1, demo world, 5 seeds, this module's defaults otherwise) repair what
stage 2 does to the *neighbourhoods* of value texts — the imputer's softmax mix of the nearest
frequent values predicts the rare / unseen values' hidden attributes with R² +0.109 / +0.100
instead of −0.118 / −0.102 (:mod:`larr.llm.value_probe`; MiniLM +0.226 / +0.316; world seed 1:
+0.025 / +0.002 instead of −0.116 / −0.112) — but the
``larr`` row gains little from it: Δ vs the default stage 2 +0.0012 / +0.0025 / −0.0033 test
(all / unseen / rare) and −0.0008 / +0.0023 / −0.0040 valid, none significant. Off.

Pair counts are capped per type (``uu_max_pairs`` …, seeded samples): every distinct text costs
one forward pass through the frozen layers, which dominates the stage's time on a CPU.

Held-out pairs (:func:`split_heldout`) are chosen by seed per pair type. Their users and shops
may appear in training pairs, the exact pairs may not: user–user and shop–shop pairs are
unordered keys, user–shop pairs are keyed by (user, shop), so a second click of the same user on
the same shop cannot sneak the held-out pair back into training.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from larr.config import Config, ContrastiveConfig
from larr.data.schema import SHOPS, USERS, SceneFeature, impressions_table, read_scene_features, read_table
from larr.llm import corpus
from larr.metrics import cosine_matrix

PAIR_TYPES: tuple[str, ...] = ("user_user", "shop_shop", "user_shop")


# ---------------------------------------------------------------------------- clicks


def train_clicks(impressions: pd.DataFrame) -> pd.DataFrame:
    """Clicked rows of the train split, in time order. Valid/test rows never reach stage 2."""
    split = impressions["split"].astype(str)
    clicks = impressions[(split == "train") & (impressions["label"] == 1)]
    return clicks.sort_values(["ts", "request_id", "shop_id"], kind="stable").reset_index(drop=True)


def click_matrix(clicks: pd.DataFrame) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Binary user × shop matrix (1 = clicked at least once), with its row user ids and column shop ids."""
    users, u_idx = np.unique(clicks["user_id"].to_numpy(), return_inverse=True)
    shops, s_idx = np.unique(clicks["shop_id"].to_numpy(), return_inverse=True)
    m = sp.csr_matrix((np.ones(len(u_idx), np.float32), (u_idx, s_idx)), shape=(len(users), len(shops)))
    m.data[:] = 1.0  # duplicates were summed; clicking twice is still one shop in the set
    return m, users, shops


def _top_partners(score: np.ndarray, ok: np.ndarray, ids: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Unordered (i, j) index pairs, i < j: each row's ``k`` best partners among ``ok`` by score (ties: lower id)."""
    keep: set[tuple[int, int]] = set()
    for i in range(score.shape[0]):
        cand = np.flatnonzero(ok[i])
        cand = cand[cand != i]
        if len(cand) == 0:
            continue
        order = np.lexsort((ids[cand], -score[i, cand]))[:k]
        keep.update((min(i, j), max(i, j)) for j in cand[order])
    return sorted(keep)


# ---------------------------------------------------------------------------- the three builders


def user_user_pairs(
    clicks: pd.DataFrame, min_jaccard: float = 0.2, min_common: int = 2, max_per_user: int = 5
) -> pd.DataFrame:
    """Users with strongly overlapping click histories.

    Rule: users a ≠ b form a pair iff ``|S_a ∩ S_b| ≥ min_common`` and
    ``|S_a ∩ S_b| / |S_a ∪ S_b| ≥ min_jaccard``, where S is the set of shops a user clicked in
    the train split. Each user keeps at most its ``max_per_user`` most similar partners (so a
    heavy user does not dominate the batches); a pair survives if either side keeps it.
    Columns: ``left``, ``right`` (user ids, left < right), ``common``, ``jaccard``.
    """
    m, users, _ = click_matrix(clicks)
    inter = (m @ m.T).toarray()
    sizes = np.asarray(m.sum(axis=1)).ravel()
    union = sizes[:, None] + sizes[None, :] - inter
    jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    ok = (inter >= min_common) & (jac >= min_jaccard)
    pairs = _top_partners(jac, ok, users, max_per_user)
    return pd.DataFrame(
        {
            "left": [int(users[i]) for i, _ in pairs],
            "right": [int(users[j]) for _, j in pairs],
            "common": [int(inter[i, j]) for i, j in pairs],
            "jaccard": [float(jac[i, j]) for i, j in pairs],
        },
        columns=["left", "right", "common", "jaccard"],
    )


def shop_shop_pairs(
    clicks: pd.DataFrame, min_coclick: int = 3, min_score: float = 0.05, max_per_shop: int = 5
) -> pd.DataFrame:
    """Shops co-clicked by the same users.

    Rule: shops a ≠ b form a pair iff at least ``min_coclick`` distinct users clicked both
    (train split) and ``coclicks / sqrt(n_a · n_b) ≥ min_score``, n being each shop's number of
    distinct clicking users. The normalisation keeps a hugely popular shop from pairing with
    everything merely because everyone clicks it. Each shop keeps at most ``max_per_shop``
    best partners by that score; a pair survives if either side keeps it.
    Columns: ``left``, ``right`` (shop ids, left < right), ``coclicks``, ``score``.
    """
    m, _, shops = click_matrix(clicks)
    co = (m.T @ m).toarray()
    n = np.diag(co).copy()
    norm = np.sqrt(np.outer(n, n))
    score = np.divide(co, norm, out=np.zeros_like(co), where=norm > 0)
    ok = (co >= min_coclick) & (score >= min_score)
    pairs = _top_partners(score, ok, shops, max_per_shop)
    return pd.DataFrame(
        {
            "left": [int(shops[i]) for i, _ in pairs],
            "right": [int(shops[j]) for _, j in pairs],
            "coclicks": [int(co[i, j]) for i, j in pairs],
            "score": [float(score[i, j]) for i, j in pairs],
        },
        columns=["left", "right", "coclicks", "score"],
    )


def user_shop_pairs(clicks: pd.DataFrame) -> pd.DataFrame:
    """One pair per train click event: (user at that request, shop clicked).

    Rule: every returned row is a train-split click, and every train-split click is returned
    (a shop clicked in two requests gives two rows: the user's history and scene differ).
    Columns: ``left`` (user id), ``right`` (shop id), ``request_id``, ``ts``.
    """
    out = clicks[["user_id", "shop_id", "request_id", "ts"]].rename(columns={"user_id": "left", "shop_id": "right"})
    return out.drop_duplicates(["request_id", "right"]).reset_index(drop=True)


def scene_shop_pairs(
    clicks: pd.DataFrame, shops: pd.DataFrame, scene: Sequence[SceneFeature], min_lift: float = 1.2,
    min_clicks: int = 20, max_categories: int = 3, shops_per_category: int = 5,
) -> pd.DataFrame:
    """A scene value and the shops of the categories it lifts: the stage-3 text form, taught its meaning.

    Rule: for each scene feature f and value v, ``lift(v, c) = P(category c | click, f = v) /
    P(c | click)`` over train clicks. A category is *lifted* by v when ``lift ≥ min_lift`` and
    at least ``min_clicks`` clicks under v went to it; v keeps its ``max_categories`` most lifted
    categories (ties: name). For each, the ``shops_per_category`` shops of that category most
    clicked under v (ties: lower id) are v's positives. Comparing shares among clicks removes
    the scene's effect on traffic volume; categories, not single shops, carry enough clicks per
    value for the share to be more than noise.
    Columns: ``feature``, ``value``, ``right`` (shop id), ``category``, ``lift``.
    """
    cols = ["feature", "value", "right", "category", "lift"]
    cat = clicks["shop_id"].map(shops.set_index("shop_id")["category"])
    share = cat.value_counts(normalize=True)
    rows: list[tuple] = []
    for f in scene:
        counts = pd.crosstab(clicks[f.name], cat)  # value × category click counts
        lift = counts.div(counts.sum(axis=1), axis=0) / share.reindex(counts.columns)
        for value in counts.index:
            ok = [c for c in counts.columns if counts.at[value, c] >= min_clicks and lift.at[value, c] >= min_lift]
            for c in sorted(ok, key=lambda c: (-lift.at[value, c], c))[:max_categories]:
                hits = clicks.loc[(clicks[f.name] == value) & (cat == c), "shop_id"].value_counts()
                best = sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))[:shops_per_category]
                rows += [(f.name, value, int(shop), c, float(lift.at[value, c])) for shop, _ in best]
    return pd.DataFrame(rows, columns=cols)


def click_profiles(clicks: pd.DataFrame, shops: pd.DataFrame, feature: str, min_clicks: int,
                   smoothing: float = 20.0) -> pd.DataFrame:
    """Each value of ``feature`` with at least ``min_clicks`` train clicks → its smoothed log-lift
    over shop categories, ``log(P(c | click, v) / P(c | click))`` with ``smoothing`` pseudo-clicks
    spread by the overall shares (a rare value's profile is pulled to 0, not to noise), centred
    over the kept values (what all of them share is the feature's, not a value's). Rows: values
    (as strings, sorted), columns: categories."""
    cat = clicks["shop_id"].map(shops.set_index("shop_id")["category"])
    share = cat.value_counts(normalize=True).sort_index()
    counts = pd.crosstab(clicks[feature].astype(str), cat).reindex(columns=share.index, fill_value=0)
    counts = counts[counts.sum(axis=1) >= min_clicks].sort_index()
    p = (counts + smoothing * share).div(counts.sum(axis=1) + smoothing, axis=0)
    lift = np.log(p / share)
    return lift - lift.mean(axis=0)


def scene_scene_pairs(
    clicks: pd.DataFrame, shops: pd.DataFrame, scene: Sequence[SceneFeature], min_clicks: int = 30,
    min_similarity: float = 0.5, max_per_value: int = 3,
) -> pd.DataFrame:
    """Two values of one scene feature that shift clicks the same way: the geometry stage 3 reads.

    Rule: per feature f, the values with at least ``min_clicks`` train clicks get their click
    profile (:func:`click_profiles`); two values are a pair when the cosine of their profiles is
    ≥ ``min_similarity`` and one is among the other's ``max_per_value`` most similar (ties: the
    value's string); pairs are unordered (``left`` < ``right`` as strings). "weather: heavy rain"
    and "weather: thunderstorm" end up close because the clicks say they mean the same to a
    hungry customer, and a never-seen "weather: typhoon" can only land near them through its
    words — what stage 3 needs of the vector of a rare or new value, taught on frequent ones.
    Columns: ``feature``, ``left``, ``right`` (values as strings), ``similarity``.
    """
    rows: list[tuple] = []
    for f in scene:
        prof = click_profiles(clicks, shops, f.name, min_clicks)
        if len(prof) < 2:
            continue
        sim = cosine_matrix(prof.to_numpy())
        values = prof.index.to_numpy(dtype=str)
        for i, j in _top_partners(sim, sim >= min_similarity, values, max_per_value):
            rows.append((f.name, str(values[i]), str(values[j]), float(sim[i, j])))
    return pd.DataFrame(rows, columns=["feature", "left", "right", "similarity"])


# ---------------------------------------------------------------------------- hold-out


def pair_keys(pairs: pd.DataFrame) -> pd.Series:
    """The identity of a pair for leak checks: ``'left|right'`` (uu/ss are already ordered left < right)."""
    return pairs["left"].astype(str) + "|" + pairs["right"].astype(str)


def split_heldout(pairs: pd.DataFrame, frac: float, max_n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, heldout): a seeded ``frac`` of the distinct pair keys (at most ``max_n``) is held out.

    Every row whose key is held out leaves training; the held-out side keeps one row per key
    (the first in time), so each held-out pair is one evaluation query.
    """
    keys = pair_keys(pairs)
    distinct = np.sort(keys.unique())
    n = min(max_n, int(round(frac * len(distinct))))
    if len(distinct) > 1:
        n = min(n, len(distinct) - 1)  # always leave something to train on
    chosen = set(np.random.default_rng(seed).permutation(distinct)[:n].tolist()) if n > 0 else set()
    is_held = keys.isin(chosen)
    held = pairs[is_held].drop_duplicates(subset=["left", "right"], keep="first")
    return pairs[~is_held].reset_index(drop=True), held.reset_index(drop=True)


# ---------------------------------------------------------------------------- texts


def scene_text(row: dict, features: Sequence[SceneFeature]) -> str:
    """The scene of one request as one line: ``'weather: heavy rain; time slot: lunch; …'``."""
    return "; ".join(f.render(row[f.name]) for f in features)


def history_user_text(
    profile: str, prior: Sequence[tuple[int, str, str]], exclude_shop: int, top_k: int, scene: str | None = None
) -> str:
    """A user at the moment of a click: the scene (if any), then the user document — profile,
    most clicked categories and most clicked shops among the ``prior`` clicks, with
    ``exclude_shop`` (the clicked one) left out — in the stage-1 format (:func:`corpus.user_text`).

    The scene goes *first* so that truncation to the token limit can only shorten the history,
    never drop the scene. ``prior``: the user's earlier train clicks as (shop_id, name,
    category). Ranking is by count, ties by name, so the text is deterministic.
    """
    cats = _top_k(Counter(cat for _, _, cat in prior if cat), top_k)
    shops = _top_k(Counter(name for shop, name, _ in prior if shop != exclude_shop and name), top_k)
    text = corpus.user_text(profile, cats, shops)
    return f"{scene}. {text}" if scene else text


def _top_k(counts: Counter, k: int) -> list[str]:
    return [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


@dataclass
class PairSet:
    """Training pairs of one type: the texts of both sides (``left[i]`` ↔ ``right[i]``)."""

    left: list[str]
    right: list[str]

    def __len__(self) -> int:
        return len(self.left)


@dataclass
class EvalSet:
    """Held-out pairs of one type as a retrieval task.

    Query ``i`` is ``queries[i]``; its positive is ``candidates[targets[i]]``; ``exclude[i]``
    lists candidate indices removed from its ranking (the query entity itself and its other
    known positives), i.e. the usual *filtered* ranking.
    """

    queries: list[str]
    candidates: list[str]
    targets: np.ndarray
    exclude: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.queries)


@dataclass
class PairData:
    """Everything stage 2 trains and evaluates on."""

    train: dict[str, PairSet]
    heldout: dict[str, EvalSet]
    stats: dict[str, int]


# ---------------------------------------------------------------------------- assembly


def load_tables(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[SceneFeature]]:
    """(shops, users, train clicks, scene features) of a data directory, schema-checked."""
    data_dir = Path(data_dir)
    scene = read_scene_features(data_dir)
    shops = read_table(data_dir / SHOPS.file, SHOPS).to_pandas()
    users = read_table(data_dir / USERS.file, USERS, columns=["user_id", "profile"]).to_pandas()
    cols = ["request_id", "ts", "user_id", "shop_id", "label", "split", *(f.name for f in scene)]
    imps = read_table(data_dir / "impressions.parquet", impressions_table(scene), columns=cols).to_pandas()
    return shops, users, train_clicks(imps), scene


def cap(pairs: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, a seeded sample (order kept): bounds the texts stage 2 must encode."""
    return pairs if len(pairs) <= n else pairs.sample(n, random_state=seed).sort_index().reset_index(drop=True)


def build_pairs(data_dir: Path, cfg: Config) -> PairData:
    """Mine, hold out, cap and render all three pair types of a data directory."""
    shops, users, clicks, scene = load_tables(data_dir)
    cc = cfg.contrastive
    shop_txt = {int(r["shop_id"]): corpus.shop_text(r) for r in shops.to_dict("records")}
    raw = {
        "user_user": user_user_pairs(clicks, cc.uu_min_jaccard, cc.uu_min_common, cc.uu_max_per_user),
        "shop_shop": shop_shop_pairs(clicks, cc.ss_min_coclick, cc.ss_min_score, cc.ss_max_per_shop),
        "user_shop": user_shop_pairs(clicks),
    }
    limits = {"user_user": cc.uu_max_pairs, "shop_shop": cc.ss_max_pairs, "user_shop": cc.us_max_pairs}
    train_df, held_df = {}, {}
    for i, (kind, p) in enumerate(raw.items()):
        tr, held_df[kind] = split_heldout(p, cc.heldout_frac, cc.heldout_max, cfg.seed + i)
        train_df[kind] = cap(tr, limits[kind], cfg.seed + i)
    user_doc = _user_documents(clicks, shops, users, cc.user_top_k)
    us_text = _UserShopTexts(clicks, shops, users, scene if cc.scene_in_user_text else [], cc, cfg.seed)
    train = {
        "user_user": _same_kind_set(train_df["user_user"], user_doc),
        "shop_shop": _same_kind_set(train_df["shop_shop"], shop_txt),
        "user_shop": us_text.pair_set(train_df["user_shop"], shop_txt),
    }
    render = {f.name: f.render for f in scene}
    if cc.weights.get("scene_shop", 0.0) > 0:  # training only: its test is the scene-semantics score
        sc = scene_shop_pairs(clicks, shops, scene, cc.sc_min_lift, cc.sc_min_clicks, cc.sc_max_categories,
                              cc.sc_shops_per_category)
        train["scene_shop"] = PairSet([render[f](v) for f, v in zip(sc["feature"], sc["value"])],
                                      [shop_txt[int(s)] for s in sc["right"]])
    if cc.weights.get("scene_scene", 0.0) > 0:  # training only, as scene_shop
        vv = scene_scene_pairs(clicks, shops, scene, cc.scs_min_clicks, cc.scs_min_similarity, cc.scs_max_per_value)
        train["scene_scene"] = PairSet([render[f](v) for f, v in zip(vv["feature"], vv["left"])],
                                       [render[f](v) for f, v in zip(vv["feature"], vv["right"])])
    heldout = {
        "user_user": _same_kind_eval(held_df["user_user"], raw["user_user"], user_doc, cc.eval_max_candidates, cfg.seed),
        "shop_shop": _same_kind_eval(held_df["shop_shop"], raw["shop_shop"], shop_txt, cc.eval_max_candidates, cfg.seed),
        "user_shop": us_text.eval_set(held_df["user_shop"], clicks, shop_txt),
    }
    stats = {f"{t}_pairs": len(p) for t, p in raw.items()}
    stats.update({f"{t}_train": len(s) for t, s in train.items()})
    stats.update({f"{t}_heldout": len(s) for t, s in heldout.items()})
    stats.update({f"{t}_candidates": len(s.candidates) for t, s in heldout.items()})
    return PairData(train, heldout, stats)


def _user_documents(clicks: pd.DataFrame, shops: pd.DataFrame, users: pd.DataFrame, top_k: int) -> dict[int, str]:
    """user_id → the stage-1 user document (train clicks only), via the corpus' own functions."""
    history = corpus.user_click_history(clicks, shops, top_k)
    return {int(u): corpus.user_text(p, *history.get(int(u), ([], []))) for u, p in zip(users["user_id"], users["profile"])}


def _same_kind_set(pairs: pd.DataFrame, text: dict[int, str]) -> PairSet:
    return PairSet([text[int(i)] for i in pairs["left"]], [text[int(j)] for j in pairs["right"]])


def _neighbours(pairs: pd.DataFrame) -> dict[int, set[int]]:
    """Undirected adjacency of a same-kind pair table."""
    nb: dict[int, set[int]] = {}
    for a, b in zip(pairs["left"].to_numpy(), pairs["right"].to_numpy()):
        nb.setdefault(int(a), set()).add(int(b))
        nb.setdefault(int(b), set()).add(int(a))
    return nb


def _candidate_ids(all_ids: list[int], targets: set[int], max_n: int, seed: int) -> np.ndarray:
    """Every entity when there are at most ``max_n``; else all targets plus a seeded sample of
    the others up to ``max_n`` (encoding 3,000 users with three LLMs would dominate the stage)."""
    ids = np.array(sorted(all_ids), dtype=np.int64)
    if len(ids) <= max_n:
        return ids
    others = ids[~np.isin(ids, list(targets))]
    n_more = max(0, max_n - len(targets))
    pick = np.random.default_rng(seed).choice(others, size=min(n_more, len(others)), replace=False)
    return np.sort(np.concatenate([np.array(sorted(targets), dtype=np.int64), pick]))


def _same_kind_eval(held: pd.DataFrame, all_pairs: pd.DataFrame, text: dict[int, str],
                    max_candidates: int, seed: int) -> EvalSet:
    """Query = left entity, candidates = the entities of that kind (capped, see
    :func:`_candidate_ids`); the query itself and its other positives (train or held-out) are
    filtered from its ranking."""
    ids = _candidate_ids(list(text), set(held["right"].astype(int)), max_candidates, seed)
    pos = {int(e): i for i, e in enumerate(ids)}
    nb = _neighbours(all_pairs)
    exclude = []
    for a, b in zip(held["left"].to_numpy(), held["right"].to_numpy()):
        drop = ({int(a)} | nb.get(int(a), set())) - {int(b)}
        exclude.append(np.array(sorted(pos[x] for x in drop if x in pos), dtype=np.int64))
    return EvalSet(
        queries=[text[int(a)] for a in held["left"]],
        candidates=[text[int(e)] for e in ids],
        targets=np.array([pos[int(b)] for b in held["right"]], dtype=np.int64),
        exclude=exclude,
    )


class _UserShopTexts:
    """Renders the user side of user–shop pairs: profile + history before the click (+ scene).

    With scene features, each pair names a seeded random subset of ``scene_features_per_pair``
    of them (all when None): ten rendered features would outgrow the token limit, and short
    scene phrases are closer to what stage 3 encodes (one feature at a time). A seeded
    ``scene_only_frac`` of the pairs carries the scene alone, without the user document, so the
    model also sees scene phrases in the very form stage 3 feeds it.
    """

    def __init__(self, clicks: pd.DataFrame, shops: pd.DataFrame, users: pd.DataFrame,
                 scene: Sequence[SceneFeature], cc: ContrastiveConfig, seed: int) -> None:
        meta = shops.set_index("shop_id")
        name, cat = meta["name"].to_dict(), meta["category"].to_dict()
        self.history: dict[int, tuple[list[int], list[tuple[int, str, str]]]] = {}
        for u, ts, s in zip(clicks["user_id"].to_numpy(), clicks["ts"].to_numpy(), clicks["shop_id"].to_numpy()):
            times, items = self.history.setdefault(int(u), ([], []))
            times.append(int(ts))  # clicks are in time order, so each list stays sorted
            items.append((int(s), str(name.get(s, "")), str(cat.get(s, ""))))
        self.profile = dict(zip(users["user_id"].astype(int), users["profile"]))
        self.scene = list(scene)
        self.per_pair = cc.scene_features_per_pair
        self.scene_only_frac = cc.scene_only_frac
        self.top_k = cc.user_top_k
        self.seed = seed
        requests = clicks.drop_duplicates("request_id")
        self.scene_rows = (
            {int(r): row for r, row in zip(requests["request_id"], requests[[f.name for f in scene]].to_dict("records"))}
            if scene else {}
        )

    def scene_of(self, request_id: int, shop: int) -> str | None:
        if not self.scene:
            return None
        feats = self.scene
        if self.per_pair is not None and self.per_pair < len(feats):
            pick = np.random.default_rng([self.seed, request_id, shop]).choice(len(feats), self.per_pair, replace=False)
            feats = [feats[i] for i in sorted(pick)]
        return scene_text(self.scene_rows[request_id], feats)

    def text(self, user: int, shop: int, ts: int, request_id: int) -> str:
        scene = self.scene_of(request_id, shop)
        if scene and self.scene_only_frac > 0:
            if np.random.default_rng([self.seed, request_id, shop, 1]).random() < self.scene_only_frac:
                return scene  # the scene alone, as stage 3 will encode it
        times, items = self.history.get(user, ([], []))
        prior = items[: bisect_left(times, ts)]  # strictly earlier clicks
        return history_user_text(self.profile.get(user, ""), prior, shop, self.top_k, scene)

    def _texts(self, pairs: pd.DataFrame) -> list[str]:
        cols = (pairs[c].to_numpy() for c in ("left", "right", "ts", "request_id"))
        return [self.text(int(u), int(s), int(t), int(r)) for u, s, t, r in zip(*cols)]

    def pair_set(self, pairs: pd.DataFrame, shop_txt: dict[int, str]) -> PairSet:
        return PairSet(self._texts(pairs), [shop_txt[int(s)] for s in pairs["right"]])

    def eval_set(self, held: pd.DataFrame, clicks: pd.DataFrame, shop_txt: dict[int, str]) -> EvalSet:
        """Candidates = every shop; the user's other train-clicked shops are filtered (known positives)."""
        ids = np.array(sorted(shop_txt), dtype=np.int64)
        pos = {int(e): i for i, e in enumerate(ids)}
        clicked = {u: {s for s, _, _ in items} for u, (_, items) in self.history.items()}
        exclude = [
            np.array(sorted(pos[x] for x in clicked.get(int(u), set()) - {int(s)} if x in pos), dtype=np.int64)
            for u, s in zip(held["left"], held["right"])
        ]
        return EvalSet(
            queries=self._texts(held),
            candidates=[shop_txt[int(e)] for e in ids],
            targets=np.array([pos[int(s)] for s in held["right"]], dtype=np.int64),
            exclude=exclude,
        )
