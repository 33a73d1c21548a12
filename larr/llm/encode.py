"""Stage-2 text embeddings: last-token pooling over the LLM + an MLP head, and a fast batched encoder.

A text is encoded as the final hidden state at its last token, passed through a small MLP head
and L2-normalised (cosine = dot product). To give every text the same, dedicated "summary"
position, the tokenizer's post-processor appends ``<emb>`` to every input. Because the token is
appended by the tokenizer itself (saved in ``tokenizer.json``), our :class:`Encoder`,
``sentence_transformers.SentenceTransformer`` and anything else that calls the tokenizer encode
identically.

The saved folder uses the sentence-transformers layout, so it is usable outside larr::

    DIR/  config.json model.safetensors tokenizer.json ...   base model (AutoModel) + tokenizer
          sentence_bert_config.json  modules.json  config_sentence_transformers.json
          1_Pooling/  (lasttoken)   2_Dense/ (h→h, activation)   3_Dense/ (h→d)   4_Normalize/

:class:`Encoder` is the inference path used by later stages: texts sorted by token length and
batched with neighbours, ``torch.inference_mode``, and for Llama-family backbones a lean frozen
forward (:class:`PackedDecoder`): matmuls over real tokens only (no padding rows), fused
projections, one-pass rotary embeddings, and the last layer run only where the pooled state is
read. Other backbones take the Hugging Face forward without an attention mask where that is exact
(see :func:`_last_token_hidden`).
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from larr.device import resolve_device
from larr.llm.backbone import add_special_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMB_TOKEN = "<emb>"
Activation = Literal["gelu", "tanh"]
DType = Literal["auto", "float32", "bfloat16"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "tanh": nn.Tanh}
_TORCH_NAMES = {"gelu": "torch.nn.modules.activation.GELU", "tanh": "torch.nn.modules.activation.Tanh",
                "identity": "torch.nn.modules.linear.Identity"}


# ---------------------------------------------------------------------------- tokenizer


def set_append_token(tokenizer: PreTrainedTokenizerBase, token: str) -> None:
    """Make the fast tokenizer append ``token`` to every text (and to each side of a pair).

    Done with a ``TemplateProcessing`` post-processor, so it is stored in ``tokenizer.json`` and
    honoured by every caller, and truncation keeps room for it (it is a "special token to add").
    An existing post-processor (e.g. one that prepends BOS) runs first.
    """
    from tokenizers import processors

    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"{token!r} is not in the vocabulary; add it first")
    template = processors.TemplateProcessing(
        single=f"$A:0 {token}:0", pair=f"$A:0 {token}:0 $B:1 {token}:1", special_tokens=[(token, token_id)]
    )
    backend = tokenizer.backend_tokenizer
    current = json.loads(backend.to_str()).get("post_processor")
    if current is None or current.get("type") == "ByteLevel" or _is_noop_template(current):
        backend.post_processor = template
    else:
        backend.post_processor = processors.Sequence([backend.post_processor, template])
    if tokenizer("x").input_ids[-1] != token_id:  # some tokenizer classes rebuild their processor
        raise ValueError(f"could not make {type(tokenizer).__name__} append {token!r}")


def _is_noop_template(proc: dict) -> bool:
    """SmolLM2's GGUF tokenizer carries a TemplateProcessing that adds nothing; replace it outright."""
    return proc.get("type") == "TemplateProcessing" and not proc.get("special_tokens") and all(
        "Sequence" in piece for piece in proc.get("single", [])
    )


def _appends(tokenizer: PreTrainedTokenizerBase, token: str) -> bool:
    return tokenizer("x").input_ids[-1] == tokenizer.convert_tokens_to_ids(token)


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.model_max_length = max_length


