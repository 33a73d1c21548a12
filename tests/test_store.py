"""The embedding-store contract, run against every backend (disk, and Redis where
``redis-server`` is installed), then what is particular to each backend."""
from __future__ import annotations

import json

import numpy as np
import pytest

import larr.store.disk as disk
from larr.data.scene import scene_key
from larr.store import DiskStore, EmbeddingStore, StoreError, open_store, stack_vectors


def _vecs(n: int, dim: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"k{i}": rng.normal(size=dim).astype(np.float32) for i in range(n)}


@pytest.fixture(params=["disk", "redis"])
def store_at(request: pytest.FixtureRequest, tmp_path) -> str:
    """Where a fresh, empty store of each backend lives (open it with ``open_store``)."""
    if request.param == "disk":
        return str(tmp_path / "s")
    return request.getfixturevalue("fresh_redis_url")


@pytest.fixture
def any_store(store_at: str) -> EmbeddingStore:
    """A fresh, empty store of each backend."""
    with open_store(store_at) as store:
        yield store


def test_keys_are_canonical():
    assert scene_key("weather", "heavy rain") == "scene/weather/heavy rain"
    assert scene_key("hour", np.int64(12)) == scene_key("hour", 12) == scene_key("hour", "12") == "scene/hour/12"
    assert scene_key("holiday", np.bool_(True)) == "scene/holiday/true"
    assert scene_key("temp", np.float64(23.5)) == "scene/temp/23.5"


# ---------------------------------------------------------------------------- contract, every backend


def test_round_trip_and_reopen(store_at):
    items = _vecs(5)
    store = open_store(store_at, encoder="enc-a")
    assert store.dim is None and len(store) == 0 and store.keys() == []
    store.put_many(items)
    assert store.dim == 4 and store.keys() == list(items) and "k3" in store and len(store) == 5
    again = open_store(store_at, encoder="enc-a")
    assert again.dim == 4 and again.encoder == "enc-a" and len(again) == 5
    got = again.get_many(["k3", "k0"])
    assert list(got) == ["k3", "k0"]
    np.testing.assert_array_equal(got["k3"], items["k3"])
    assert got["k3"].dtype == np.float32 and got["k3"].flags.writeable
    assert open_store(store_at).encoder == "enc-a"  # opened without an encoder: adopts the store's


def test_missing_keys_absent_and_listed(any_store):
    any_store.put_many(_vecs(2))
    assert set(any_store.get_many(["k0", "nope", "k1"])) == {"k0", "k1"}
    assert any_store.get_many([]) == {} and any_store.get_many(["nope"]) == {}
    assert any_store.missing(["nope", "k0", "nope", "new"]) == ["nope", "new"]
    assert "nope" not in any_store and 0 not in any_store
    with pytest.raises(KeyError, match="1 keys missing"):
        stack_vectors(any_store, ["k0", "nope"])
    assert stack_vectors(any_store, ["k1", "k0"]).shape == (2, 4)


def test_overwrite_and_append_keep_rows_aligned(store_at):
    with open_store(store_at, autoflush=False) as store:
        for i in range(40):  # many small puts grow the buffer
            store.put_many({f"k{i}": np.full(3, i, np.float32)})
        store.put_many({"k7": np.full(3, -1, np.float32)})
    again = open_store(store_at)
    assert len(again) == 40 and again.keys() == [f"k{i}" for i in range(40)]  # overwrite keeps its place
    got = again.get_many(["k7", "k39", "k0"])
    assert got["k7"][0] == -1 and got["k39"][0] == 39 and got["k0"][0] == 0


def test_large_batches(any_store):
    items = _vecs(2500, dim=8)  # more than one server batch
    any_store.put_many(items)
    keys = list(items)[::-1]
    np.testing.assert_array_equal(stack_vectors(any_store, keys), np.stack([items[k] for k in keys]))
    assert any_store.missing([*keys, "x"]) == ["x"]


def test_dim_and_encoder_mismatch_are_errors(store_at):
    store = open_store(store_at, dim=4, encoder="enc-a")
    with pytest.raises(StoreError, match="shape"):
        store.put_many({"x": np.zeros(5, np.float32)})
    with pytest.raises(StoreError, match="non-finite"):
        store.put_many({"x": np.array([0, np.nan, 0, 0], np.float32)})
    with pytest.raises(StoreError, match="keys are strings"):
        store.put_many({3: np.zeros(4, np.float32)})
    store.put_many({})  # nothing to do
    assert len(store) == 0
    store.put_many(_vecs(1))
    with pytest.raises(StoreError, match="dim 4, asked for dim 8"):
        open_store(store_at, dim=8)
    with pytest.raises(StoreError, match="encoder 'enc-a', not 'enc-b'"):
        open_store(store_at, encoder="enc-b")


