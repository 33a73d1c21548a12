"""Where tensors run: one rule for every stage (``--device auto`` picks CUDA when present)."""
from __future__ import annotations

import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)
