"""Stage-2 embedding model: <emb> appending, save/load parity with sentence-transformers, bucketing."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from larr.llm.backbone import make_tiny_model
from larr.llm.encode import EMB_TOKEN, EmbeddingModel, Encoder, length_buckets

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = [
    "weather: heavy rain",
    "hot",
    "Golden Dragon Noodle House serves hand-pulled noodles and spicy beef soup near the station.",
    "time: weekday lunch",
    "Fresh salads, grain bowls and smoothies. " * 6,
    "district: office park",
    "Late-night barbecue skewers, cold beer and fried rice near the university campus.",
    "temperature: 35 degrees",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def saved_dir(tiny_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = EmbeddingModel.from_causal_lm_folder(tiny_dir, head_dim=16, max_length=64)
    return model.save_pretrained(tmp_path_factory.mktemp("stage2") / "model")


def test_emb_token_is_appended_as_single_id(tiny_dir):
    model = EmbeddingModel.from_causal_lm_folder(tiny_dir, head_dim=8)
    tok = model.tokenizer
    emb_id = tok.convert_tokens_to_ids(EMB_TOKEN)
    assert len(tok.tokenize(EMB_TOKEN)) == 1
    for t in TEXTS:
        assert tok(t).input_ids[-1] == emb_id
    long = tok(TEXTS[4] * 20, truncation=True, max_length=32).input_ids  # truncation keeps room for it
    assert len(long) == 32 and long[-1] == emb_id


def test_forward_shape_and_norm(tiny_dir):
    model = EmbeddingModel.from_causal_lm_folder(tiny_dir, head_dim=16)
    batch = model.tokenize(TEXTS)
    out = model(batch["input_ids"], batch["attention_mask"])
    assert out.shape == (len(TEXTS), 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(len(TEXTS)))
    out.sum().backward()  # trainable end to end
    assert model.head[0].weight.grad is not None and model.base.embed_tokens.weight.grad is not None


def test_saved_folder_matches_sentence_transformers(saved_dir):
    from sentence_transformers import SentenceTransformer

    ours = Encoder.from_pretrained(saved_dir, device="cpu").encode(TEXTS)
    st = SentenceTransformer(str(saved_dir), device="cpu")
    theirs = st.encode(TEXTS, convert_to_numpy=True)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (len(TEXTS), 16)
    assert np.allclose(ours, theirs, atol=1e-5)
    for name in ("model.safetensors", "2_Dense/model.safetensors", "3_Dense/model.safetensors"):
        assert (saved_dir / name).is_file()
    assert not list(saved_dir.rglob("*.bin")) and not list(saved_dir.rglob("*.pt"))


def test_reload_gives_same_vectors_as_in_memory(tiny_dir, tmp_path):
    model = EmbeddingModel.from_causal_lm_folder(tiny_dir, head_dim=16).eval()
    before = Encoder(model, device="cpu").encode(TEXTS)
    after = Encoder.from_pretrained(model.save_pretrained(tmp_path / "m"), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(before, after, atol=1e-6)


def test_encode_normalised_and_order_independent(saved_dir):
    enc = Encoder.from_pretrained(saved_dir, device="cpu")
    base = enc.encode(TEXTS, batch_size=3)
    np.testing.assert_allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-5)
    perm = list(range(len(TEXTS)))
    random.Random(0).shuffle(perm)
    shuffled = enc.encode([TEXTS[i] for i in perm], batch_size=3)
    np.testing.assert_allclose(shuffled, base[perm], atol=1e-5)


def test_padding_does_not_change_vector(saved_dir):
    enc = Encoder.from_pretrained(saved_dir, device="cpu")
    alone = enc.encode([TEXTS[0]])[0]
    with_longer = enc.encode([TEXTS[0], TEXTS[4], TEXTS[2]], batch_size=8)[0]  # one batch, padded to TEXTS[4]
    np.testing.assert_allclose(alone, with_longer, atol=1e-5)
    # and the masked (training) path agrees with the unmasked fast path
    model = enc.model
    batch = model.tokenize([TEXTS[0], TEXTS[4]])
    with torch.inference_mode():
        masked = model(batch["input_ids"], batch["attention_mask"], use_mask=True)
        fast = model(batch["input_ids"], batch["attention_mask"], use_mask=False)
    torch.testing.assert_close(masked, fast, atol=1e-5, rtol=0)


def test_raw_last_token_mode(tiny_dir):
    enc = Encoder.from_causal_lm(tiny_dir, device="cpu")
    vecs = enc.encode(TEXTS)
    assert vecs.shape == (len(TEXTS), 64)  # hidden size, no head
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    tok = enc.model.tokenizer
    assert tok(TEXTS[0]).input_ids[-1] == tok.eos_token_id  # pools at the (trained) eos token
    assert EMB_TOKEN not in tok.get_vocab()


def test_length_buckets_cover_everything_once():
    lengths = [5, 1, 9, 3, 9, 2, 7, 4, 8, 6]
    batches = list(length_buckets(lengths, batch_size=3, max_batch_tokens=18, min_batch_tokens=0, max_waste=1.0))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(len(b) <= 3 and len(b) * max(lengths[i] for i in b) <= 18 for b in batches)
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)


def test_length_buckets_bound_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 200, size=500).tolist()
    batches = list(length_buckets(lengths, batch_size=64, min_batch_tokens=0, max_waste=0.1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    for b in batches:
        real = sum(lengths[i] for i in b)
        assert 1 - real / (len(b) * max(lengths[i] for i in b)) <= 0.1


def test_empty_input(saved_dir):
    assert Encoder.from_pretrained(saved_dir, device="cpu").encode([]).shape == (0, 16)


def test_lazy_top_level_export():
    import larr

    assert larr.Encoder is Encoder
