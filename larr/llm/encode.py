"""Fast batched inference with a stage-2 model: texts → unit vectors (:class:`Encoder`).

The inference path used by later stages: texts sorted by token length and batched with
neighbours (:func:`length_buckets`), ``torch.inference_mode``, and for Llama-family backbones a
lean frozen forward (:class:`larr.llm.packed.PackedDecoder`): matmuls over real tokens only (no
padding rows), fused projections, one-pass rotary embeddings, and the last layer run only where
the pooled state is read. Other backbones take the Hugging Face forward without an attention mask
where that is exact (see :func:`larr.llm.embedding_model.last_token_hidden`).

The model itself is :class:`larr.llm.embedding_model.EmbeddingModel`; the ``<emb>`` summary
token is :mod:`larr.llm.tokens`; the saved folder's layout is :mod:`larr.llm.st_folder`.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from larr.device import native_bf16, resolve_device
from larr.llm.embedding_model import EmbeddingModel, last_token_hidden
from larr.llm.packed import PackedDecoder
from larr.train_utils import progress_bar

DType = Literal["auto", "float32", "bfloat16"]


def resolve_dtype(dtype: DType | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 where matmuls have native bf16 support (:func:`larr.device.native_bf16`),
    else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


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
        self.device = resolve_device(device)
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
        bar = progress_bar(len(texts), "encode", progress)
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
        pooled = last_token_hidden(self._base, input_ids, mask, use_mask=not self.model.is_causal)
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
