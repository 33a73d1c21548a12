"""Stage-2 evaluation: does the embedding model understand our domain — and our scenes?

Three measurements, each for four encoders (``untuned`` backbone and ``stage1`` LM as raw
last-token vectors, ``minilm`` = all-MiniLM-L6-v2 as an off-the-shelf sentence encoder, and
``larr`` = the stage-2 model):

1. **Held-out pair retrieval** (recall@10, MRR) per pair type: each held-out pair's left text
   is a query, every candidate text of the right side's kind is the corpus (all users for
   user–user, all shops otherwise), ranked by cosine. Ranking is *filtered*: the query entity
   itself and its other known positives are removed, so a model is not punished for ranking a
   different true neighbour first (:func:`retrieval_metrics`).
2. **Scene semantics**: over all pairs of values of one scene feature ("weather: typhoon" vs
   "weather: thunderstorm"), the Spearman correlation between the cosine of the rendered
   texts' embeddings and the cosine of the values' hidden attribute vectors
   (``scene_attributes.parquet``, written by the synthetic world). This is what stage 3 relies
   on: scene values that *mean* similar things must get similar vectors — including values
   never seen in training. Pairs of all features are pooled; per-feature numbers are reported too,
   and the values never seen in training get their own scores (:class:`SceneScores`).
3. **Scene transfer** (:mod:`larr.llm.value_probe`): how well a map from a value's vector to
   its hidden attributes, learnt on the frequent values, predicts the rare and unseen ones —
   what stage 3 must do with the vector of a value it has (almost) never seen.
"""
from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from larr.config import Config
from larr.encoders import REGISTRY, EncoderUnavailable, eval_settings, load_encoder, model_folder
from larr.llm.pairs import PAIR_TYPES, EvalSet, PairData
from larr.llm.value_probe import DEFAULT_TEMPERATURE, value_transfer
from larr.metrics import cosine_matrix, mrr, recall_at_k

MODELS: tuple[str, ...] = tuple(REGISTRY)  # untuned, stage1, minilm, larr: the tables' column order
SCENE_ATTRIBUTES_FILE = "scene_attributes.parquet"
K = 10

EncodeFn = Callable[[list[str]], np.ndarray]


# ---------------------------------------------------------------------------- metrics


def filtered_scores(queries: np.ndarray, candidates: np.ndarray, exclude: list[np.ndarray]) -> np.ndarray:
    """Cosine scores (queries × candidates) with each query's excluded candidates set to -inf."""
    scores = np.asarray(queries, np.float64) @ np.asarray(candidates, np.float64).T
    for i, drop in enumerate(exclude):
        if len(drop):
            scores[i, drop] = -np.inf
    return scores


def retrieval_metrics(queries: np.ndarray, candidates: np.ndarray, targets: np.ndarray,
                      exclude: list[np.ndarray] | None = None, k: int = K) -> dict[str, float]:
    """recall@k and MRR of each query's target among the candidates (filtered ranking, ties count
    against the target: a model that gives everything the same score ranks it last)."""
    scores = filtered_scores(queries, candidates, exclude or [])
    return {f"recall@{k}": recall_at_k(scores, targets, k), "mrr": mrr(scores, targets)}


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None  # undefined: too few pairs or a constant side
    return float(spearmanr(a, b).statistic)


# ---------------------------------------------------------------------------- scene semantics


def scene_value_table(data_dir: Path) -> pd.DataFrame | None:
    """``scene_attributes.parquet`` with a ``text`` column (the value rendered as its feature
    renders it), ``train_rows`` (its rows in the train split), ``seen`` (``train_rows`` > 0) and
    ``occurs`` (it has rows in some split: a world may define values no request ever holds); None
    when the data set has no hidden attributes (e.g. MovieLens)."""
    from larr.data.schema import impressions_table, read_scene_features, read_table

    path = Path(data_dir) / SCENE_ATTRIBUTES_FILE
    if not path.is_file():
        return None
    table = pd.read_parquet(path)
    features = {f.name: f for f in read_scene_features(data_dir)}
    table = table[table["feature"].isin(features)].reset_index(drop=True)
    table["text"] = [features[f].render(v) for f, v in zip(table["feature"], table["value"])]
    imps = read_table(Path(data_dir) / "impressions.parquet", impressions_table(list(features.values())),
                      columns=["split", *features]).to_pandas()
    train = imps[imps["split"].astype(str) == "train"]
    counts = {f: train[f].astype(str).value_counts() for f in features}
    present = {f: set(imps[f].astype(str)) for f in features}
    table["train_rows"] = [int(counts[f].get(str(v), 0)) for f, v in zip(table["feature"], table["value"])]
    table["seen"] = table["train_rows"] > 0
    table["occurs"] = [str(v) in present[f] for f, v in zip(table["feature"], table["value"])]
    return table


