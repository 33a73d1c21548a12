"""The measuring instrument of stage 3: slices, paired statistics, per-value results."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from larr.rec.paired import paired_table, t_interval
from larr.rec.per_value import band_label, per_value_table
from larr.rec.slices import metric_key, rarest_count, slice_masks, train_counts


def test_t_interval_matches_a_hand_computed_example():
    # deltas 0.01, 0.02, 0.03: mean 0.02, sd 0.01, t(0.975, 2) = 4.302653 → half-width 0.0248414
    e = t_interval([0.01, 0.02, 0.03])
    assert e["mean"] == pytest.approx(0.02)
    assert e["lo"] == pytest.approx(0.02 - 4.302653 * 0.01 / math.sqrt(3), abs=1e-6)
    assert e["hi"] == pytest.approx(0.02 + 4.302653 * 0.01 / math.sqrt(3), abs=1e-6)
    assert e["significant"] is False  # the interval (−0.0048, 0.0448) contains 0
    assert t_interval([0.010, 0.011, 0.012])["significant"] is True
    assert t_interval([-0.003, -0.0031, -0.0029])["hi"] < 0
    one = t_interval([0.5])
    assert one["mean"] == 0.5 and one["lo"] is None and one["significant"] is False


def _metrics(auc_all: float, auc_unseen: float | None) -> dict:
    m = {metric_key(s, n): {"auc": auc_all, "n": 10} for s in ("test", "valid") for n in ("all", "rare", "frequent")}
    m.update({metric_key(s, "unseen"): {"auc": auc_unseen, "n": 3} for s in ("test", "valid")})
    return m


def test_paired_table_differences_are_per_seed_and_skip_missing_values():
    done = {("base_scene_ids", 0): _metrics(0.70, 0.60), ("base_scene_ids", 1): _metrics(0.72, 0.62),
            ("larr", 0): _metrics(0.71, 0.64), ("larr", 1): _metrics(0.73, None)}
    table = paired_table(done, ["base_scene_ids", "larr"], [0, 1])
    assert set(table) == {"vs_base_scene_ids"}  # generic_text was not trained: no such reference
    e = table["vs_base_scene_ids"]["larr"]
    assert e["test"]["deltas"] == pytest.approx([0.01, 0.01])
    assert e["test"]["significant"] is True  # the same +0.01 on every seed: an interval of width ~0 away from 0
    assert e["test_unseen"]["deltas"] == pytest.approx([0.04]) and e["test_unseen"]["lo"] is None


def _toy_split(x_scene: list[list[int]], unseen: list[bool]) -> dict[str, torch.Tensor]:
    x = torch.tensor([[0, *r] for r in x_scene], dtype=torch.long)  # column 0: a non-scene field
    return {"x": x, "unseen": torch.tensor(unseen)}


def test_slices_partition_rows_by_the_rarest_seen_value():
    train = _toy_split([[1, 1]] * 30 + [[2, 1]] * 5 + [[1, 2]] * 25, [False] * 60)
    cols, sizes = [1, 2], [1, 4, 4]
    counts = train_counts(train["x"], cols, sizes)
    assert counts[0].tolist() == [0, 55, 5, 0] and counts[1].tolist() == [0, 35, 25, 0]
    test = _toy_split([[1, 1], [2, 1], [1, 2], [0, 1], [1, 0], [3, 1]], [False, False, False, True, True, True])
    assert rarest_count(test["x"], cols, counts).tolist()[:3] == [35, 5, 25]
    masks = slice_masks(test, cols, counts, rare_below=20)
    assert masks["unseen"].tolist() == [False, False, False, True, True, True]
    assert masks["rare"].tolist() == [False, True, False, False, False, False]
    assert masks["frequent"].tolist() == [True, False, True, False, False, False]
    assert (masks["unseen"].int() + masks["rare"].int() + masks["frequent"].int()).tolist() == [1] * 6
    assert slice_masks(test, cols, counts, rare_below=30)["rare"].tolist() == [False, True, True, False, False, False]


class _Spec:
    """The parts of a FeatureSpec per_value_table reads: one scene feature 'weather' with 3 values."""
    field_names = ["user_id", "scene:weather"]
    vocab_sizes = [5, 3]
    scene_names = ["weather"]
    scene_cols = [1]
    scene_values = {"weather": ["rain", "sun", "typhoon"]}

    scene_texts = {"weather": ["weather: rain", "weather: sun", "weather: typhoon"]}

    @classmethod
    def scene_table(cls):
        from larr.rec.scene_table import SceneTable

        return SceneTable.per_feature(cls.scene_names, cls.scene_values, cls.scene_texts)


def test_per_value_table_scores_each_never_seen_value_and_band():
    rng = np.random.default_rng(0)
    n = 200
    # test: rows 0..99 typhoon (table row 3, ID 0 = unseen), 100..199 rain (row 1, ID 1)
    scene = torch.tensor([[3]] * 100 + [[1]] * 100)
    x = torch.tensor([[0, 0]] * 100 + [[0, 1]] * 100)
    y = torch.tensor(rng.integers(0, 2, n), dtype=torch.float32)
    splits = {"test": {"x": x, "scene": scene, "label": y, "unseen": x[:, 1] == 0},
              "train": {"x": torch.tensor([[0, 1]] * 8 + [[0, 2]] * 50)},
              "valid": {"x": torch.tensor([[0, 1]]), "scene": torch.tensor([[1]])}}
    good, noise = y.numpy() * 0.8 + 0.1, rng.random(n)
    preds = {"base_scene_ids": [noise, noise], "larr": [good, good]}
    t = per_value_table(_Spec, splits, preds, "base_scene_ids", {"weather: typhoon": "rain"})
    (v,) = t["values"]
    assert (v["feature"], v["value"], v["kind"], v["rows"], v["nearest_seen"]) == ("weather", "typhoon", "test only", 100,
                                                                                    "rain")
    assert v["auc"]["larr"] == pytest.approx(1.0) and v["delta"]["larr"] > 0.3
    band = {b["band"]: b for b in t["bands"]}
    assert band[band_label(5, 20)]["rows"] == 100  # rain: seen 8 times in train
    assert band[band_label(1, 5)]["rows"] == 0 and band[band_label(1, 5)]["auc"]["larr"] is None


def test_report_md_renders_stage_tables_and_cuts_nothing_off():
    from larr.report_md import render_markdown

    long_why = "RUN/embeddings/larr: whole-scene vectors incomplete (13034 keys missing from the embedding store: " \
               + "['scene_whole/" + "x" * 300 + "'] and 13031 more (run `larr embed`))"
    report = {
        "ctr": {"base_scene_ids": {"auc": 0.75, "auc_std": 0.001, "n_seeds": 2},
                "larr": {"auc": 0.76, "auc_std": 0.002, "n_seeds": 2, "delta_auc": 0.01}},
        "stage3": {"models": ["base_scene_ids", "larr"], "seeds": [0, 1], "skipped": {"whole_text": long_why}},
        "paired": {"vs_base_scene_ids": {"larr": {k: t_interval([0.010, 0.011, 0.012]) for k in
                                                  ("test", "test_unseen", "test_rare", "test_frequent", "valid",
                                                   "valid_unseen", "valid_rare")}}},
        "stage1": {"ppl_before": 219.8, "ppl_after": 22.9, "steps": 30, "world_size": 1},
        "stage2": {"recall@10": {"user_user": {"minilm": 0.165, "larr": 0.15}},
                   "mrr": {"user_user": {"minilm": 0.07, "larr": 0.065}},
                   "scene_semantics": {"minilm": -0.04, "larr": -0.1},
                   "scene_semantics_per_feature": {"weather": {"minilm": 0.3, "larr": 0.4}},
                   "heldout_pairs": {"user_user": 200}, "steps": 500,
                   "pairs": {"user_user": {"train": 1500, "heldout": 200, "rule": "jaccard ≥ 0.2 " * 30}}},
        "timings": {"data": 1.5, "total": 700.0},
    }
    md = render_markdown(report)
    assert "..." not in md and "{" not in md  # no dictionary dumped, none cut off
    assert "| user_user (n=200) | 0.165 / 0.070 | 0.150 / 0.065 |" in md
    assert "| `ppl_after` | 22.9000 |" in md and "| `pairs.user_user.train` | 1,500 |" in md
    assert "13,034 vectors missing" in md and "whole_budget_s=null" in md and "x" * 50 not in md
    assert "**+0.0110 [" in md  # significant interval in bold