# ---------------------------------------------------------------------------- model


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row (works for right and left padding)."""
    seq_len = attention_mask.shape[1]
    return seq_len - 1 - attention_mask.flip(1).to(torch.int32).argmax(dim=1)


def _last_token_hidden(
    base: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_mask: bool = True
) -> torch.Tensor:
    """Final hidden state at each row's last real token, shape (B, h).

    ``use_mask=False`` is an exact shortcut for causal models with right padding: a real token
    only attends to earlier positions, which are all real, so the padding after it can never
    change its state; without a mask, SDPA takes its fast causal path.
    """
    out = base(input_ids=input_ids, attention_mask=attention_mask if use_mask else None, use_cache=False)
    hidden = out.last_hidden_state
    idx = last_token_index(attention_mask).to(hidden.device)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


# Encoder-only families: their tokens see the whole sequence, so padding must always be masked.
_BIDIRECTIONAL = {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "deberta", "deberta-v2", "electra",
                  "modernbert", "albert", "camembert"}


class EmbeddingModel(nn.Module):
    """Base LM (no LM head) → last-token hidden state → MLP head → L2-normalised embedding.

    ``head_dim=None`` means no head: the raw, normalised last-token state (baselines).
    """

    def __init__(
        self,
        base: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        head_dim: int | None = 256,
        activation: Activation = "gelu",
        max_length: int = 256,
        append_token: str = EMB_TOKEN,
    ) -> None:
        super().__init__()
        self.base = base
        self.tokenizer = tokenizer
        self.activation = activation
        self.max_length = max_length
        self.append_token = append_token
        h = base.config.hidden_size
        self.head = None if head_dim is None else nn.Sequential(
            nn.Linear(h, h), _ACTIVATIONS[activation](), nn.Linear(h, head_dim)
        )
        _prepare_tokenizer(tokenizer, max_length)

    @property
    def dim(self) -> int:
        return self.base.config.hidden_size if self.head is None else self.head[-1].out_features

    @property
    def is_causal(self) -> bool:
        """Decoder-only backbones (every causal LM's base model) never let a token see the future."""
        return not getattr(self.base.config, "is_encoder_decoder", False) and getattr(
            self.base.config, "model_type", "") not in _BIDIRECTIONAL

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_mask: bool = True) -> torch.Tensor:
        """Training/inference forward; ``use_mask=False`` takes the exact causal shortcut (see
        :func:`_last_token_hidden`), ignored for bidirectional backbones."""
        pooled = _last_token_hidden(self.base, input_ids, attention_mask, use_mask=use_mask or not self.is_causal)
        return self.project(pooled)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled hidden state (B, h) → head → unit vectors (B, dim)."""
        return F.normalize(pooled if self.head is None else self.head(pooled), dim=-1)

    def tokenize(self, texts: list[str], padding: bool = True) -> dict[str, torch.Tensor]:
        """Tokenize with truncation to ``max_length``; the post-processor appends the summary token."""
        return self.tokenizer(texts, padding=padding, truncation=True, max_length=self.max_length,
                              return_tensors="pt" if padding else None)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_causal_lm_folder(
        cls,
        path: str | Path,
        head_dim: int | None = 256,
        activation: Activation = "gelu",
        max_length: int = 256,
        append_token: str | None = EMB_TOKEN,
        device: str | torch.device = "cpu",
    ) -> EmbeddingModel:
        """Start stage 2 from a causal LM folder (the untuned backbone or the stage-1 model).

        ``append_token``: ``<emb>`` (added to the vocabulary if absent; its embedding starts at the
        mean row) — or ``None`` to append the tokenizer's own eos token instead, which an untuned
        model has actually been trained on (used for the raw last-token baselines).
        """
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        base = AutoModel.from_pretrained(path, dtype=torch.float32)
        if append_token is None:
            append_token = tokenizer.eos_token
        else:
            add_special_tokens(base, tokenizer, [append_token])
        if not _appends(tokenizer, append_token):
            set_append_token(tokenizer, append_token)
        model = cls(base, tokenizer, head_dim=head_dim, activation=activation, max_length=max_length,
                    append_token=append_token)
        return model.to(_device(device))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> EmbeddingModel:
        """Load a folder written by :meth:`save_pretrained` (sentence-transformers layout)."""
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        modules = _read_modules(path)
        root = path / modules["Transformer"]["path"]
        max_length = _read_json(root / "sentence_bert_config.json").get("max_seq_length", 256)
        tokenizer = AutoTokenizer.from_pretrained(root)
        base = AutoModel.from_pretrained(root, dtype=torch.float32)
        pooling = _read_json(path / modules["Pooling"]["path"] / "config.json")
        if not (pooling.get("pooling_mode_lasttoken") or pooling.get("pooling_mode") == "lasttoken"):
            raise ValueError(f"{path}: pooling is not last-token; not a larr embedding model")
        dense = [_read_json(path / m["path"] / "config.json") for m in modules["Dense"]]
        head_dim = dense[-1]["out_features"] if dense else None
        activation = _activation_name(dense[0]["activation_function"]) if dense else "gelu"
        appended = tokenizer.convert_ids_to_tokens(tokenizer("x").input_ids[-1])
        model = cls(base, tokenizer, head_dim=head_dim, activation=activation, max_length=max_length,
                    append_token=appended)
        if dense:
            for layer, m in zip((model.head[0], model.head[2]), modules["Dense"], strict=True):
                state = load_file(path / m["path"] / "model.safetensors")
                layer.load_state_dict({"weight": state["linear.weight"], "bias": state["linear.bias"]})
        return model.to(_device(device))

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the sentence-transformers folder atomically (safetensors only)."""
        from larr.io import atomic_dir

        if self.head is not None and len(self.head) != 3:
            raise ValueError("only the Linear → activation → Linear head can be saved")
        path = Path(path)
        with atomic_dir(path) as tmp:
            self.base.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            _write_json(tmp / "sentence_bert_config.json", {"max_seq_length": self.max_length, "do_lower_case": False})
            _write_json(tmp / "config_sentence_transformers.json", _st_config())
            modules = [_module(0, "", "Transformer"), _module(1, "1_Pooling", "Pooling")]
            _write_json(tmp / "1_Pooling" / "config.json", _pooling_config(self.base.config.hidden_size))
            if self.head is not None:
                modules += [_module(2, "2_Dense", "Dense"), _module(3, "3_Dense", "Dense")]
                self._save_dense(self.head[0], self.activation, tmp / "2_Dense")
                self._save_dense(self.head[2], "identity", tmp / "3_Dense")
            modules.append(_module(len(modules), f"{len(modules)}_Normalize", "Normalize"))
            _write_json(tmp / modules[-1]["path"] / "config.json", {})
            _write_json(tmp / "modules.json", modules)
        return path

    @staticmethod
    def _save_dense(layer: nn.Linear, activation: str, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "config.json", {
            "in_features": layer.in_features, "out_features": layer.out_features, "bias": True,
            "activation_function": _TORCH_NAMES[activation],
        })
        save_file({"linear.weight": layer.weight.detach().cpu().contiguous(),
                   "linear.bias": layer.bias.detach().cpu().contiguous()}, str(folder / "model.safetensors"))


