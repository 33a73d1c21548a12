"""Where tensors run: one rule for every stage (``--device auto`` picks CUDA when present)."""
from __future__ import annotations

from pathlib import Path

import torch


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; a ``torch.device`` as it is; anything else is
    passed to ``torch.device``."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls run natively here: CUDA with bf16, or a CPU with AVX512-BF16 or AMX.

    Elsewhere bf16 is emulated, and slower than float32 — on an AVX2-only CPU ~100x (1.2 vs 114
    GFLOP/s measured on a 2-core AMD EPYC), which turns a minutes-long stage into an hour. oneDNN's
    own check passes on plain AVX-512 too, so the CPU's flags decide.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags
