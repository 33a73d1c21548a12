"""larr serve: offline parity, the scene-vector cache (disk and Redis), 4xx contract, API key, a real uvicorn."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from larr.rec.models import load_model, predict
from larr.rec.train import load_features
from larr.serve.app import create_app
from larr.serve.metrics import ServeMetrics
from larr.serve.ranker import Ranker
from larr.serve.settings import ServeSettings
from serve_helpers import (run_encoder, CountingEncoder, copy_store, metric, request_rows, serve_run, settle, start_server,
                           stop_process)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return serve_run(tmp_path_factory)


@pytest.fixture(scope="module")
def encoder(run):
    return run_encoder(run)


@pytest.fixture(scope="module")
def client(run, encoder, tmp_path_factory):
    """A ready app with small limits, on a private copy of the store."""
    settings = ServeSettings(max_candidates=50, max_body_bytes=4096)
    store = copy_store(run, tmp_path_factory.mktemp("store") / "larr")
    ranker = Ranker.load(run, settings=settings, store=str(store), encoder=encoder)
    with TestClient(create_app(ranker, settings)) as c:
        yield c


def _rank(client, **body):
    body = {"user_id": 0, "scene": {}, "candidates": [0, 1, 2], **body}
    return client.post("/v1/rank", json=body)


# ---------------------------------------------------------------------------- scores


@pytest.mark.parametrize("unseen", [False, True], ids=["seen_scene", "unseen_scene"])
def test_ranking_equals_offline_predict(run, client, unseen):
    """Same inputs, same scores: the server's features and graph are the offline model's."""
    model = load_model(run / "stage3" / "larr_seed0")
    _, splits, _ = load_features(run)
    test = splits["test"]
    pos = model.dims.field_names.index("position")
    for req in request_rows(run, unseen, n=2):
        tensors = {k: test[k][torch.as_tensor(req["rows"].copy())] for k in ("x", "scene")}
        tensors["x"][:, pos] = int(client.app.state.serving.ranker.indexer.base[pos])  # the server's position
        want = predict(model, tensors)
        r = _rank(client, user_id=req["user_id"], scene=req["scene"], candidates=req["candidates"])
        assert r.status_code == 200, r.text
        body = r.json()
        got = {it["shop_id"]: it["score"] for it in body["items"]}
        assert [it["shop_id"] for it in body["items"]] == [req["candidates"][i] for i in np.argsort(-want, kind="stable")]
        np.testing.assert_allclose([got[s] for s in req["candidates"]], want, atol=1e-6)
        assert set(body["scene_sources"].values()) == {"table"} and body["version"].startswith("run/larr_seed0@")


def test_top_k_and_unknown_ids_and_missing_features(client):
    before = client.get("/metrics").text
    r = _rank(client, user_id=10**12, candidates=[0, "no-such-shop", 1, 2], top_k=2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 2 and body["items"][0]["score"] >= body["items"][1]["score"]
    assert body["unknown_user"] and body["unknown_shops"] == 1
    assert set(body["scene_sources"].values()) == {"missing"}  # no scene given: the unknown row everywhere
    after = client.get("/metrics").text
    assert metric(after, "larr_unknown_users_total") == metric(before, "larr_unknown_users_total") + 1
    assert metric(after, "larr_unknown_shops_total") == metric(before, "larr_unknown_shops_total") + 1
    assert 'larr_missing_scene_features_total{feature="weather"}' in after


# ---------------------------------------------------------------------------- the scene cache


@pytest.fixture(params=["disk", "redis"])
def store_url(request, run, tmp_path) -> str:
    """The run's store as a private folder copy, or pushed into a fresh Redis namespace."""
    if request.param == "disk":
        return str(copy_store(run, tmp_path / "larr"))
    from larr.store.copy import copy_location

    url = request.getfixturevalue("fresh_redis_url")  # skips where redis-server is not installed
    copy_location(run / "embeddings" / "larr", url)
    return url


def test_unseen_value_encoded_once_then_cached(run, encoder, store_url):
    enc = CountingEncoder(encoder)
    settings = ServeSettings()
    ranker = Ranker.load(run, settings=settings, store=store_url, encoder=enc)
    scene = {"weather": "volcanic ash cloud", "hour": 12}
    with TestClient(create_app(ranker, settings)) as c:
        first = _rank(c, scene=scene).json()  # answered at once; the encode runs in the background
        settle(ranker)
        second = _rank(c, scene=scene).json()
        text = c.get("/metrics").text
    assert first["scene_sources"]["weather"] == "pending" and second["scene_sources"]["weather"] == "cache"
    assert first["scene_sources"]["hour"] == "table"
    assert enc.calls == ["weather: volcanic ash cloud"]
    assert metric(text, "larr_llm_encodes_total") == 1 and metric(text, "larr_scene_cache_misses_total") == 1
    assert metric(text, 'larr_scene_values_total{source="cache"}') == 1
    assert metric(text, "larr_scene_cache_hits_total") == 3  # hour twice from the table, weather once from the cache
    # the raw vector went to the store: another server (replica, restart) reads it there, no LLM call
    again = CountingEncoder(encoder)
    other = Ranker.load(run, settings=settings, store=store_url, encoder=again)
    assert other.rank(0, scene, [0, 1]).scene_sources["weather"] == "store" and again.calls == []
    other.close()


def test_llm_timeout_error_and_no_encoder_fall_back_to_unknown_row(run, encoder, tmp_path):
    settings = ServeSettings(encode_timeout_s=0.05)
    slow = CountingEncoder(encoder, delay=0.5)
    ranker = Ranker.load(run, settings=settings, store=str(copy_store(run, tmp_path / "a")), encoder=slow)
    missing = ranker.rank(0, {}, [0, 1, 2])  # weather left out: OOV id and the unknown LLM row
    out = ranker.rank(0, {"weather": "sandstorm"}, [0, 1, 2])
    assert out.scene_sources["weather"] == "fallback"
    assert dict(zip(out.shop_ids, out.scores)) == pytest.approx(dict(zip(missing.shop_ids, missing.scores)))
    ranker.scenes.close()  # waits for the background encode, which still lands in the cache
    assert ranker.rank(0, {"weather": "sandstorm"}, [0]).scene_sources["weather"] == "cache"
    assert slow.calls == ["weather: sandstorm"]
    assert metric(ranker.metrics.render()[0].decode(), 'larr_llm_fallbacks_total{reason="timeout"}') == 1

    broken = Ranker.load(run, settings=ServeSettings(encode_timeout_s=1.0), store=str(copy_store(run, tmp_path / "b")),
                         encoder=CountingEncoder(encoder, fail=True))
    assert broken.rank(0, {"weather": "hail"}, [0]).scene_sources["weather"] == "fallback"
    assert metric(broken.metrics.render()[0].decode(), 'larr_llm_fallbacks_total{reason="error"}') == 1
    none = Ranker.load(run, store=str(copy_store(run, tmp_path / "c")), encoder=None)
    assert none.rank(0, {"weather": "hail"}, [0]).scene_sources["weather"] == "fallback"
    assert metric(none.metrics.render()[0].decode(), 'larr_llm_fallbacks_total{reason="no_encoder"}') == 1


# ---------------------------------------------------------------------------- the contract: 4xx with a reason


