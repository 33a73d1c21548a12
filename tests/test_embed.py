"""The embed stage: every distinct text encoded once per encoder, cached, counted in report.json."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from larr import embed
from larr.config import load_config
from larr.data.scene import scene_key, shop_key, whole_scene_key
from larr.data.schema import read_scene_features, write_dataset_meta
from larr.rec.features import build_spec, load_frame
from larr.report import read_report
from larr.store import DiskStore


class StubEncoder:
    """Deterministic vectors from a text's hash; records every text it is asked to encode."""

    def __init__(self, name: str = "stub:1", dim: int = 8) -> None:
        self.name, self.dim, self.calls = name, dim, []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.extend(texts)
        return np.stack([stub_vector(t, self.dim) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


def stub_vector(text: str, dim: int = 8) -> np.ndarray:
    seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def _cfg(*overrides: str):
    return load_config(None, ["device=cpu", "embed.encoders=[larr]", "embed.whole_scene=[larr]", *overrides])


def test_each_distinct_text_encoded_once_then_cached(tiny_data, tmp_path):
    run = tmp_path / "run"
    enc = StubEncoder()
    result = embed.run(_cfg("embed.shops=all"), run, data_dir=tiny_data, encoders={"larr": enc}, log=lambda m: None)
    spec = build_spec(*load_frame(tiny_data))
    # 2 weather + 2 hour values, 2 whole scenes, 2 shops: each text exactly once
    assert len(enc.calls) == len(set(enc.calls)) == 4 + 2 + 2
    assert "weather: heatwave" in enc.calls and spec.whole_texts[0] in enc.calls
    stats = result["encoders"]["larr"]
    assert stats["scene"]["encoded"] == 4 and stats["whole"]["encoded"] == 2 and stats["shops"]["encoded"] == 2
    store = DiskStore(run / "embeddings" / "larr")
    assert store.encoder == "stub:1" and store.dim == 8
    key = scene_key("weather", "heatwave")
    np.testing.assert_array_equal(store.get_many([key])[key], stub_vector("weather: heatwave"))
    assert whole_scene_key(spec.whole_texts[1]) in store and shop_key(1) in store

    again = StubEncoder()
    result = embed.run(_cfg("embed.shops=all"), run, data_dir=tiny_data, encoders={"larr": again}, log=lambda m: None)
    assert again.calls == []  # everything served from the cache
    assert result["encoders"]["larr"]["scene"]["cached"] == 4 and result["encoders"]["larr"]["whole"]["cached"] == 2
    report = read_report(run)["embed"]
    assert report["whole_scene_texts"] == 2 and report["scene_texts"] == 4
    assert report["encoders"]["larr"]["whole"]["texts"] == 2


def test_new_value_costs_one_call_and_other_encoder_rebuilds(tiny_data, tmp_path):
    run = tmp_path / "run"
    embed.run(_cfg("embed.whole_scene=[]"), run, data_dir=tiny_data, encoders={"larr": StubEncoder()},
              log=lambda m: None)
    import pyarrow.parquet as pq

    imps = pq.read_table(tiny_data / "impressions.parquet").to_pylist()
    imps[-1]["weather"] = "typhoon"  # one new scene value appears
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(imps), tiny_data / "impressions.parquet")
    enc = StubEncoder()
    embed.run(_cfg("embed.whole_scene=[]"), run, data_dir=tiny_data, encoders={"larr": enc}, log=lambda m: None)
    assert enc.calls == ["weather: typhoon"]
    other = StubEncoder(name="stub:2")  # a re-trained model: old vectors must not be mixed in
    with pytest.warns(UserWarning, match="re-encoding"):
        embed.run(_cfg("embed.whole_scene=[]"), run, data_dir=tiny_data, encoders={"larr": other}, log=lambda m: None)
    assert len(other.calls) == 5 and DiskStore(run / "embeddings" / "larr").encoder == "stub:2"


def test_a_value_whose_text_changed_is_encoded_again(tiny_data, tmp_path):
    run = tmp_path / "run"
    embed.run(_cfg("embed.whole_scene=[]"), run, data_dir=tiny_data, encoders={"larr": StubEncoder()},
              log=lambda m: None)
    feats = read_scene_features(tiny_data)
    described = [replace(feats[0], descriptions={"heatwave": "above 35 degrees"}), *feats[1:]]
    write_dataset_meta(tiny_data, described, name="tiny")  # the key stays scene/weather/heatwave
    enc = StubEncoder()
    result = embed.run(_cfg("embed.whole_scene=[]"), run, data_dir=tiny_data, encoders={"larr": enc},
                       log=lambda m: None)
    assert enc.calls == ["weather: heatwave (above 35 degrees)"]
    assert result["encoders"]["larr"]["scene"]["stale"] == 1 and result["encoders"]["larr"]["scene"]["cached"] == 3
    key = scene_key("weather", "heatwave")
    got = DiskStore(run / "embeddings" / "larr").get_many([key])[key]
    np.testing.assert_array_equal(got, stub_vector("weather: heatwave (above 35 degrees)"))
    again = StubEncoder()
    embed.run(_cfg("embed.whole_scene=[]"), run, data_dir=tiny_data, encoders={"larr": again}, log=lambda m: None)
    assert again.calls == []  # the new text is now the one on record


def test_missing_stage2_is_skipped_with_a_warning(tiny_data, tmp_path):
    lines: list[str] = []
    result = embed.run(_cfg(), tmp_path / "run", data_dir=tiny_data, log=lines.append)
    assert "larr" in result["skipped"] and "stage2" in result["skipped"]["larr"]
    assert any("skipping encoder 'larr'" in line for line in lines)
    assert not (tmp_path / "run" / "embeddings" / "larr").exists()


@pytest.mark.slow
def test_untuned_tiny_backbone_end_to_end(tiny_data, tmp_path):
    """The real loading path (Encoder.from_causal_lm) with a tiny random Llama: unit vectors stored."""
    from larr.llm.backbone import make_tiny_model

    model_dir = make_tiny_model(tmp_path / "tiny_lm", vocab_size=300, hidden_size=32, num_layers=1, num_heads=2)
    cfg = load_config(None, ["device=cpu", f"llm.model={model_dir}", "embed.encoders=[untuned]",
                             "embed.whole_scene=[untuned]"])
    result = embed.run(cfg, tmp_path / "run", data_dir=tiny_data, log=lambda m: None)
    stats = result["encoders"]["untuned"]
    assert stats["scene"]["encoded"] == 4 and stats["whole"]["encoded"] == 2 and stats["dim"] == 32
    store = DiskStore(tmp_path / "run" / "embeddings" / "untuned")
    vecs = np.stack(list(store.get_many(store.keys()).values()))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-4)
    assert store.encoder.startswith("untuned:")
    meta = json.loads((tmp_path / "run" / "embeddings" / "untuned" / "meta.json").read_text())
    assert meta["encoder"] == store.encoder


