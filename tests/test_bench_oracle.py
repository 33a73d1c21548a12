"""benchmarks/oracle_vectors.py: a copy of a run whose scene vectors are the world's hidden attributes, or noise."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench_helpers import load_benchmark
from larr import layout
from larr.data.scene import scene_key
from larr.llm.evaluate import SCENE_ATTRIBUTES_FILE, attribute_columns
from larr.store.disk import DiskStore


def _vectors(run):
    store = DiskStore(layout.store_dir(run, "minilm"))
    return store, store.get_many(store.keys())


def test_the_oracle_copy_holds_each_values_hidden_attributes_and_leaves_the_run_alone(quick_run, tmp_path):
    oracle = load_benchmark("oracle_vectors")
    before_store, before = _vectors(quick_run)
    n = oracle.build_copy(quick_run, tmp_path / "copy", "oracle", "minilm")
    store, after = _vectors(tmp_path / "copy")
    attrs = pd.read_parquet(layout.data_dir(quick_run) / SCENE_ATTRIBUTES_FILE)
    cols = attribute_columns(attrs)
    scene = [k for k in after if k.startswith("scene/")]
    assert n == len(scene) > 0 and store.encoder == "oracle:scene-attributes"
    for f, v, row in zip(attrs["feature"], attrs["value"], attrs[cols].to_numpy()):
        if scene_key(f, v) in after:
            np.testing.assert_allclose(after[scene_key(f, v)][: len(cols)], row, atol=1e-6)
    assert all(np.array_equal(after[k], before[k]) for k in after if not k.startswith("scene/"))  # whole scenes kept
    _, again = _vectors(quick_run)  # the source run is untouched
    assert before_store.encoder == DiskStore(layout.store_dir(quick_run, "minilm")).encoder
    assert all(np.array_equal(again[k], before[k]) for k in before)


def test_the_random_copy_tells_values_apart_and_nothing_else(quick_run, tmp_path):
    oracle = load_benchmark("oracle_vectors")
    oracle.build_copy(quick_run, tmp_path / "copy", "random", "minilm")
    _, after = _vectors(tmp_path / "copy")
    scene = np.stack([v for k, v in after.items() if k.startswith("scene/")])
    assert len(np.unique(scene.round(4), axis=0)) == len(scene)
    assert abs(float(scene.mean())) < 0.1 and 0.8 < float(scene.std()) < 1.2
    with pytest.raises(SystemExit, match="exists"):
        oracle.build_copy(quick_run, tmp_path / "copy", "random", "minilm")
