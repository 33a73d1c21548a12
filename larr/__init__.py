"""larr: an open implementation of LARR (LLM-aided real-time scene recommendation, RecSys 2024)."""

__version__ = "0.1.0"

__all__ = ["Encoder"]


def __getattr__(name: str):
    """Lazy exports: ``import larr`` stays light (no torch/transformers until first use)."""
    if name == "Encoder":
        from larr.llm.encode import Encoder

        return Encoder
    raise AttributeError(f"module 'larr' has no attribute {name!r}")
