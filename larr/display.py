"""How numbers read, in the console and in report.md: one formatter for every table.

``fmt`` is the cell of a table (``n/a`` for a missing value, thousands separators for counts);
``mean_pm`` is a seed mean with its spread; ``world_table`` is the summary ``larr data synth`` and
``larr demo`` print of the generated (or converted) data.
"""
from __future__ import annotations

from typing import Any


def fmt(v: Any, digits: int | None = 4) -> str:
    """A table cell: floats to ``digits`` decimals (``None``: 4 significant digits), ints with separators."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}" if digits is None else f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def mean_pm(v: float | None, s: float | None) -> str:
    """``mean ± std`` (just the mean when there is no spread, e.g. a single seed)."""
    return fmt(v) if v is None or s is None else f"{v:.4f} ± {s:.4f}"


def row_pm(row: dict, key: str) -> str:
    """``mean ± std`` of metric ``key`` of an aggregated row (``key`` and ``key_std``)."""
    return mean_pm(row.get(key), row.get(f"{key}_std"))


def world_table(summary: dict) -> Any:
    """The data summary (counts, shares, reference AUCs) as a two-column rich Table."""
    from rich.table import Table

    t = Table(title="world", show_header=False)
    for k, v in summary.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={fmt(b, None)}" for a, b in v.items())
        t.add_row(str(k), fmt(v, None))
    return t
