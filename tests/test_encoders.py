"""The encoder registry: one place that says how each encoder is found, loaded and fed."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import types
from typing import ClassVar, get_args

import numpy as np
import pytest

from larr import embed
from larr import encoders as R
from larr.config import ENCODERS, EvalEncoderName, load_config
from larr.llm import evaluate as E
from larr.llm.pairs import EvalSet, PairData

TAGGED = "<shop_name>A</shop_name><category>hotpot</category>"


def test_registry_names_are_the_configs() -> None:
    assert set(R.REGISTRY) == set(get_args(EvalEncoderName)) and set(ENCODERS) == set(R.REGISTRY) - {"stage1"}
    assert E.MODELS == ("untuned", "stage1", "minilm", "larr")  # the stage-2 tables' column order


def test_each_encoder_prepares_its_texts() -> None:
    assert R.strip_field_tags(TAGGED) == "A. hotpot."
    assert R.spec("minilm").prepare(TAGGED) == "A. hotpot."
    for name in ("untuned", "stage1", "larr"):  # the LLMs know the field tags
        assert R.spec(name).prepare(TAGGED) == TAGGED
    assert R.spec("minilm").prepare("weather: heavy rain") == "weather: heavy rain"  # scene texts carry no tags
    assert [n for n, s in R.REGISTRY.items() if s.is_llm] == ["untuned", "stage1", "larr"]


def test_unknown_encoder_and_missing_package_are_one_line(tmp_path, monkeypatch) -> None:
    cfg = load_config(None, ["device=cpu"])
    with pytest.raises(R.EncoderUnavailable, match="unknown encoder 'nope'") as e:
        R.model_folder("nope", cfg, tmp_path)
    assert "\n" not in str(e.value)

    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(R.EncoderUnavailable, match=f"needs the '{R.MINILM_PACKAGE}' package") as e:
        R.load_encoder("minilm", cfg, tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(R.EncoderUnavailable, match="no stage-1 model"):
        R.model_folder("stage1", cfg, tmp_path)


def test_identity_is_unchanged(tmp_path, monkeypatch) -> None:
    """The strings existing stores recorded: <name>:<fingerprint>, :bf16 for LLM encoders only."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.safetensors").write_bytes(b"x")
    (tmp_path / "sub" / "b.safetensors").write_bytes(b"yz")
    (tmp_path / "config.json").write_text("{}")  # not a weight file
    assert R.weights_fingerprint(tmp_path) == "f0af81b583c3"
    for name in R.REGISTRY:
        monkeypatch.setitem(R.REGISTRY, name, dataclasses.replace(R.REGISTRY[name], locate=lambda c, r: tmp_path))
    bf16 = load_config(None, ["embed.dtype=bfloat16"])
    assert R.encoder_identity("larr", bf16, tmp_path) == "larr:f0af81b583c3:bf16"
    assert R.encoder_identity("untuned", bf16, tmp_path) == "untuned:f0af81b583c3:bf16"
    assert R.encoder_identity("minilm", bf16, tmp_path) == "minilm:f0af81b583c3"
    assert R.encoder_identity("larr", load_config(None, []), tmp_path) == "larr:f0af81b583c3"


class RecordingST:
    """Stands in for ``sentence_transformers.SentenceTransformer``: records what it is asked to encode."""

    seen: ClassVar[list[str]] = []

    def __init__(self, path: str, device: str, local_files_only: bool) -> None:
        assert device == "cpu" and local_files_only

    def encode(self, texts: list[str], batch_size: int, convert_to_numpy: bool, normalize_embeddings: bool,
               show_progress_bar: bool) -> np.ndarray:
        RecordingST.seen.extend(texts)
        return np.eye(len(texts), 8, dtype=np.float32)


def test_minilm_sees_the_same_untagged_text_in_embed_and_evaluation(tiny_data, tmp_path, monkeypatch) -> None:
    folder = tmp_path / "minilm"
    folder.mkdir()
    monkeypatch.setitem(R.REGISTRY, "minilm", dataclasses.replace(R.REGISTRY["minilm"], locate=lambda c, r: folder))
    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=RecordingST))
    monkeypatch.setattr(RecordingST, "seen", [])
    run = tmp_path / "run"
    cfg = load_config(None, ["device=cpu", "embed.encoders=[minilm]", "embed.whole_scene=[]", "embed.shops=all"])
    embed.run(cfg, run, data_dir=tiny_data, log=lambda m: None)
    shops = list(embed.shop_texts(tiny_data, "all", set()).values())
    assert all("<" in t for t in shops)
    embedded = [t for t in RecordingST.seen if "weather" not in t and "hour" not in t]
    assert embedded == [R.strip_field_tags(t) for t in shops]

    RecordingST.seen = []
    heldout = {"shop_shop": EvalSet([shops[0]], shops, np.array([1]), [np.array([0])])}
    E.evaluate(cfg, run, tiny_data, PairData({}, heldout, {}), models=("minilm",))
    assert sorted(RecordingST.seen) == sorted(embedded)


def test_stage1_loads_raw_with_the_evaluation_settings(tmp_path) -> None:
    from larr import layout
    from larr.llm.backbone import make_tiny_model

    make_tiny_model(layout.stage1_dir(tmp_path), vocab_size=300, hidden_size=32, num_layers=1, num_heads=2)
    cfg = load_config(None, ["device=cpu", "contrastive.max_length=24", "contrastive.eval_dtype=float32"])
    enc = R.load_encoder("stage1", cfg, tmp_path, settings=R.eval_settings(cfg))
    assert enc.model.model.max_length == 24 and enc.model.model.head is None
    vecs = enc.encode(["weather: typhoon", TAGGED])
    assert vecs.shape == (2, 32) and enc.name.startswith("stage1:")
