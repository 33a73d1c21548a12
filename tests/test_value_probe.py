"""The scene-transfer probe: a map vector → attributes learnt on frequent values, scored on rare and unseen ones."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from larr.llm import evaluate as E
from larr.llm.value_probe import standardize_per_feature, value_transfer

COLS = ["warmth", "speed", "sharing"]


def _table(seed: int = 0) -> pd.DataFrame:
    """40 landmarks (20 frequent, 10 rare, 10 unseen) and 6 weathers (4 frequent, 2 unseen)."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "feature": ["landmark"] * 40 + ["weather"] * 6,
        "value": [f"place {i}" for i in range(40)] + [f"w{i}" for i in range(6)],
        "train_rows": 20 * [500] + 10 * [5] + 10 * [0] + [300, 300, 300, 300, 0, 0],
    })
    attrs = rng.normal(size=(len(table), len(COLS)))
    for c, col in zip(COLS, attrs.T):
        table[c] = col
    return table


def _oracle(table: pd.DataFrame, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = 1e-3 * rng.normal(size=(len(table), dim))
    v[:, : len(COLS)] += table[COLS].to_numpy()
    return v


def test_vectors_that_are_the_attributes_transfer_and_random_ones_do_not() -> None:
    table = _table()
    perfect = value_transfer(table, _oracle(table), COLS, rare_below=100)
    assert (perfect.n_fit, perfect.n_rare, perfect.n_unseen) == (24, 10, 12)
    assert perfect.rare > 0.9 and perfect.unseen > 0.9
    assert set(perfect.by_feature) == {"landmark", "weather"} and min(perfect.by_feature.values()) > 0.8
    rng = np.random.default_rng(1)
    noise = value_transfer(table, rng.normal(size=(len(table), 16)), COLS, rare_below=100)
    assert noise.rare < 0.1 and noise.unseen < 0.1


def test_a_map_that_carries_the_wrong_direction_scores_below_zero() -> None:
    table = _table()
    v = _oracle(table)
    v[table["train_rows"].to_numpy() < 100] *= -1  # rare and unseen values written backwards
    wrong = value_transfer(table, v, COLS, rare_below=100)
    assert wrong.rare < 0 and wrong.unseen < 0 and max(wrong.by_feature.values()) < 0


def test_the_neighbour_mix_borrows_from_the_nearest_frequent_values() -> None:
    table = _table()
    fit = table.index[table["train_rows"] >= 100]
    twin = {i: fit[(i * 7) % 20] for i in range(20, 40)}  # each rare/unseen landmark copies a frequent one
    cols = table.columns.get_indexer(COLS)
    v = _oracle(table)
    for i, j in twin.items():
        table.iloc[i, cols] = table.iloc[j, cols].to_numpy()
        v[i] = v[j]
    near = value_transfer(table, v, COLS, rare_below=100, temperature=0.01)
    assert near.knn_rare > 0.95 and near.knn_unseen > 0.6  # the weathers have 4 frequent values to mix
    rng = np.random.default_rng(2)
    blind = value_transfer(table, rng.normal(size=(len(table), 16)), COLS, rare_below=100, temperature=0.01)
    assert blind.knn_rare < 0.1 and blind.knn_unseen < 0.1


def test_rare_below_decides_which_values_fit_the_map() -> None:
    table = _table()
    assert value_transfer(table, _oracle(table), COLS, rare_below=1000).rare is None  # nothing frequent enough
    few = value_transfer(table, _oracle(table), COLS, rare_below=400)  # 20 landmarks fit, weathers are all rare
    assert few.n_fit == 20 and few.n_unseen == 10 and few.n_rare == 10  # a feature without fit values is left out


def test_standardize_per_feature_centres_and_scales_each_feature() -> None:
    table = _table()
    x = standardize_per_feature(table["feature"].to_numpy(), _oracle(table))
    for f in ("landmark", "weather"):
        own = x[table["feature"].to_numpy() == f]
        assert np.abs(own.mean(0)).max() < 1e-9 and np.linalg.norm(own, axis=1).mean() == pytest.approx(1.0)


def test_scene_semantics_reports_the_transfer_with_train_counts() -> None:
    table = _table()
    table["seen"] = table["train_rows"] > 0
    scores = E.scene_semantics(table, _oracle(table), rare_below=100)
    assert scores.transfer_rare > 0.9 and scores.transfer_unseen > 0.9
    assert E.scene_semantics(table, _oracle(table)).transfer_rare is None  # no rare_below: not computed
