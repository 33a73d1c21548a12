"""Where tensors run: one rule for every stage (``--device auto`` picks CUDA when present)."""
from __future__ import annotations

import torch


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; a ``torch.device`` as it is; anything else is
    passed to ``torch.device``."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)