def attribute_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns
            if c not in ("feature", "value", "text", "seen", "train_rows", "occurs")
            and pd.api.types.is_numeric_dtype(table[c])]


@dataclass
class SceneScores:
    """How one encoder's scene-value embeddings relate to the hidden attributes.

    ``pooled``: Spearman over the pairs of all features together (the headline number; half of
    the pairs are ``hour`` pairs, whose strings are nearly identical while their attributes
    differ, so string similarity alone scores *negative* here). ``per_feature`` and their
    unweighted mean ``macro``. ``mean_cosine``: average cosine between values of one feature —
    near 1 means every scene text gets nearly the same vector (the anisotropy of raw LLM states).

    The values never seen in training are the ones the LLM is there for, and the seen ones can be
    learnt from clicks (a stage-2 objective built on scene clicks raises the scores above without
    understanding anything new), so two scores look at them alone, on text vectors centred per
    feature as stage 3 sees them: ``unseen`` is the Spearman over (unseen, seen) value pairs and
    ``unseen_top1`` the share of unseen values whose nearest seen value is the nearest by hidden
    attributes (the value whose learnt effect the ID imputation borrows). None without unseen values.
    ``transfer_rare`` / ``transfer_unseen``: R² of a map vector → attributes learnt on the frequent
    values, on the rare and the unseen ones (:mod:`larr.llm.value_probe`; None without train counts);
    ``neighbours_rare`` / ``neighbours_unseen``: the same R² of the imputer's softmax mix of the
    nearest frequent values.
    """

    pooled: float | None
    per_feature: dict[str, float | None]
    macro: float | None
    mean_cosine: float
    unseen: float | None = None
    unseen_top1: float | None = None
    transfer_rare: float | None = None
    transfer_unseen: float | None = None
    neighbours_rare: float | None = None
    neighbours_unseen: float | None = None


def scene_semantics(table: pd.DataFrame, vectors: np.ndarray, rare_below: int | None = None,
                    temperature: float = DEFAULT_TEMPERATURE) -> SceneScores:
    """Spearman between text-embedding cosine and attribute cosine over all pairs of values of
    the same feature. ``vectors`` are the embeddings of ``table['text']``; with ``rare_below`` (and
    the table's ``train_rows``) also the transfer probe of :mod:`larr.llm.value_probe`, on the values
    that occur in the data."""
    attrs = table[attribute_columns(table)].to_numpy(np.float64)
    text_sims, attr_sims, per_feature = [], [], {}
    for feature, rows in table.groupby("feature", sort=True).indices.items():
        iu = np.triu_indices(len(rows), k=1)
        t = cosine_matrix(vectors[rows])[iu]
        a = cosine_matrix(attrs[rows])[iu]
        per_feature[str(feature)] = _spearman(t, a)
        text_sims.append(t)
        attr_sims.append(a)
    if not text_sims:
        return SceneScores(None, {}, None, float("nan"))
    defined = [v for v in per_feature.values() if v is not None]
    texts = np.concatenate(text_sims)
    unseen, top1 = _unseen_scores(table, vectors, attrs) if "seen" in table else (None, None)
    transfer = None
    if rare_below is not None and "train_rows" in table:
        occurs = table["occurs"].to_numpy(bool) if "occurs" in table else np.ones(len(table), bool)
        transfer = value_transfer(table[occurs].reset_index(drop=True), np.asarray(vectors)[occurs],
                                  attribute_columns(table), rare_below, temperature=temperature)
    return SceneScores(
        pooled=_spearman(texts, np.concatenate(attr_sims)),
        per_feature=per_feature,
        macro=float(np.mean(defined)) if defined else None,
        mean_cosine=float(texts.mean()),
        unseen=unseen,
        unseen_top1=top1,
        transfer_rare=transfer.rare if transfer else None,
        transfer_unseen=transfer.unseen if transfer else None,
        neighbours_rare=transfer.knn_rare if transfer else None,
        neighbours_unseen=transfer.knn_unseen if transfer else None,
    )


