"""The rows of the stage-3 comparison: each row once, with its hyper-parameters, store and doc.

A row is a name (in ``report.json``, run folders ``stage3/<row>_seed<k>`` and the docs), a set of
:class:`larr.config.RecConfig` overrides on top of ``cfg.rec``, the embedding store whose frozen
vectors it reads, and a one-line description. :func:`larr.rec.train.model_setup` turns a name into
its ``RecConfig`` and store; ``experiment.models`` (its default: every row, in this order) and the
``larr train --model`` help are derived from :data:`ROWS`.

To add a row: add one entry to :data:`ROWS` (its position is its place in the table). Its
overrides must validate as ``RecConfig`` fields (``tests/test_rows.py`` checks). The store is
``"larr"`` for *the LARR store* (``experiment.larr_encoder``: the stage-2 model, or a stand-in), an
encoder name of the embed stage (``untuned``, ``minilm``), or ``None`` for a row without LLM input.

This module imports nothing heavy (``larr.config`` reads it).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Row:
    """One row of the comparison."""

    overrides: Mapping[str, Any]  # RecConfig field → value, applied over cfg.rec (read-only)
    store: str | None  # "larr" = experiment.larr_encoder; an encoder name; None = no LLM input
    doc: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))


_LARR = {"scene_ids": True, "scene_encoder": "transformer"}

ROWS: dict[str, Row] = {
    "base": Row({"scene_ids": False, "scene_encoder": "none"}, None, "collaborative model, no scene features"),
    "base_scene_ids": Row({"scene_ids": True, "scene_encoder": "none"}, None,
                          "scene features as categorical IDs (unseen → OOV)"),
    "larr": Row(_LARR, "larr", "full method: stage-2 vectors per feature, Transformer, alignment, "
                "unseen IDs imputed from LLM similarity"),
    "larr_noimpute": Row({**_LARR, "impute_unseen_ids": False}, "larr",
                         "unseen scene IDs stay unknown (no LLM imputation)"),
    "larr_meanpool": Row({"scene_ids": True, "scene_encoder": "meanpool"}, "larr",
                         "mean of the feature tokens instead of the Transformer"),
    "larr_noalign": Row({**_LARR, "align_weight": 0.0}, "larr", "no alignment loss (λ = 0)"),
    "larr_untuned_llm": Row(_LARR, "untuned", "vectors of the untuned backbone LLM"),
    "generic_text": Row(_LARR, "minilm", "generic sentence encoder (MiniLM) per feature, KAR-style"),
    "whole_text": Row({"scene_ids": True, "scene_encoder": "whole_text"}, "larr",
                      "one stage-2 vector per distinct whole scene text"),
}

REFERENCE = "base_scene_ids"  # the ID baseline every LLM row must beat (Δ columns, sweep plots)

LARR_STORE_ROWS = tuple(n for n, r in ROWS.items() if r.store == "larr")
"""Rows that read the LARR store (``experiment.larr_encoder``)."""
