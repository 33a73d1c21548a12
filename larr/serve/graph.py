"""The scoring graph shared by the PyTorch and the ONNX backends.

A request is one user and one scene with N candidate shops, so the scene module runs once
per request, not once per candidate: :class:`ScoringGraph` takes the field indices of the N
rows and the request's *one* scene input, encodes the scene once and broadcasts it. It is the
forward pass of :class:`~larr.rec.models.CTRModel` (same sub-modules, same weights) minus the
alignment towers, which only training needs — and it is exactly what ``larr export`` writes
to ONNX, so both backends compute one function.

Inputs: ``x`` (N, n_fields) int64 field indices; ``scene`` float32, the *standardised* LLM
vectors of the request's scene — (1, F, D) per feature for the ``transformer``/``meanpool``
scene modules, (1, D) for ``whole_text`` — absent for models without LLM input.
Output: (N,) click probabilities.
"""
from __future__ import annotations

import torch
from torch import nn

from larr.rec.models import CTRModel


class ScoringGraph(nn.Module):
    def __init__(self, model: CTRModel) -> None:
        super().__init__()
        self.model = model.eval()
        self.used = list(model.used)

    @property
    def has_scene(self) -> bool:
        return self.model.scene_encoder is not None

    def scene_shape(self) -> tuple[int, ...]:
        """Shape of the ``scene`` input (without it, ``()``)."""
        if not self.has_scene:
            return ()
        dims = self.model.dims
        return (1, dims.llm_dim) if self.model.cfg.scene_encoder == "whole_text" else (1, dims.n_scene, dims.llm_dim)

    def forward(self, x: torch.Tensor, scene: torch.Tensor | None = None) -> torch.Tensor:
        m = self.model
        ids = x[:, self.used]
        emb = m.embedding(ids)
        if m.imputer is not None:  # never-seen scene values borrow their LLM neighbours' ID embeddings
            # the request's one scene (1, F, D): imputed once, broadcast over the candidates
            emb = m.imputer(emb, ids, m.embedding.tables, m.scene_llm, None, scene)
        parts = [emb.flatten(1)]
        if m.scene_encoder is not None:
            parts.append(m.scene_encoder(scene).expand(x.shape[0], -1))
        return torch.sigmoid(m.head(m.backbone(torch.cat(parts, dim=-1))).squeeze(-1))
