"""The scoring graph shared by the PyTorch and the ONNX backends.

A request is one user and one scene with N candidate shops, so the scene module runs once
per request, not once per candidate: :class:`ScoringGraph` takes the field indices of the N
rows and the request's *one* scene input, encodes the scene once and broadcasts it. It is the
model's own scoring (:meth:`~larr.rec.models.CTRModel.score`, what its forward pass computes
minus the alignment towers, which only training needs) plus the sigmoid — and it is exactly what
``larr export`` writes to ONNX, so both backends compute one function.

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
        # the request's one scene (1, F, D) or (1, D): encoded (and imputed) once, broadcast over the candidates
        return torch.sigmoid(self.model.score(x, vectors=scene).logit)
