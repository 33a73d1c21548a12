"""A lean, frozen forward for Llama-family decoders (:class:`PackedDecoder`), used by the encoder.

Matmuls run over real tokens only (no padding rows), with fused projections, one-pass rotary
embeddings, and the last layer run only where the pooled state is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import torch
import torch.nn.functional as F
from torch import nn

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
      final layer (and the final norm) run for one token per text, and so does its attention's
      query (:func:`attend_last`, shared with :func:`last_token_block` in training);
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
            is_llama_block(layer) and all(hasattr(layer.mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))
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
        last = (lengths - 1).to(device)  # each text's last position: in its row, and in the packed tokens
        keep = (starts + lengths - 1).to(device)
        x = self.embed(torch.tensor(list(chain.from_iterable(rows)), device=device)).float()
        cos, sin = self.rotary(x, positions[None].to(device))
        half = self.head_dim // 2
        rot = torch.complex(cos[0, :, :half].float(), sin[0, :, :half].float())[:, None]  # (N, 1, d/2)
        for i, layer in enumerate(self.layers):
            final = i == len(self.layers) - 1
            x = self._layer(layer, x, rot, slots, n_rows, width, (last, keep) if final else None)
        return F.rms_norm(x, x.shape[-1:], self.final_norm, self.eps)

    def _layer(self, layer: _Layer, x: torch.Tensor, rot: torch.Tensor, slots: torch.Tensor | None,
               n_rows: int, width: int, pooled: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """One decoder layer over the packed tokens; with ``pooled`` (the final layer: each text's
        last position in its row and in the packed tokens) its output there only, (B, h)."""
        n, h = x.shape
        d, nq, nkv = self.head_dim, self.heads, self.kv_heads
        qkv = F.linear(_unit_rms(x, self.eps).to(self.dtype), layer.qkv, layer.qkv_bias).float()
        qk = qkv[:, : (nq + nkv) * d]
        rotated = torch.view_as_complex(qk.reshape(n, nq + nkv, d // 2, 2)) * rot
        qk.copy_(torch.view_as_real(rotated).reshape(n, -1))
        if slots is not None:  # to the padded layout; zeros after each text's end, never attended to
            qkv = qkv.new_zeros(n_rows * width, qkv.shape[1]).index_copy_(0, slots, qkv)
        q, k, v = qkv.view(n_rows, width, nq + 2 * nkv, d).transpose(1, 2).split([nq, nkv, nkv], dim=1)
        if pooled is not None:  # final layer: only the pooled position goes on
            last, keep = pooled
            att = attend_last(q[torch.arange(n_rows, device=x.device), :, last], k, v, last, self.scaling)
            x = x.index_select(0, keep)
        else:
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling, enable_gqa=nq != nkv)
            att = att.transpose(1, 2).reshape(n_rows * width, nq * d)
            if slots is not None:
                att = att.index_select(0, slots)
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




# ---------------------------------------------------------------------------- the last position only
# Only the pooled (last) position of the final layer is read, yet a layer's own forward computes
# attention and MLP for every token. Both the encoder (PackedDecoder) and stage-2 training
# (last_token_block, over cached states) run the final layer's query, attention, output projection
# and MLP for one token per text, with this one attention.


def is_llama_block(layer: nn.Module) -> bool:
    """Is ``layer`` a Llama-style pre-norm block (Llama, Mistral, Qwen2, SmolLM…): q/k/v/o
    projections with rotary embeddings and no q/k norms, an RMSNorm before attention and MLP?"""
    attn = getattr(layer, "self_attn", None)
    return (
        attn is not None
        and all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling"))
        and not hasattr(attn, "q_norm")
        and all(hasattr(layer, n) for n in ("input_layernorm", "post_attention_layernorm", "mlp"))
    )


def attend_last(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, last: torch.Tensor,
                scaling: float) -> torch.Tensor:
    """Causal attention for one query per row: ``q`` (B, H, d) at position ``last`` (B,) over
    keys/values (B, Hkv, T, d) at positions ≤ ``last`` (grouped-query heads: q head i reads kv
    head i // (H / Hkv)). Returns (B, H·d); softmax in float32."""
    b, t = k.shape[0], k.shape[2]
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = torch.einsum("bhd,bhtd->bht", q, k) * scaling
    future = torch.arange(t, device=k.device)[None, :] > last[:, None]
    scores = scores.masked_fill(future[:, None, :], float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.einsum("bht,bhtd->bhd", probs, v).reshape(b, -1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def last_token_block(layer: nn.Module, hidden: torch.Tensor, last: torch.Tensor,
                     cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """A Llama-style decoder layer's output at each row's ``last`` position only, shape (B, h),
    with the layer's own modules (so it trains them).

    Keys and values are projected for all tokens (cheap) but query, attention output and the MLP
    (three quarters of a layer's FLOPs) run for one token per text — ~10x less work per stage-2
    step. Exactness is tested against the model's own forward.
    """
    attn = layer.self_attn
    b, t, _ = hidden.shape
    rows = torch.arange(b, device=hidden.device)
    x = layer.input_layernorm(hidden)
    d = attn.head_dim
    q = attn.q_proj(x[rows, last]).view(b, -1, d)  # (B, H, d)
    k = attn.k_proj(x).view(b, t, -1, d).transpose(1, 2)  # (B, Hkv, T, d)
    v = attn.v_proj(x).view(b, t, -1, d).transpose(1, 2)
    cos_t, sin_t = cos[:, None], sin[:, None]  # (1, 1, T, d)
    k = k * cos_t + _rotate_half(k) * sin_t
    cos_q, sin_q = cos[0, last][:, None], sin[0, last][:, None]  # (B, 1, d)
    q = q * cos_q + _rotate_half(q) * sin_q
    h = hidden[rows, last] + attn.o_proj(attend_last(q, k, v, last, attn.scaling))
    return h + layer.mlp(layer.post_attention_layernorm(h))