def _device(device: str | torch.device) -> torch.device:
    return resolve_device(device) if isinstance(device, str) else device


# ---------------------------------------------------------------------------- sentence-transformers layout
# Legacy type names ("sentence_transformers.models.X") and pooling keys are what every
# sentence-transformers release from 2.x to 6.x understands; 6.x maps them to its new classes.


def _module(idx: int, path: str, kind: str) -> dict:
    return {"idx": idx, "name": str(idx), "path": path, "type": f"sentence_transformers.models.{kind}"}


def _pooling_config(hidden: int) -> dict:
    modes = ["cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken"]
    return {"word_embedding_dimension": hidden, **{f"pooling_mode_{m}": m == "lasttoken" for m in modes},
            "include_prompt": True}


def _st_config() -> dict:
    import sentence_transformers
    import transformers

    return {"__version__": {"sentence_transformers": sentence_transformers.__version__,
                            "transformers": transformers.__version__, "pytorch": torch.__version__},
            "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}


def _read_modules(path: Path) -> dict:
    """modules.json → {"Transformer": entry, "Pooling": entry, "Dense": [entries], "Normalize": entry}."""
    if not (path / "modules.json").is_file():
        raise ValueError(f"{path}: no modules.json; not a saved embedding model")
    out: dict = {"Dense": []}
    for m in sorted(_read_json(path / "modules.json"), key=lambda m: m["idx"]):
        kind = m["type"].rsplit(".", 1)[-1]
        if kind == "Dense":
            out["Dense"].append(m)
        elif kind in ("Transformer", "Pooling", "Normalize"):
            out[kind] = m
        else:
            raise ValueError(f"{path}: unsupported module {m['type']}")
    if "Transformer" not in out or "Pooling" not in out or len(out["Dense"]) not in (0, 2):
        raise ValueError(f"{path}: expected Transformer, Pooling, 0 or 2 Dense and Normalize modules")
    return out


def _activation_name(torch_name: str) -> Activation:
    for short, full in _TORCH_NAMES.items():
        if full == torch_name and short in _ACTIVATIONS:
            return short  # type: ignore[return-value]
    raise ValueError(f"unsupported head activation {torch_name}")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------------------- lean frozen forward

# Families whose decoder layer is exactly: x += o(attn(rope(q, k), v)); x += down(silu(gate) * up),
# each branch after an RMSNorm (weight · x / rms, computed in float32), plus a final RMSNorm.
_PACKED_FAMILIES = {"llama", "mistral", "qwen2"}


@dataclass
class _Layer:
    """One decoder layer's weights, fused and in the compute dtype (see :class:`PackedDecoder`)."""

    qkv: torch.Tensor  # (H·d + 2·Hkv·d, h): q and k rows reordered for complex rotary; × input norm weight
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    gate_up: torch.Tensor  # (2·I, h); × post-attention norm weight
    down: torch.Tensor


class PackedDecoder:
    """Frozen Llama-family base model, re-laid out for fast last-token encoding.

    Why not the Hugging Face forward: on a CPU, about a third of an eager forward is element-wise
    work, and bucketed batches still carry some padding. Here, exactly the same maths runs with:

    * **packed tokens** — every matmul runs over the batch's real tokens only, (N_real, h); only
      attention sees the padded (B, T) layout, and padding after a text's last token is never
      attended to (causal), so it is exact;
    * **fused projections** — q|k|v and gate|up are single, wider GEMMs (more efficient than
      narrow ones); each RMSNorm's weight is folded into the columns of the GEMM that follows it,
      so a norm is one reduction and one multiply (:func:`_unit_rms`); the residual stream stays
      float32;
    * **one-pass rotary** — the q and k rows of each head are reordered so the pairs that RoPE
      rotates together, (i, i + d/2), sit side by side; rotation is then one complex multiply.
      Both q and k get the same order, so every q·k dot product is unchanged;
    * **last layer at the pooled position only** — the output projection and the MLP of the
      final layer (and the final norm) run for one token per text, like
      :func:`larr.llm.contrastive.last_token_block` in training;
    * **dtype** — weights are copied once into ``dtype``; ``torch.bfloat16`` runs the GEMMs in
      bf16 (oneDNN AVX512-BF16/AMX on CPUs that have it, ~2× the float32 GEMM rate) with the
      residual stream, norms, rotary, attention and pooled state kept in float32 (CPU flash
      attention is no faster in bf16, and float32 keeps the softmax accurate).

    The copy holds its own weights (the model's size again in ``dtype``); the model is untouched.
    """

    def __init__(self, base: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        cfg = base.config
        self.dtype = dtype
        self.embed = base.get_input_embeddings()
        self.rotary = base.rotary_emb
        self.final_norm = base.norm.weight.detach().float()
        self.eps = float(base.norm.variance_epsilon)
        first = base.layers[0].self_attn
        self.head_dim = first.head_dim
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.scaling = float(first.scaling)
        self.layers = [self._prepare(layer) for layer in base.layers]
        # The MLP's (rows, 2·I) intermediate is its largest tensor; above glibc's 32 MB mmap
        # threshold every allocation is fresh pages (page faults cost ~10% of the forward), so
        # the MLP runs over row chunks that stay well below it (and in cache).
        self.mlp_rows = max(64, (16 << 20) // (2 * cfg.intermediate_size * 4))

    @staticmethod
    def supports(base: nn.Module) -> bool:
        """Is ``base`` a Llama-family base model whose forward :meth:`last_hidden` reproduces?"""
        cfg = getattr(base, "config", None)
        if getattr(cfg, "model_type", None) not in _PACKED_FAMILIES or getattr(cfg, "hidden_act", None) != "silu":
            return False
        if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
            return False
        needed = ("embed_tokens", "layers", "norm", "rotary_emb")
        return all(hasattr(base, n) for n in needed) and all(
            all(hasattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling"))
            and not hasattr(layer.self_attn, "q_norm")
            and all(hasattr(layer.mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))
            for layer in base.layers
        )

    def _prepare(self, layer: nn.Module) -> _Layer:
        attn, mlp, d = layer.self_attn, layer.mlp, self.head_dim
        pairs = torch.arange(d).view(2, d // 2).t().flatten()  # [0, d/2, 1, d/2+1, ...]

        def rope_order(t: torch.Tensor | None, heads: int) -> torch.Tensor | None:
            return None if t is None else t.view(heads, d, *t.shape[1:])[:, pairs].reshape(t.shape)

        def w(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().to(self.dtype).contiguous()

        def b(lin: nn.Linear) -> torch.Tensor:
            return lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features)

        has_bias = any(p.bias is not None for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        norm1, norm2 = layer.input_layernorm.weight.detach(), layer.post_attention_layernorm.weight.detach()
        return _Layer(
            qkv=w(torch.cat([rope_order(attn.q_proj.weight, self.heads), rope_order(attn.k_proj.weight, self.kv_heads),
                             attn.v_proj.weight]) * norm1),
            qkv_bias=w(torch.cat([rope_order(b(attn.q_proj), self.heads), rope_order(b(attn.k_proj), self.kv_heads),
                                  b(attn.v_proj)])) if has_bias else None,
            o=w(attn.o_proj.weight), o_bias=w(attn.o_proj.bias),
            gate_up=w(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]) * norm2),
            down=w(mlp.down_proj.weight),
        )

    def last_hidden(self, rows: list[list[int]]) -> torch.Tensor:
        """Final-normed hidden state at each text's last token, (B, h) float32 (no padding in ``rows``)."""
        device = self.final_norm.device
        lengths = torch.tensor([len(r) for r in rows])
        n_rows, width = len(rows), int(lengths.max())
        starts = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(int(lengths.sum())) - torch.repeat_interleave(starts, lengths)
        slots = None  # each packed token's row in the padded (B·T) layout; None when nothing is padded
        if bool((lengths != width).any()):
            slots = (torch.repeat_interleave(torch.arange(n_rows), lengths) * width + positions).to(device)
        last = (starts + lengths - 1).to(device)
        x = self.embed(torch.tensor(list(chain.from_iterable(rows)), device=device)).float()
        cos, sin = self.rotary(x, positions[None].to(device))
        half = self.head_dim // 2
        rot = torch.complex(cos[0, :, :half].float(), sin[0, :, :half].float())[:, None]  # (N, 1, d/2)
        for i, layer in enumerate(self.layers):
            x = self._layer(layer, x, rot, slots, n_rows, width, last if i == len(self.layers) - 1 else None)
        return F.rms_norm(x, x.shape[-1:], self.final_norm, self.eps)

    def _layer(self, layer: _Layer, x: torch.Tensor, rot: torch.Tensor, slots: torch.Tensor | None,
               n_rows: int, width: int, keep: torch.Tensor | None) -> torch.Tensor:
        n, h = x.shape
        d, nq, nkv = self.head_dim, self.heads, self.kv_heads
        qkv = F.linear(_unit_rms(x, self.eps).to(self.dtype), layer.qkv, layer.qkv_bias).float()
        qk = qkv[:, : (nq + nkv) * d]
        rotated = torch.view_as_complex(qk.reshape(n, nq + nkv, d // 2, 2)) * rot
        qk.copy_(torch.view_as_real(rotated).reshape(n, -1))
        if slots is not None:  # to the padded layout; zeros after each text's end, never attended to
            qkv = qkv.new_zeros(n_rows * width, qkv.shape[1]).index_copy_(0, slots, qkv)
        q, k, v = qkv.view(n_rows, width, nq + 2 * nkv, d).transpose(1, 2).split([nq, nkv, nkv], dim=1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling, enable_gqa=nq != nkv)
        att = att.transpose(1, 2).reshape(n_rows * width, nq * d)
        if slots is not None:
            att = att.index_select(0, slots)
        if keep is not None:  # final layer: only the pooled position goes on
            att, x = att.index_select(0, keep), x.index_select(0, keep)
        x = x + F.linear(att.to(self.dtype), layer.o, layer.o_bias)
        for part in x.split(self.mlp_rows):  # views: the residual is updated in place
            gate_up = F.linear(_unit_rms(part, self.eps).to(self.dtype), layer.gate_up)
            inner = gate_up.shape[1] // 2
            part += F.linear(F.silu(gate_up[:, :inner]) * gate_up[:, inner:], layer.down)
        return x


def _unit_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without its weight (folded into the next GEMM): x / sqrt(mean(x²) + eps), computed
    as one norm reduction and one multiply (``F.rms_norm`` on CPU is 4-5 passes over x)."""
    ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1])
    return x * ms.add_(eps).rsqrt_()


def resolve_dtype(dtype: DType | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 where matmuls have native bf16 support (CUDA with bf16, CPUs with
    AVX512-BF16 or AMX per oneDNN), else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        native = device.type == "cpu" and torch.backends.mkldnn.is_available() and _cpu_has_bf16()
        return torch.bfloat16 if native else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def _cpu_has_bf16() -> bool:
    """Native bf16 dot products (avx512_bf16 or AMX); oneDNN's own check passes on plain AVX-512
    too, where bf16 is emulated and slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


# ---------------------------------------------------------------------------- inference


class Encoder:
    """Frozen, batched text → vector encoding with length bucketing.

    Texts are tokenized once, sorted by token length and cut into batches of neighbours (see
    :func:`length_buckets`), within a token budget, so a batch of long texts is made smaller
    rather than blowing up memory. Llama-family backbones run :class:`PackedDecoder`, whose
    matmuls see no padding at all, so a batch only has to keep *attention* padding small and may
    be cut loosely (``max_waste`` 0.5: fewer, larger GEMMs); other backbones run the Hugging Face
    forward on padded batches, cut at ~10% padding.
    """

    def __init__(
        self,
        model: EmbeddingModel,
        device: str | torch.device = "auto",
        max_batch_tokens: int = 16384,
        compile: bool = False,
        dtype: DType | torch.dtype = "float32",
        packed: bool = True,
    ):
        """``dtype``: the precision of the backbone's matmuls. ``"float32"`` (default) reproduces
        the model's own forward to float tolerance. ``"bfloat16"`` runs the GEMMs in bf16 (residual
        stream, norms and head stay float32): ~1.5-2× faster on CPUs with AVX512-BF16/AMX; on
        SmolLM2-135M and shop/scene texts the vectors keep cosine ≥ 0.999 to float32 (measured by
        ``benchmarks/encode_throughput.py``). ``"auto"`` picks bf16 where it is native. The
        default stays float32 so that stores filled by ``larr embed`` (whose encoder identity is
        the weights' fingerprint) never mix precisions.

        ``compile=True`` runs the Hugging Face forward through ``torch.compile(dynamic=True)``
        instead: it fuses the element-wise work between the matmuls, but the first call compiles
        for minutes, so it only pays off for large jobs. ``packed=False`` also keeps the Hugging
        Face forward (the reference the packed path is tested against)."""
        self.device = _device(device)
        self.model = model.to(self.device).eval()
        self.max_batch_tokens = max_batch_tokens
        self.dtype = resolve_dtype(dtype, self.device)
        base = self.model.base
        self.packed = (PackedDecoder(base, self.dtype) if packed and not compile and self.model.is_causal
                       and PackedDecoder.supports(base) else None)
        if self.packed is None and self.dtype != torch.float32:
            base = copy.deepcopy(base).to(self.dtype)  # the model itself stays float32
        self._base = torch.compile(base, dynamic=True) if compile else base

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "auto",
                        dtype: DType | torch.dtype = "float32") -> Encoder:
        """A stage-2 folder (written by :meth:`EmbeddingModel.save_pretrained`)."""
        return cls(EmbeddingModel.from_pretrained(path), device=device, dtype=dtype)

    @classmethod
    def from_causal_lm(cls, path: str | Path, device: str | torch.device = "auto", max_length: int = 256,
                       dtype: DType | torch.dtype = "float32") -> Encoder:
        """Raw last-token mode for baselines: the untuned backbone or the stage-1 model, no head.

        The tokenizer's eos token is appended as the pooled position (what an untuned model knows).
        """
        model = EmbeddingModel.from_causal_lm_folder(path, head_dim=None, append_token=None, max_length=max_length)
        return cls(model, device=device, dtype=dtype)

    @property
    def dim(self) -> int:
        return self.model.dim

    def buckets(self, lengths: list[int], batch_size: int) -> list[np.ndarray]:
        """The batches :meth:`encode` runs (GPUs want bigger matmuls before padding is worth cutting)."""
        min_tokens = 4096 if self.device.type == "cuda" else 512
        max_waste = 0.5 if self.packed is not None else 0.1
        return list(length_buckets(lengths, batch_size, self.max_batch_tokens, max_waste=max_waste,
                                   min_batch_tokens=min_tokens))

    def gemm_rows(self, lengths: list[int], batch_size: int) -> int:
        """Token rows the backbone's matmuls process for these texts: the real tokens when packed,
        else every padded position (for throughput accounting)."""
        if self.packed is not None:
            return sum(lengths)
        return sum(len(b) * max(lengths[i] for i in b) for b in self.buckets(lengths, batch_size))

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Encode ``texts`` → float32 array (len(texts), dim) of unit rows, in input order."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.model.tokenize(list(texts), padding=False)["input_ids"]
        batches = self.buckets([len(x) for x in ids], batch_size)
        bar = _progress(len(texts), progress)
        with torch.inference_mode():
            for rows in batches:
                out[rows] = self._encode_batch([ids[i] for i in rows]).float().cpu().numpy()
                bar.update(len(rows))
        bar.close()
        return out

    def _encode_batch(self, rows: list[list[int]]) -> torch.Tensor:
        if self.packed is not None:
            return self.model.project(self.packed.last_hidden(rows))
        input_ids, mask = _pad(rows, self.model.tokenizer.pad_token_id, self.device)
        pooled = _last_token_hidden(self._base, input_ids, mask, use_mask=not self.model.is_causal)
        return self.model.project(pooled.float())


def length_buckets(
    lengths: list[int],
    batch_size: int,
    max_batch_tokens: int | None = None,
    max_waste: float = 0.1,
    min_batch_tokens: int = 512,
) -> Iterator[np.ndarray]:
    """Yield index arrays over texts sorted longest first, cut so that padding stays small.

    A batch ends when it holds ``batch_size`` texts, when one more text would pass
    ``max_batch_tokens`` padded tokens, or when adding it would make more than ``max_waste`` of
    the batch padding — unless the batch is still under ``min_batch_tokens`` (tiny matmuls
    are slower per token than a little padding). Longest first, so an out-of-memory error
    shows at once rather than at the end.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batch: list[int] = []
    longest = real = 0
    for i in order:
        length = int(lengths[i])
        if batch:
            n = len(batch) + 1
            full = n > batch_size or (max_batch_tokens is not None and n * longest > max_batch_tokens)
            wasteful = 1 - (real + length) / (n * longest) > max_waste and len(batch) * longest >= min_batch_tokens
            if full or wasteful:
                yield np.asarray(batch)
                batch = []
        if not batch:
            longest, real = max(length, 1), 0
        batch.append(int(i))
        real += length
    if batch:
        yield np.asarray(batch)


def _pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a list of id lists into (input_ids, attention_mask) tensors."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return input_ids.to(device), mask.to(device)


class _NoBar:
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encode", unit="text")
