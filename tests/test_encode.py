"""Stage-2 embedding model: <emb> appending, save/load parity with sentence-transformers, bucketing."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from larr.llm.backbone import make_tiny_model
from larr.llm.embedding_model import EmbeddingModel
from larr.llm.encode import Encoder, length_buckets
from larr.llm.tokens import EMB_TOKEN

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


# ---------------------------------------------------------------------------- packed path


@pytest.fixture(scope="module")
def gqa_dir(tmp_path_factory):
    """Tiny Llama with grouped-query attention (like SmolLM2: fewer kv heads than q heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = make_tiny_model(tmp_path_factory.mktemp("gqa"))
    cfg = LlamaConfig.from_pretrained(folder)
    cfg.num_hidden_layers, cfg.num_key_value_heads = 3, 2
    torch.manual_seed(1)
    LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_packed_path_equals_hf_forward(gqa_dir, batch_size):
    """Packed tokens, fused projections, complex rotary and the last layer run at the pooled
    position only: the same vectors as the model's own (masked, padded) forward."""
    torch.manual_seed(0)
    model = EmbeddingModel.from_causal_lm_folder(gqa_dir, head_dim=16).eval()
    packed = Encoder(model, device="cpu")
    assert packed.packed is not None and packed.dtype == torch.float32
    batch = model.tokenize(TEXTS)
    with torch.inference_mode():
        reference = model(batch["input_ids"], batch["attention_mask"], use_mask=True).numpy()
    np.testing.assert_allclose(packed.encode(TEXTS, batch_size=batch_size), reference, atol=1e-5)
    hf = Encoder(model, device="cpu", packed=False)
    assert hf.packed is None
    np.testing.assert_allclose(hf.encode(TEXTS, batch_size=batch_size), reference, atol=1e-5)


def test_gemm_rows_count_no_padding_when_packed(gqa_dir):
    model = EmbeddingModel.from_causal_lm_folder(gqa_dir, head_dim=8)
    lengths = [len(x) for x in model.tokenize(TEXTS, padding=False)["input_ids"]]
    assert Encoder(model, device="cpu").gemm_rows(lengths, 64) == sum(lengths)
    assert Encoder(model, device="cpu", packed=False).gemm_rows(lengths, 64) >= sum(lengths)


@pytest.mark.parametrize("packed", [True, False])
def test_bfloat16_close_to_float32(gqa_dir, packed):
    torch.manual_seed(0)
    model = EmbeddingModel.from_causal_lm_folder(gqa_dir, head_dim=16).eval()
    full = Encoder(model, device="cpu").encode(TEXTS)
    half = Encoder(model, device="cpu", dtype="bfloat16", packed=packed)
    assert half.dtype == torch.bfloat16 and (half.packed is not None) == packed
    vecs = half.encode(TEXTS)
    assert vecs.dtype == np.float32
    assert (vecs * full).sum(axis=1).min() >= 0.99
    assert next(model.base.parameters()).dtype == torch.float32  # the model itself is untouched


def test_dtype_resolution(monkeypatch, tmp_path):
    from larr import device as device_mod
    from larr.llm import encode
    from larr.llm.pretrain import use_bf16

    cpu = torch.device("cpu")
    assert encode.resolve_dtype("float32", cpu) == torch.float32
    assert encode.resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert encode.resolve_dtype(torch.float16, cpu) == torch.float16
    # auto follows the CPU's flags: emulated bf16 (AVX2, plain AVX-512) is far slower than float32
    for flags, native in ((" fpu avx avx2\n", False), (" avx512f avx512_bf16\n", True), (" amx_bf16 amx_tile\n", True)):
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"flags\t:{flags}")
        monkeypatch.setattr(device_mod, "Path", lambda _p, f=cpuinfo: f)
        assert device_mod.native_bf16(cpu) is native
        assert encode.resolve_dtype("auto", cpu) == (torch.bfloat16 if native else torch.float32)
        assert use_bf16("auto", cpu) is native
    assert use_bf16("fp32", cpu) is False and use_bf16("bf16", cpu) is True


def test_packed_supports_only_llama_family(gqa_dir):
    from larr.llm.packed import PackedDecoder

    model = EmbeddingModel.from_causal_lm_folder(gqa_dir, head_dim=None)
    assert PackedDecoder.supports(model.base)
    model.base.config.hidden_act = "gelu"
    assert not PackedDecoder.supports(model.base)


def test_attend_last_equals_causal_attention_at_the_last_position():
    """The one last-position attention (encoder's final layer and stage-2 training) == causal SDPA
    read at each row's last position, with grouped-query heads and rows of different lengths."""
    import torch.nn.functional as F

    from larr.llm.packed import attend_last

    torch.manual_seed(0)
    b, heads, kv_heads, t, d = 3, 4, 2, 7, 8
    q, k, v = torch.randn(b, heads, t, d), torch.randn(b, kv_heads, t, d), torch.randn(b, kv_heads, t, d)
    last, rows = torch.tensor([6, 2, 4]), torch.arange(b)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3, enable_gqa=True)
    expected = full[rows, :, last].reshape(b, -1)
    torch.testing.assert_close(attend_last(q[rows, :, last], k, v, last, 0.3), expected, atol=1e-6, rtol=0)
