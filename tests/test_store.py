from __future__ import annotations

import json

import numpy as np
import pytest

import larr.store.disk as disk
from larr.store import DiskStore, StoreError, open_store, scene_key, stack_vectors


def _vecs(n: int, dim: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"k{i}": rng.normal(size=dim).astype(np.float32) for i in range(n)}


def test_keys_are_canonical():
    assert scene_key("weather", "heavy rain") == "scene/weather/heavy rain"
    assert scene_key("hour", np.int64(12)) == scene_key("hour", 12) == scene_key("hour", "12") == "scene/hour/12"
    assert scene_key("holiday", np.bool_(True)) == "scene/holiday/true"
    assert scene_key("temp", np.float64(23.5)) == "scene/temp/23.5"


def test_round_trip_and_reopen(tmp_path):
    items = _vecs(5)
    store = DiskStore(tmp_path / "s", encoder="enc-a")
    assert store.dim is None and len(store) == 0
    store.put_many(items)
    assert store.dim == 4 and store.keys() == list(items) and "k3" in store
    got = DiskStore(tmp_path / "s", encoder="enc-a").get_many(["k3", "k0"])
    assert list(got) == ["k3", "k0"]
    np.testing.assert_array_equal(got["k3"], items["k3"])
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["dim"] == 4


def test_missing_keys_absent_and_listed(tmp_path):
    store = DiskStore(tmp_path / "s")
    store.put_many(_vecs(2))
    assert set(store.get_many(["k0", "nope", "k1"])) == {"k0", "k1"}
    assert store.missing(["nope", "k0", "nope", "new"]) == ["nope", "new"]
    with pytest.raises(KeyError, match="1 keys missing"):
        stack_vectors(store, ["k0", "nope"])
    assert stack_vectors(store, ["k1", "k0"]).shape == (2, 4)


def test_overwrite_and_append_keep_rows_aligned(tmp_path):
    with DiskStore(tmp_path / "s", autoflush=False) as store:
        for i in range(40):  # many small puts grow the buffer
            store.put_many({f"k{i}": np.full(3, i, np.float32)})
        store.put_many({"k7": np.full(3, -1, np.float32)})
        assert not (tmp_path / "s" / "vectors.safetensors").exists()  # written once, on exit
    again = DiskStore(tmp_path / "s")
    assert len(again) == 40
    got = again.get_many(["k7", "k39", "k0"])
    assert got["k7"][0] == -1 and got["k39"][0] == 39 and got["k0"][0] == 0


def test_dim_and_encoder_mismatch_are_errors(tmp_path):
    store = DiskStore(tmp_path / "s", dim=4, encoder="enc-a")
    with pytest.raises(StoreError, match="shape"):
        store.put_many({"x": np.zeros(5, np.float32)})
    with pytest.raises(StoreError, match="non-finite"):
        store.put_many({"x": np.array([0, np.nan, 0, 0], np.float32)})
    store.put_many(_vecs(1))
    with pytest.raises(StoreError, match="dim 4, asked for dim 8"):
        DiskStore(tmp_path / "s", dim=8)
    with pytest.raises(StoreError, match="encoder 'enc-a', not 'enc-b'"):
        DiskStore(tmp_path / "s", encoder="enc-b")
    with pytest.raises(StoreError, match="Redis"):
        open_store("redis://localhost:6379/0")


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
