"""The one scene-table object: keys and rows, the matrix, standardisation, its statistics, serving's view."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch

from larr import embed, layout
from larr.data.scene import scene_key, whole_scene_key
from larr.rec.features import WHOLE_SEP, build_features, embed_catalogue
from larr.rec.scene_table import SceneTable, TableStats
from larr.store import DiskStore
from test_embed import stub_vector


def _store(tmp_path, spec) -> DiskStore:
    store = DiskStore(tmp_path / "emb")
    for table in (spec.scene_table(), spec.scene_table(whole=True)):
        store.put_many({k: stub_vector(t) for k, t in table.key_texts().items()})
    return store


def test_keys_rows_and_groups_follow_the_spec(tiny_data):
    spec, splits = build_features(tiny_data)
    table = spec.scene_table()
    assert table.kind == "feature" and table.size == 1 + sum(len(v) for v in spec.scene_values.values())
    assert table.groups == {"weather": (1, 3), "hour": (3, 5)}
    assert table.row("scene/weather/heatwave") == table.start("weather") == 1 and table.row("scene/hour/19") == 4
    assert table.row("scene/weather/typhoon") == 0  # not in the table: the unknown row
    whole = spec.scene_table(whole=True)
    assert whole.groups == {"whole": (1, 3)} and whole.keys == [whole_scene_key(t) for t in spec.whole_texts]
    # the rows training gathers are the rows of the values' keys (what serving looks up), and so for whole scenes
    imps = pq.read_table(tiny_data / "impressions.parquet").to_pylist()
    for split in ("train", "test"):
        rows = [r for r in imps if r["split"] == split]
        want = [[table.row(scene_key(f.name, r[f.name])) for f in spec.scene] for r in rows]
        assert splits[split]["scene"].tolist() == want
        texts = [WHOLE_SEP.join(f.render(r[f.name]) for f in spec.scene) for r in rows]
        assert splits[split]["whole"].tolist() == [whole.row(whole_scene_key(t)) for t in texts]


def test_embed_texts_are_exactly_the_tables_keys_and_texts(tiny_data):
    spec, _ = build_features(tiny_data)
    scene, whole, seen = embed_catalogue(tiny_data)
    assert scene == spec.scene_table() and whole == spec.scene_table(whole=True)
    assert seen == set(next(f.vocab for f in spec.fields if f.name == "shop_id"))
    texts = embed.collect_texts(tiny_data, shops="none")
    assert texts.scene == spec.scene_table().key_texts() and texts.whole == spec.scene_table(whole=True).key_texts()


def test_stats_round_trip_and_raw_vectors_map_onto_the_training_rows(tiny_data, tmp_path):
    spec, _ = build_features(tiny_data)
    store = _store(tmp_path, spec)
    for table in (spec.scene_table(), spec.scene_table(whole=True)):
        raw = table.matrix(store)
        assert raw.shape == (table.size, 8) and raw[0].abs().sum() == 0
        trained = table.standardize(raw)
        stats = table.stats(raw)
        stats.save(tmp_path / layout.SCENE_STATS_FILE)
        loaded = TableStats.load(tmp_path / layout.SCENE_STATS_FILE)
        assert loaded.groups.keys() == stats.groups.keys()
        for g, (mean, scale) in stats.groups.items():
            np.testing.assert_array_equal(loaded.groups[g][0], mean)
            assert loaded.groups[g][1] == scale
        for key, text in table.key_texts().items():  # what serving does with a store (or LLM) vector
            group = key.split("/")[1] if table.kind == "feature" else "whole"
            mapped = loaded.apply(group, stub_vector(text))
            assert mapped.dtype == np.float32
            np.testing.assert_allclose(mapped, trained[table.row(key)].numpy(), rtol=1e-6, atol=1e-7)
    assert TableStats.load(tmp_path / "absent.safetensors").groups == {}  # a raw-vector model
    np.testing.assert_array_equal(TableStats().apply("weather", np.ones(3)), np.ones(3, np.float32))


def test_standardize_is_bit_identical_to_the_stats_arithmetic():
    torch.manual_seed(0)
    raw = torch.cat([torch.zeros(1, 4), torch.randn(5, 4)])
    table = SceneTable.per_feature(["a", "b"], {"a": ["x", "y"], "b": ["1", "2", "3"]},
                                   {"a": ["a: x", "a: y"], "b": ["b: 1", "b: 2", "b: 3"]})
    out = table.standardize(raw)
    stats = table.stats(raw)
    assert torch.equal(out[0], raw[0])
    for g, (start, stop) in table.groups.items():
        np.testing.assert_array_equal(stats.apply(g, raw[start:stop].numpy()), out[start:stop].numpy())


def test_serving_keys_rows_and_vectors_agree_with_training(tmp_path_factory):
    from serve_helpers import copy_store, request_rows, serve_run

    from larr.rec.train import load_features
    from larr.serve.ranker import Ranker

    run = serve_run(tmp_path_factory)
    ranker = Ranker.load(run, store=str(copy_store(run, tmp_path_factory.mktemp("st") / "larr")), encoder=None)
    try:
        scenes = ranker.scenes
        assert scenes.table == ranker.spec.scene_table()
        _, splits, _ = load_features(run)
        for req in request_rows(run, unseen=False, n=2):
            values = ranker.indexer.scene_values(req["scene"])
            want = splits["test"]["scene"][int(req["rows"][0])].tolist()
            assert [scenes.table.row(scene_key(f.name, values[f.name])) for f in ranker.spec.scene] == want
            vecs, sources = ranker.scene_input(values)
            assert set(sources.values()) == {"table"}
            np.testing.assert_array_equal(vecs[0], scenes.vectors[want])
            raw = scenes.store.get_many([scenes.table.keys[r - 1] for r in want])
            for f, r in zip(ranker.spec.scene, want):  # a store vector maps onto the model's own row
                got = scenes.stats.apply(f.name, raw[scenes.table.keys[r - 1]])
                np.testing.assert_allclose(got, scenes.vectors[r], rtol=1e-5, atol=1e-6)
    finally:
        ranker.close()
