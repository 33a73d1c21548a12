"""Does a scene value's text vector say what the value *does* — well enough for a learnt map to carry over?

Stage 3 can only use a scene vector for a rare or never-seen value ("weather: typhoon", a landmark
opened last week) through a map it learnt on the values it saw often: vector → effect on clicks.
The stage-2 scene scores (:mod:`larr.llm.evaluate`) ask whether similar values get similar
vectors; this probe asks the stage-3 question directly, on the synthetic world's hidden answer:

1. every feature's vectors are centred on that feature's mean and divided by their mean norm —
   the scene table's own standardisation (:meth:`larr.rec.scene_table.SceneTable.standardize`);
2. a ridge regression (one map for all features, its penalty chosen by cross-validation on the
   fit values) learns vector → hidden attributes (``scene_attributes.parquet``, the effect the
   click model sums, centred on each feature's frequent-value mean) on the **frequent** values
   only: those with at least ``rare_below`` train rows, as the stage-3 slices count them;
3. it predicts the attributes of the **rare** (seen, fewer rows) and the **unseen** values.

Next to the learnt map, the imputer's rule (:class:`larr.rec.models.UnseenIDImputer`) is scored the same
way: each rare or unseen value predicted as the mix of its feature's frequent values,
``softmax(cos / τ)``-weighted — what borrowing from the nearest seen values gives (``knn_*``).

The score of each group is R² = 1 − Σ‖ŷ − y‖² / Σ‖y‖²: 1 for vectors that are the attributes,
≈ 0 or below for vectors that only tell values apart (random vectors: the map learnt on frequent
values predicts nothing for the others), and below 0 when the map carries the wrong direction.
One map for all features cannot give each feature its own scale (the world weighs weather 2.6,
an hour 0.35, and step 1 makes every feature's vectors the same size), so even vectors that *are*
the attributes stay below 1 on a synthetic world (0.70 rare / 0.73 unseen on the demo world):
read an encoder against that ceiling. It needs no CTR training (seconds per encoder) and brackets
an encoder between random and oracle (``benchmarks/value_transfer.py``) the way
``benchmarks/oracle_vectors.py`` does for stage 3 — the number to watch when changing what stage 2
puts into a value's vector.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from larr.config import RecConfig
from larr.rec.scene_table import group_moments

DEFAULT_TEMPERATURE: float = RecConfig.model_fields["impute_temperature"].default
"""τ of the neighbour mix unless told: the imputer's default (``rec.impute_temperature``)."""

ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))
"""Ridge penalties tried (cross-validated on the frequent values)."""


@dataclass
class TransferScores:
    """R² of the frequent-values map on the rare and the unseen values (None: no such values, or
    too few frequent values to fit), how many values each group holds, and the R² of the rare and
    unseen values together per feature (which features carry over)."""

    rare: float | None
    unseen: float | None
    n_fit: int
    n_rare: int
    n_unseen: int
    by_feature: dict[str, float | None] = field(default_factory=dict)
    knn_rare: float | None = None
    knn_unseen: float | None = None


def standardize_per_feature(features: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Each feature's rows centred on their mean and divided by their mean norm (the scene table's
    rule, :func:`larr.rec.scene_table.group_moments`)."""
    out = torch.from_numpy(np.asarray(vectors, np.float64).copy())
    for f in np.unique(features):
        rows = torch.from_numpy(features == f)
        mean, scale = group_moments(out[rows])
        out[rows] = (out[rows] - mean) / scale
    return out.numpy()


def _r2(pred: np.ndarray, truth: np.ndarray) -> float | None:
    total = float((truth ** 2).sum())
    return None if len(truth) == 0 or total == 0 else 1.0 - float(((pred - truth) ** 2).sum()) / total


def _neighbour_mix(features: np.ndarray, x: np.ndarray, y: np.ndarray, fit: np.ndarray, tau: float) -> np.ndarray:
    """Each row's prediction as the softmax(cos / τ) mix of its feature's fit rows' ``y`` (fit rows: their own)."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = y.copy()
    for f in np.unique(features[fit]):
        pool, ask = np.flatnonzero((features == f) & fit), np.flatnonzero((features == f) & ~fit)
        logits = unit[ask] @ unit[pool].T / tau
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        out[ask] = (w / w.sum(axis=1, keepdims=True)) @ y[pool]
    return out


def value_transfer(table: pd.DataFrame, vectors: np.ndarray, attr_cols: list[str], rare_below: int,
                   min_fit: int = 10, temperature: float = DEFAULT_TEMPERATURE) -> TransferScores:
    """The probe above. ``table``: one row per scene value with ``feature``, ``train_rows`` and the
    attribute columns ``attr_cols``; ``vectors``: each value's text vector, in the table's order;
    ``temperature``: τ of the neighbour mix (``rec.impute_temperature``)."""
    from sklearn.linear_model import RidgeCV

    features = table["feature"].astype(str).to_numpy()
    rows = table["train_rows"].to_numpy(np.int64)
    fit, unseen = rows >= rare_below, rows == 0
    rare = ~fit & ~unseen
    x = standardize_per_feature(features, vectors)
    y = table[attr_cols].to_numpy(np.float64).copy()
    for f in np.unique(features):
        own = features == f
        if (own & fit).any():
            y[own] -= y[own & fit].mean(0)
    keep = np.isin(features, np.unique(features[fit]))  # a feature without frequent values has no known mean
    rare, unseen = rare & keep, unseen & keep
    if fit.sum() < min_fit:
        return TransferScores(None, None, int(fit.sum()), int(rare.sum()), int(unseen.sum()))
    model = RidgeCV(alphas=ALPHAS, fit_intercept=False).fit(x[fit], y[fit])
    pred = model.predict(x)
    held = rare | unseen
    mix = _neighbour_mix(features, x, y, fit, temperature)
    return TransferScores(_r2(pred[rare], y[rare]), _r2(pred[unseen], y[unseen]),
                          int(fit.sum()), int(rare.sum()), int(unseen.sum()),
                          {str(f): _r2(pred[held & (features == f)], y[held & (features == f)])
                           for f in np.unique(features[held])},
                          _r2(mix[rare], y[rare]), _r2(mix[unseen], y[unseen]))