def test_two_handles_share_one_store(store_at):
    """What a reader sees after reopening (disk) — and, for Redis, without reopening."""
    writer = open_store(store_at)
    writer.put_many(_vecs(3))
    reader = open_store(store_at)
    assert reader.keys() == ["k0", "k1", "k2"] and reader.dim == 4


def test_not_a_location():
    with pytest.raises(StoreError, match="not a store location"):
        open_store("http://localhost/x")


# ---------------------------------------------------------------------------- disk


def test_disk_meta_json_and_single_write(tmp_path):
    with DiskStore(tmp_path / "s", encoder="enc-a", autoflush=False) as store:
        store.put_many(_vecs(2))
        assert not (tmp_path / "s" / "vectors.safetensors").exists()  # written once, on exit
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["dim"] == 4 and meta["encoder"] == "enc-a"


def test_failed_write_leaves_old_store_readable(tmp_path, monkeypatch):
    old = _vecs(3)
    DiskStore(tmp_path / "s").put_many(old)

    def crash(tensors, path, metadata=None):
        with open(path, "wb") as f:  # half a file, then the process "dies"
            f.write(b"\x00garbage")
        raise OSError("disk full")

    monkeypatch.setattr(disk, "save_file", crash)
    store = DiskStore(tmp_path / "s")
    with pytest.raises(OSError, match="disk full"):
        store.put_many(_vecs(5, seed=1))
    monkeypatch.undo()
    reopened = DiskStore(tmp_path / "s")
    assert reopened.keys() == list(old)
    np.testing.assert_array_equal(reopened.get_many(["k2"])["k2"], old["k2"])
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["meta.json", "vectors.safetensors"]


def test_corrupt_file_is_a_one_line_error(tmp_path):
    DiskStore(tmp_path / "s").put_many(_vecs(2))
    (tmp_path / "s" / "vectors.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(StoreError, match="unreadable store vectors"):
        DiskStore(tmp_path / "s")


def test_neighbours_rank_within_the_key_group_after_centring(tmp_path):
    """A shared offset (what one feature's texts have in common) is removed; other groups never rank."""
    from typer.testing import CliRunner

    from larr.cli import app
    from larr.store.copy import neighbours

    common = np.array([10.0, 0, 0, 0])
    vecs = {scene_key("weather", "typhoon"): common + [0, 1, 0.1, 0], scene_key("weather", "storm"): common + [0, 1, 0, 0],
            scene_key("weather", "sunny"): common + [0, -1, 0, 0], scene_key("weather", "fog"): common + [0, 0, 0, 1],
            scene_key("hour", "12"): np.array([0, 1, 0.1, 0.0])}
    with DiskStore(tmp_path / "s", dim=4, encoder="t:1") as st:
        st.put_many({k: v.astype(np.float32) for k, v in vecs.items()})
    near = neighbours(tmp_path / "s", "scene/weather/typhoon", k=3)
    assert [k for k, _ in near] == ["scene/weather/storm", "scene/weather/fog", "scene/weather/sunny"]
    assert near[0][1] > 0.9 and near[2][1] < -0.5
    raw = neighbours(tmp_path / "s", "scene/weather/typhoon", k=3, centre=False)
    assert min(score for _, score in raw) > 0.98  # uncentred: every value looks alike
    with DiskStore(tmp_path / "slash", dim=4, encoder="t:1") as st:  # "/" inside values: grouped by feature all the same
        st.put_many({scene_key("weather", v): np.eye(4, dtype=np.float32)[i] for i, v in enumerate(["rain/snow", "a/b/c", "fog"])})
    assert {k for k, _ in neighbours(tmp_path / "slash", "scene/weather/rain/snow")} == {"scene/weather/a/b/c",
                                                                                        "scene/weather/fog"}
    with pytest.raises(StoreError, match="no key 'scene/weather/hail'"):
        neighbours(tmp_path / "s", "scene/weather/hail")
    with pytest.raises(StoreError, match="only key"):
        neighbours(tmp_path / "s", "scene/hour/12")
    r = CliRunner().invoke(app, ["store", "neighbours", str(tmp_path / "s"), "scene/weather/typhoon", "-k", "1"])
    assert r.exit_code == 0 and r.output.split() == [f"{near[0][1]:+.3f}", "scene/weather/storm"]


def test_disk_store_remembers_the_text_of_each_vector(tmp_path):
    store = DiskStore(tmp_path / "s", encoder="e")
    store.put_many({"a": np.ones(3, np.float32), "b": np.zeros(3, np.float32)}, texts={"a": "alpha", "b": "beta"})
    store.put_many({"c": np.ones(3, np.float32)})  # no text given: taken as current
    back = DiskStore(tmp_path / "s", encoder="e")
    assert back.stale({"a": "alpha", "b": "BETA", "c": "anything", "d": "new"}) == ["b"]
    back.put_many({"a": np.zeros(3, np.float32)})  # overwritten without a text: the old one no longer holds
    assert back.stale({"a": "changed"}) == []
