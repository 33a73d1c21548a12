"""The CTR backbones of stage 3: name → the module that maps the concatenated inputs to features.

``rec.backbone`` (and ``experiment.backbone``) must name an entry of :data:`BACKBONES`;
:class:`larr.rec.models.CTRModel` builds it with :func:`build_backbone`. An entry names its class
as ``"module:Class"`` (imported on first use, so this module — which ``larr.config`` reads —
imports no torch) and the ``RecConfig`` fields passed to it after the input width, in order:
``Class(in_dim, *(getattr(rec, f) for f in fields))``. The built module must have ``out_dim``.

To add a backbone: write its ``nn.Module`` (next to :class:`larr.rec.models.DCNv2`, say) and add
one entry here; ``tests/test_rows.py`` builds every entry.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Backbone:
    target: str  # "module:Class"
    fields: tuple[str, ...]  # RecConfig fields passed after in_dim
    doc: str


BACKBONES: dict[str, Backbone] = {
    "dnn": Backbone("larr.rec.models:DNN", ("hidden", "dropout"), "plain MLP over the concatenated inputs"),
    "dcnv2": Backbone("larr.rec.models:DCNv2", ("hidden", "cross_layers", "dcn_structure", "dropout"),
                      "DCN-V2: cross network and MLP, side by side or stacked (rec.dcn_structure)"),
}


def check_backbone(name: str) -> str:
    """``name`` if it is a registered backbone, else a ValueError naming the known ones (for validators)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})")
    return name


def build_backbone(name: str, in_dim: int, rec: Any) -> Any:
    """The backbone ``name`` for ``in_dim`` input features, sized by the RecConfig ``rec``."""
    entry = BACKBONES[check_backbone(name)]
    module, _, cls = entry.target.partition(":")
    return getattr(importlib.import_module(module), cls)(in_dim, *(getattr(rec, f) for f in entry.fields))