def _unseen_scores(table: pd.DataFrame, vectors: np.ndarray, attrs: np.ndarray) -> tuple[float | None, float | None]:
    """(Spearman over unseen × seen pairs, top-1 agreement) — see :class:`SceneScores`."""
    text_sims, attr_sims, hits = [], [], []
    seen = table["seen"].to_numpy(bool)
    for rows in table.groupby("feature", sort=True).indices.values():
        old = seen[rows]
        if old.all() or not old.any():
            continue
        x = np.asarray(vectors, np.float64)[rows]
        t = cosine_matrix(x - x.mean(0))[~old][:, old]  # unseen × seen
        a = cosine_matrix(attrs[rows])[~old][:, old]
        text_sims.append(t.ravel())
        attr_sims.append(a.ravel())
        hits.extend(t.argmax(1) == a.argmax(1))
    if not hits:
        return None, None
    return _spearman(np.concatenate(text_sims), np.concatenate(attr_sims)), float(np.mean(hits))


def _warn(msg: str) -> None:
    print(f"larr: warning: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- evaluation


def evaluation_texts(heldout: dict[str, EvalSet], scene: pd.DataFrame | None) -> list[str]:
    """Every distinct text any metric needs, so each model encodes each text once."""
    texts: dict[str, None] = {}
    for es in heldout.values():
        texts.update(dict.fromkeys(es.queries))
        texts.update(dict.fromkeys(es.candidates))
    if scene is not None:
        texts.update(dict.fromkeys(scene["text"]))
    return list(texts)


def score_model(encode: EncodeFn, heldout: dict[str, EvalSet], scene: pd.DataFrame | None,
                rare_below: int | None = None, temperature: float = DEFAULT_TEMPERATURE) -> dict[str, Any]:
    """All metrics of one encoder: {'recall@10': {type: v}, 'mrr': {type: v}, 'scene': SceneScores}."""
    texts = evaluation_texts(heldout, scene)
    vecs = encode(texts)
    row = {t: i for i, t in enumerate(texts)}

    def v(batch: list[str]) -> np.ndarray:
        return vecs[[row[t] for t in batch]]

    out: dict[str, Any] = {f"recall@{K}": {}, "mrr": {}}
    for kind, es in heldout.items():
        if len(es) == 0:
            continue
        m = retrieval_metrics(v(es.queries), v(es.candidates), es.targets, es.exclude, K)
        out[f"recall@{K}"][kind] = m[f"recall@{K}"]
        out["mrr"][kind] = m["mrr"]
    if scene is not None:
        out["scene"] = scene_semantics(scene, v(scene["text"].tolist()), rare_below, temperature)
    return out


def evaluate(cfg: Config, run_dir: Path, data_dir: Path, data: PairData, progress: bool = False,
             models: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Score every available model (default: ``contrastive.eval_models``); returns the ``stage2``
    report fields (metric → pair type → model)."""
    models = tuple(cfg.contrastive.eval_models) if models is None else models
    scene = scene_value_table(data_dir)
    if scene is None:
        print(f"larr: note: no {SCENE_ATTRIBUTES_FILE} in {data_dir} (hidden scene attributes exist only in "
              "`larr data synth` worlds): stage-2 scene-semantics scores skipped", file=sys.stderr, flush=True)
    available = []
    for name in models:
        try:
            model_folder(name, cfg, run_dir)
            available.append(name)
        except EncoderUnavailable as e:
            _warn(f"{e}; the '{name}' row is skipped")
    result: dict[str, Any] = {f"recall@{K}": {}, "mrr": {}, "scene_semantics": {}, "scene_semantics_per_feature": {},
                              "scene_semantics_macro": {}, "scene_cosine_mean": {}, "scene_semantics_unseen": {},
                              "scene_unseen_top1": {}, "scene_transfer_rare": {}, "scene_transfer_unseen": {},
                              "scene_neighbours_rare": {}, "scene_neighbours_unseen": {}}
    for name in available:
        scores = score_model(load_encoder(name, cfg, run_dir, progress, eval_settings(cfg)).encode, data.heldout, scene,
                             cfg.experiment.rare_below, cfg.rec.impute_temperature)
        gc.collect()  # one LLM in memory at a time
        for metric in (f"recall@{K}", "mrr"):
            for kind, value in scores[metric].items():
                result[metric].setdefault(kind, {})[name] = round(value, 4)
        if scene is not None:
            sc: SceneScores = scores["scene"]
            result["scene_semantics"][name] = _round(sc.pooled)
            result["scene_semantics_macro"][name] = _round(sc.macro)
            result["scene_cosine_mean"][name] = _round(sc.mean_cosine)
            result["scene_semantics_unseen"][name] = _round(sc.unseen)
            result["scene_unseen_top1"][name] = _round(sc.unseen_top1)
            result["scene_transfer_rare"][name] = _round(sc.transfer_rare)
            result["scene_transfer_unseen"][name] = _round(sc.transfer_unseen)
            result["scene_neighbours_rare"][name] = _round(sc.neighbours_rare)
            result["scene_neighbours_unseen"][name] = _round(sc.neighbours_unseen)
            for feature, value in sc.per_feature.items():
                result["scene_semantics_per_feature"].setdefault(feature, {})[name] = _round(value)
    result["heldout_pairs"] = {k: len(v) for k, v in data.heldout.items()}
    return result


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def print_tables(result: dict[str, Any], console: Any) -> None:
    """Rich tables: retrieval per pair type × model, then scene semantics per model."""
    from rich.table import Table

    names = [m for m in MODELS if any(m in d for d in result.get(f"recall@{K}", {}).values())
             or m in result.get("scene_semantics", {})]
    t = Table(title=f"stage 2: held-out pairs (recall@{K} / MRR)")
    t.add_column("pair type")
    for m in names:
        t.add_column(m, justify="right")
    for kind in PAIR_TYPES:
        if kind not in result.get(f"recall@{K}", {}):
            continue
        r, q = result[f"recall@{K}"][kind], result["mrr"][kind]
        t.add_row(f"{kind} (n={result.get('heldout_pairs', {}).get(kind, '?')})",
                  *(f"{r[m]:.3f} / {q[m]:.3f}" if m in r else "–" for m in names))
    console.print(t)
    sem = result.get("scene_semantics") or {}
    if sem:
        s = Table(title="stage 2: scene semantics (Spearman, text cosine vs hidden-attribute cosine)")
        s.add_column("feature")
        for m in names:
            s.add_column(m, justify="right")
        s.add_row("[bold]all (pooled)[/]", *(_fmt(sem.get(m)) for m in names))
        s.add_row("mean of features", *(_fmt(result.get("scene_semantics_macro", {}).get(m)) for m in names))
        s.add_row("[bold]unseen × seen values[/] (centred)",
                  *(_fmt(result.get("scene_semantics_unseen", {}).get(m)) for m in names))
        s.add_row("unseen: nearest seen value right",
                  *(_fmt(result.get("scene_unseen_top1", {}).get(m)) for m in names))
        s.add_row("[bold]transfer R²[/]: rare values",
                  *(_fmt(result.get("scene_transfer_rare", {}).get(m)) for m in names))
        s.add_row("[bold]transfer R²[/]: unseen values",
                  *(_fmt(result.get("scene_transfer_unseen", {}).get(m)) for m in names))
        s.add_row("neighbour-mix R²: rare / unseen",
                  *(f"{_fmt(result.get('scene_neighbours_rare', {}).get(m))} / "
                    f"{_fmt(result.get('scene_neighbours_unseen', {}).get(m))}" for m in names))
        for feature, vals in sorted(result.get("scene_semantics_per_feature", {}).items()):
            s.add_row(feature, *(_fmt(vals.get(m)) for m in names))
        s.add_row("[dim]mean cosine (anisotropy)[/]",
                  *(f"{result.get('scene_cosine_mean', {}).get(m, float('nan')):.3f}" for m in names))
        console.print(s)


def _fmt(x: float | None) -> str:
    """A signed scene-semantics cell (a score relative to chance: the sign is the news) or a dash;
    unlike :func:`larr.display.fmt`, which prints unsigned metrics and ``n/a``."""
    return "–" if x is None else f"{x:+.3f}"