@pytest.mark.parametrize("body, status, says", [
    (b"{not json", 422, "malformed JSON"),
    ({"user_id": [1], "scene": {}, "candidates": [1]}, 422, "user_id"),
    ({"user_id": 1, "scene": {}, "candidates": "1,2"}, 422, "candidates"),
    ({"user_id": 1, "scene": {"weather": {"a": 1}}, "candidates": [1]}, 422, "scene.weather"),
    ({"user_id": 1, "scene": {}, "candidates": []}, 422, "at least 1 item"),
    ({"user_id": 1, "scene": {}, "candidates": list(range(51))}, 422, "at most 50 items"),
    ({"user_id": 1, "scene": {}}, 422, "candidates: Field required"),
    ({"scene": {}, "candidates": [1]}, 422, "user_id: Field required"),
    ({"user_id": 1, "candidates": [1]}, 422, "scene: Field required"),
    ({"user_id": 1, "scene": {"wether": "rain"}, "candidates": [1]}, 422, "unknown scene feature 'wether'"),
    ({"user_id": 1, "scene": {"hour": "noon"}, "candidates": [1]}, 422, "'hour' expects an integer"),
    ({"user_id": 1, "scene": {}, "candidates": [1], "top_k": 0}, 422, "top_k"),
    ({"user_id": 1, "scene": {}, "candidates": [1], "top_k": "2"}, 422, "top_k: Input should be a valid integer"),
    ({"user_id": 1, "scene": {}, "candidates": [1], "top_k": 2.0}, 422, "top_k: Input should be a valid integer"),
    ({"user_id": 1, "scene": {}, "candidates": [1], "top_k": True}, 422, "top_k: Input should be a valid integer"),
    ({"user_id": "", "scene": {}, "candidates": [1.0]}, 422, "candidates.0"),
    (b'{"user_id": 1, "scene": {"weather": "\xff\xfe"}, "candidates": [1]}', 422, "not valid UTF-8"),
    (b'{"user_id": ' + b"9" * 4000 + b', "scene": {}, "candidates": [1]}', 422, "user_id"),
    (b'{"user_id": 1, "scene": {}, "candidates": ' + b"[" * 2000 + b"]" * 2000 + b"}", 422, "nested deeper"),
    ({"user_id": 1, "scene": {"hour": 1e308}, "candidates": [1]}, 422, "'hour' value 1e+308 is outside its range"),
    ({"user_id": 1, "scene": {"hour": 10**300}, "candidates": [1]}, 422, "'hour' value 1e+300 is outside"),
    ({"user_id": 1, "scene": {"hour": -40}, "candidates": [1]}, 422, "outside its range"),
    ({"user_id": 1, "scene": {"weather": "w" * 250}, "candidates": [1]}, 422, "the limit is 256"),
    ({"user_id": 1, "scene": {}, "candidates": [1], "extra": 1}, 422, "extra"),
    ({"user_id": "x" * 300, "scene": {}, "candidates": [1]}, 422, "at most 256 characters"),
    ({"user_id": 1, "scene": {}, "candidates": ["s" * 200] * 40}, 413, "larger than 4096 bytes"),
], ids=["malformed_json", "user_id_type", "candidates_type", "scene_value_type", "empty_candidates",
        "too_many_candidates", "no_candidates", "no_user", "no_scene", "unknown_feature", "wrong_value_kind",
        "top_k_zero", "top_k_string", "top_k_float", "top_k_bool", "candidate_float", "invalid_utf8",
        "huge_number", "deep_nesting", "hour_1e308", "hour_huge_int", "hour_out_of_range", "key_too_long",
        "extra_field", "long_string", "oversized_body"])
