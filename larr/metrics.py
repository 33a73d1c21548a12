"""Offline metrics: AUC, GAUC, logloss for CTR; recall@k and MRR for retrieval; cosine similarity.

GAUC is the metric LARR (and most industrial CTR work) reports: a ranking is only ever shown
to one user at a time, so AUC is computed within each user and averaged, weighted by the
user's number of impressions. Users whose impressions are all clicks or all non-clicks have
no defined AUC and are skipped (their weight too).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score


def _as_arrays(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y).ravel(), np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {y.shape[0]} vs {p.shape[0]}")
    return y, p


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC; raises ``ValueError`` when ``y`` holds a single class (AUC is undefined)."""
    y, p = _as_arrays(y, p)
    if np.unique(y).size < 2:
        raise ValueError("AUC is undefined: labels hold a single class")
    return float(roc_auc_score(y, p))


def gauc(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> float:
    """Per-group AUC, weighted by the group's row count, over groups that hold both classes.

    Vectorised via the rank-sum (Mann-Whitney) form of AUC: within a group,
    ``AUC = (sum of positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, with tied
    scores given their average rank — the same value ``roc_auc_score`` gives per group.
    Raises ``ValueError`` when no group holds both classes.
    """
    y, p = _as_arrays(y, p)
    groups = np.asarray(groups).ravel()
    if groups.shape != y.shape:
        raise ValueError(f"groups and labels differ in length: {groups.shape[0]} vs {y.shape[0]}")
    df = pd.DataFrame({"g": groups, "y": (y > 0).astype(np.int64), "p": p})
    df["rank"] = df.groupby("g", sort=False)["p"].rank(method="average")
    df["pos_rank"] = df["rank"] * df["y"]
    per = df.groupby("g", sort=False).agg(n=("y", "size"), n_pos=("y", "sum"), rank_sum=("pos_rank", "sum"))
    n_neg = per["n"] - per["n_pos"]
    ok = (per["n_pos"] > 0) & (n_neg > 0)
    if not ok.any():
        raise ValueError("GAUC is undefined: no group holds both classes")
    per, n_neg = per[ok], n_neg[ok]
    group_auc = (per["rank_sum"] - per["n_pos"] * (per["n_pos"] + 1) / 2) / (per["n_pos"] * n_neg)
    return float(np.average(group_auc, weights=per["n"]))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``p`` (clipped away from 0 and 1 by sklearn)."""
    y, p = _as_arrays(y, p)
    return float(log_loss(y, p, labels=[0, 1]))


def ctr_metrics(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> dict[str, float | int | None]:
    """AUC, GAUC, logloss and row count of one evaluation set; undefined values are ``None``."""
    out: dict[str, float | int | None] = {"n": int(np.asarray(y).size), "logloss": logloss(y, p)}
    for name, fn in (("auc", lambda: auc(y, p)), ("gauc", lambda: gauc(y, p, groups))):
        try:
            out[name] = fn()
        except ValueError:
            out[name] = None  # JSON null: the slice is too small or one-sided
    return out


# ---------------------------------------------------------------------------- retrieval


def _target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each query's target among its candidates (ties count against it)."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets).ravel()
    target_score = scores[np.arange(len(targets)), targets]
    return 1 + (scores > target_score[:, None]).sum(axis=1) + (
        (scores == target_score[:, None]).sum(axis=1) - 1)


def recall_at_k(scores: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of queries whose target is in the top ``k``; ``scores`` is (queries, candidates)."""
    return float((_target_ranks(scores, targets) <= k).mean())


def mrr(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean reciprocal rank of each query's target among its candidates."""
    return float((1.0 / _target_ranks(scores, targets)).mean())


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    """(N, N) cosine similarities of the rows of ``x`` (a zero row: 0 with everything)."""
    x = np.asarray(x, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return x @ x.T