@pytest.mark.slow
def test_bf16_encoder_is_its_own_store_identity(tiny_data, tmp_path):
    """embed.dtype=bfloat16 gets its own identity (the float32 vectors are re-encoded, not mixed)
    and vectors close to the float32 ones."""
    from larr.llm.backbone import make_tiny_model

    model_dir = make_tiny_model(tmp_path / "tiny_lm", vocab_size=300, hidden_size=32, num_layers=1, num_heads=2)
    sets = ["device=cpu", f"llm.model={model_dir}", "embed.encoders=[untuned]", "embed.whole_scene=[]"]
    store_dir = tmp_path / "run" / "embeddings" / "untuned"
    embed.run(load_config(None, sets), tmp_path / "run", data_dir=tiny_data, log=lambda m: None)
    fp32 = DiskStore(store_dir)
    ident, vec32 = fp32.encoder, fp32.get_many(fp32.keys())
    with pytest.warns(UserWarning, match="re-encoding"):
        result = embed.run(load_config(None, [*sets, "embed.dtype=bfloat16"]), tmp_path / "run", data_dir=tiny_data,
                           log=lambda m: None)
    assert result["encoders"]["untuned"]["scene"]["encoded"] == 4
    bf16 = DiskStore(store_dir)
    assert bf16.encoder == f"{ident}:bf16"
    vec16 = bf16.get_many(bf16.keys())
    assert vec16.keys() == vec32.keys()
    cos = [float(vec16[k] @ vec32[k]) for k in vec32]
    assert min(cos) > 0.99 and max(cos) < 1.0 + 1e-5
