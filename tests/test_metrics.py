from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from larr.metrics import auc, ctr_metrics, gauc, logloss, mrr, recall_at_k


def test_auc_and_logloss_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1).round(2)  # rounded: many ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert logloss(y, p) == pytest.approx(log_loss(y, p))
    with pytest.raises(ValueError, match="single class"):
        auc(np.ones(3), np.array([0.1, 0.2, 0.3]))


def test_gauc_hand_computed_skips_one_class_user():
    # user a: positive 0.9 beats 0.5, loses to 0.95           -> AUC 1/2,  3 rows
    # user b: 0.8 beats 0.2 and 0.3; 0.3 beats 0.2, ties 0.3   -> AUC 3.5/4, 4 rows
    # user c: clicks only                                      -> skipped
    y = np.array([1, 0, 0, 1, 0, 1, 0, 1, 1])
    p = np.array([0.9, 0.5, 0.95, 0.8, 0.2, 0.3, 0.3, 0.1, 0.7])
    g = np.array(["a", "a", "a", "b", "b", "b", "b", "c", "c"])
    assert gauc(y, p, g) == pytest.approx((3 * 0.5 + 4 * 0.875) / 7)
    with pytest.raises(ValueError, match="no group"):
        gauc(y[7:], p[7:], g[7:])


def test_gauc_matches_per_group_sklearn_and_is_fast():
    rng = np.random.default_rng(1)
    n = 200_000
    g = rng.integers(0, 5_000, n)
    y = rng.integers(0, 2, n)
    p = (0.2 * y + rng.random(n)).round(3)
    t0 = time.perf_counter()
    got = gauc(y, p, g)
    assert time.perf_counter() - t0 < 2.0
    aucs, weights = [], []
    for u in range(300):  # a sample of groups, checked one by one against sklearn
        m = g == u
        if 0 < y[m].sum() < m.sum():
            aucs.append(roc_auc_score(y[m], p[m]))
            weights.append(m.sum())
    sub = np.isin(g, np.arange(300))
    assert gauc(y[sub], p[sub], g[sub]) == pytest.approx(np.average(aucs, weights=weights))
    assert 0.5 < got < 1.0


def test_ctr_metrics_reports_undefined_as_none():
    m = ctr_metrics(np.array([1, 1]), np.array([0.4, 0.6]), np.array([0, 0]))
    assert m["auc"] is None and m["gauc"] is None and m["n"] == 2 and m["logloss"] > 0


def test_retrieval_metrics():
    scores = np.array([[0.9, 0.1, 0.2], [0.1, 0.2, 0.9], [0.5, 0.5, 0.1]])
    targets = np.array([0, 0, 1])  # ranks 1, 3, 2 (the tie counts against the target)
    assert recall_at_k(scores, targets, 1) == pytest.approx(1 / 3)
    assert recall_at_k(scores, targets, 2) == pytest.approx(2 / 3)
    assert mrr(scores, targets) == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)


def test_cosine_matrix_of_rows_with_a_zero_row() -> None:
    from larr.metrics import cosine_matrix

    c = cosine_matrix(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    assert c[0, 1] == pytest.approx(2 ** -0.5) and c[1, 1] == pytest.approx(1.0)
    assert (c[2] == 0).all() and (c[:, 2] == 0).all()  # a zero row is similar to nothing