def test_bad_requests_get_4xx_saying_what_is_wrong(client, body, status, says):
    if isinstance(body, bytes):
        r = client.post("/v1/rank", content=body, headers={"content-type": "application/json"})
    else:
        r = client.post("/v1/rank", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["message"]


def test_unknown_feature_is_counted(client):
    before = metric(client.get("/metrics").text, "larr_unknown_scene_features_total")
    assert _rank(client, scene={"nope": 1}).status_code == 422
    assert metric(client.get("/metrics").text, "larr_unknown_scene_features_total") == before + 1


def test_chunked_oversized_body_is_refused(client):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    r = client.post("/v1/rank", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


# ---------------------------------------------------------------------------- security, readiness


def test_api_key_required_when_set(run, encoder):
    settings = ServeSettings(api_key="s3cret")
    with TestClient(create_app(Ranker.load(run, settings=settings, encoder=encoder), settings)) as c:
        body = {"user_id": 0, "scene": {}, "candidates": [0]}
        assert c.post("/v1/rank", json=body).status_code == 401
        r = c.post("/v1/rank", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "API key" in r.json()["message"]
        assert c.post("/v1/rank", json=body, headers={"X-API-Key": "s3cre"}).status_code == 401
        assert c.post("/v1/rank", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/v1/rank", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/metrics").status_code == 401 and c.get("/healthz").status_code == 200


def test_healthz_is_503_until_loaded(run, encoder):
    go = threading.Event()

    def slow_loader(metrics: ServeMetrics) -> Ranker:
        go.wait(10)
        return Ranker.load(run, encoder=encoder, metrics=metrics)

    with TestClient(create_app(slow_loader)) as c:
        assert c.get("/healthz").status_code == 503 and c.get("/healthz").json()["status"] == "loading"
        assert _rank(c).status_code == 503
        go.set()
        for _ in range(100):
            if c.get("/healthz").status_code == 200:
                break
            time.sleep(0.05)
        assert c.get("/healthz").json()["status"] == "ok" and _rank(c).status_code == 200


# ---------------------------------------------------------------------------- a real server


@pytest.mark.slow
def test_real_uvicorn_process(run, tmp_path):
    proc, base = start_server(run, copy_store(run, tmp_path / "larr"))
    try:
        r = httpx.post(f"{base}/v1/rank", json={"user_id": 1, "scene": {"weather": "acid rain"},
                                                "candidates": [3, 1, 2]}, timeout=10)
        assert r.status_code == 200 and len(r.json()["items"]) == 3
        assert r.json()["scene_sources"]["weather"] == "pending"
        text = httpx.get(f"{base}/metrics", timeout=5).text
        assert metric(text, 'larr_requests_total{route="/v1/rank",status="200"}') == 1
        assert "paths" in httpx.get(f"{base}/openapi.json", timeout=5).json()
    finally:
        stop_process(proc, 15)


# ---------------------------------------------------------------------------- fuzzing the contract


@pytest.mark.slow
def test_openapi_fuzz_finds_no_server_error(run, encoder, tmp_path):
    """Schemathesis: valid and invalid requests generated from /openapi.json never get a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    serve_settings = ServeSettings(max_candidates=50, encode_timeout_s=0.5)
    ranker = Ranker.load(run, settings=serve_settings, store=str(copy_store(run, tmp_path / "larr")), encoder=encoder)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ranker, serve_settings))
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        modes = list(schemathesis.GenerationMode) if op.path == "/v1/rank" else [schemathesis.GenerationMode.POSITIVE]
        for mode in modes:  # a GET without parameters has no invalid form
            examples = 40 if op.path == "/v1/rank" else 5

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call()
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                case.validate_response(response, checks=[not_a_server_error])

            check()
    assert not any(s >= 500 for s in statuses) and statuses.get(200) and statuses.get(422)


# ---------------------------------------------------------------------------- the explorer's read-only endpoints


def test_explorer_endpoints_are_documented_and_keyed(run, encoder):
    settings = ServeSettings(api_key="s3cret")
    with TestClient(create_app(Ranker.load(run, settings=settings, encoder=encoder), settings)) as c:
        spec = c.get("/openapi.json").json()
        for path in ("/v1/users", "/v1/shops", "/v1/scene-features", "/v1/neighbours"):
            assert "get" in spec["paths"][path] and c.get(path).status_code == 401
        key = {"X-API-Key": "s3cret"}
        users = c.get("/v1/users", params={"q": "office worker"}, headers=key).json()
        assert users["users"] and all("office worker" in u["profile"].lower() for u in users["users"])
        assert c.get("/v1/users", params={"q": "1"}, headers=key).json()["users"][0]["user_id"] == 1
        feats = c.get("/v1/scene-features", headers=key).json()
        weather = next(f for f in feats["features"] if f["name"] == "weather")
        hour = next(f for f in feats["features"] if f["name"] == "hour")
        assert "cloudy" in weather["values"] and hour["range"] == pytest.approx([-2.3, 25.3])
        assert set(feats["example"]) <= {f["name"] for f in feats["features"]} and feats["example"]
        shops = c.get("/v1/shops", headers=key).json()
        assert shops["total"] == len(shops["shops"]) > 0 and {"name", "category", "price_level"} <= set(shops["shops"][0])
        known = c.get("/v1/neighbours", params={"feature": "weather", "value": "cloudy"}, headers=key).json()
        assert known["known"] and known["source"] == "table" and len(known["neighbours"]) == 5
        assert "cloudy" not in [n["value"] for n in known["neighbours"]]
        r = c.get("/v1/neighbours", params={"feature": "hour", "value": "noon"}, headers=key)
        assert r.status_code == 422 and "hour" in r.json()["message"]
        assert c.get("/v1/neighbours", params={"feature": "nope", "value": "x"}, headers=key).status_code == 422
        page = c.get("/")
        assert page.status_code == 200 and "/static/explorer.js" in page.text
        assert "fetch(" in c.get("/static/explorer.js").text and "http" not in c.get("/").text.split("<body>")[0]
