"""What is particular to the Redis store: replicas sharing one namespace, races on an empty
namespace, the wire format, connection failures, and `larr store copy|info` across backends.
(The interface contract itself is tested for both backends in test_store.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import redis
from typer.testing import CliRunner

from larr.cli import app
from larr.store import DiskStore, StoreError, open_store, stack_vectors
import larr.store.redis as redis_store
from larr.store.base import check_vectors
from larr.store.redis import RedisStore, split_url


def _vecs(n: int, dim: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"k{i}": rng.normal(size=dim).astype(np.float32) for i in range(n)}


def test_replicas_see_each_others_writes(fresh_redis_url):
    a, b = RedisStore(fresh_redis_url), RedisStore(fresh_redis_url, encoder="enc-a")
    assert a.dim is None and b.dim is None
    a.put_many(_vecs(2))
    assert b.dim == 4 and "k1" in b and len(b) == 2  # b opened the namespace while it was empty
    b.put_many({"k9": np.ones(4, np.float32)})
    assert a.keys() == ["k0", "k1", "k9"] and a.missing(["k9", "x"]) == ["x"]
    np.testing.assert_array_equal(a.get_many(["k9"])["k9"], np.ones(4, np.float32))


def test_racing_writers_cannot_mix_dims_or_encoders(fresh_redis_url, monkeypatch):
    a, b = RedisStore(fresh_redis_url, encoder="enc-a"), RedisStore(fresh_redis_url, encoder="enc-b")
    c = RedisStore(fresh_redis_url)
    a.put_many(_vecs(1))  # a creates the namespace: dim 4, enc-a
    with pytest.raises(StoreError, match="encoder 'enc-a', not 'enc-b'"):
        b.put_many(_vecs(1))
    # c read "no dim yet" just before a's write landed: the server-side check still refuses
    monkeypatch.setattr(redis_store, "check_vectors", lambda items, dim: check_vectors(items, None))
    with pytest.raises(StoreError, match="dim 4, asked for dim 6"):
        c.put_many({"x": np.zeros(6, np.float32)})
    assert len(a) == 1


def test_namespaces_are_separate(redis_url):
    RedisStore(redis_url, namespace="ns-one").put_many(_vecs(2))
    other = open_store(f"{redis_url}?namespace=ns-two")
    assert len(other) == 0 and other.dim is None and "k0" not in other


def test_vectors_are_raw_little_endian_float32(fresh_redis_url):
    store = RedisStore(fresh_redis_url, encoder="enc-a")
    vec = np.array([1.5, -2.0, 0.25], np.float32)
    store.put_many({"scene/weather/heavy rain": vec})
    raw = redis.Redis.from_url(split_url(fresh_redis_url)[0])
    assert raw.get(f"{store.namespace}:v:scene/weather/heavy rain") == vec.astype("<f4").tobytes()
    assert raw.hgetall(f"{store.namespace}:meta") == {b"dim": b"3", b"encoder": b"enc-a", b"format": b"larr-store/1"}


def test_corrupt_vector_is_a_one_line_error(fresh_redis_url):
    store = RedisStore(fresh_redis_url)
    store.put_many(_vecs(1))
    redis.Redis.from_url(split_url(fresh_redis_url)[0]).set(f"{store.namespace}:v:k0", b"short")
    with pytest.raises(StoreError, match="'k0' is not 4 float32 values"):
        store.get_many(["k0"])


def test_unreachable_or_bad_url_is_a_one_line_error():
    with pytest.raises(StoreError, match=r"redis://u:\*\*\*@127\.0\.0\.1:1/0.*cannot reach Redis") as e:
        open_store("redis://u:secret@127.0.0.1:1/0?namespace=x")
    assert "secret" not in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(StoreError, match="unknown option"):
        open_store("redis://127.0.0.1:1/0?bogus=1")


# ---------------------------------------------------------------------------- larr store copy | info


def test_cli_copy_disk_to_redis_to_disk(tmp_path, fresh_redis_url):
    items = _vecs(300, dim=16)
    with DiskStore(tmp_path / "run", encoder="stage2-abc", autoflush=False) as src:
        src.put_many(items)
    cli = CliRunner()
    r = cli.invoke(app, ["store", "copy", str(tmp_path / "run"), fresh_redis_url])
    assert r.exit_code == 0, r.output
    r = cli.invoke(app, ["store", "copy", fresh_redis_url, str(tmp_path / "back")])
    assert r.exit_code == 0, r.output
    back = DiskStore(tmp_path / "back")
    assert back.keys() == list(items) and back.encoder == "stage2-abc" and back.dim == 16
    np.testing.assert_array_equal(stack_vectors(back, list(items)), np.stack(list(items.values())))

    r = cli.invoke(app, ["store", "info", fresh_redis_url, "--sample", "2"])
    assert r.exit_code == 0, r.output
    assert "vectors   300" in r.output and "dim       16" in r.output and "encoder   stage2-abc" in r.output
    assert "key       k0\nkey       k1\n" in r.output and "k2" not in r.output


def test_cli_copy_refuses_another_encoder_and_empty_source(tmp_path, fresh_redis_url):
    DiskStore(tmp_path / "a", encoder="enc-a").put_many(_vecs(2))
    DiskStore(tmp_path / "b", encoder="enc-b").put_many(_vecs(2))
    cli = CliRunner()
    assert cli.invoke(app, ["store", "copy", str(tmp_path / "a"), fresh_redis_url]).exit_code == 0
    r = cli.invoke(app, ["store", "copy", str(tmp_path / "b"), fresh_redis_url])
    assert isinstance(r.exception, StoreError) and "encoder 'enc-a', not 'enc-b'" in str(r.exception)
    r = cli.invoke(app, ["store", "copy", str(tmp_path / "nothing"), fresh_redis_url])
    assert isinstance(r.exception, StoreError) and "empty" in str(r.exception)
    r = cli.invoke(app, ["store", "info", str(tmp_path / "nothing")])
    assert isinstance(r.exception, StoreError) and "no such store folder" in str(r.exception)
