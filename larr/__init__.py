"""larr: an open implementation of LARR (LLM-aided real-time scene recommendation, RecSys 2024)."""

__version__ = "0.1.0"
