"""The LLM scene table: which frozen vector sits in which row, and how rows are standardised.

A model with LLM input gathers its scene vectors from one table (the ``scene_llm`` buffer of
:class:`~larr.rec.models.CTRModel`), of one of two kinds:

- **per feature** (``transformer``/``meanpool`` scene modules): every distinct value of every
  scene feature, all splits, keyed ``scene/<feature>/<value>`` (:func:`larr.data.scene.scene_key`),
  in rows ``1 + offset(feature) + j`` — feature by feature, values in their sorted order;
- **whole scene** (the ``whole_text`` ablation): every distinct whole rendered scene, keyed
  ``scene_whole/<text>``, in rows ``1 + i``.

Row 0 is the zero "unknown" row (a value absent from the table). Each kind's rows form
standardisation *groups* (one per feature, or one ``whole`` group): training centres a group's
raw vectors on their mean and divides by their mean norm (:meth:`SceneTable.standardize`), keeps
those statistics next to the model (:class:`TableStats`, ``llm_stats.safetensors``), and serving
maps the raw vector of a value that is not in the table the same way (:meth:`TableStats.apply`).

One object owns all of it, so the embed stage (which texts to encode), training (the matrix),
and serving (key → row, raw → table) cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from larr.data.scene import scene_key, whole_scene_key
from larr.io import atomic_path
from larr.store.base import EmbeddingStore, stack_vectors

UNKNOWN_ROW = 0
WHOLE_GROUP = "whole"  # the one standardisation group of the whole-scene table


def group_moments(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The standardisation rule of one group of raw vectors (N, D): its mean (D,) and its scale,
    the mean norm after centring (at least 1e-8)."""
    mean = block.mean(0)
    return mean, (block - mean).norm(dim=1).mean().clamp_min(1e-8)


@dataclass
class TableStats:
    """Per group: the mean raw vector and the scale (mean norm after centring) of the training table."""

    groups: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)

    def apply(self, group: str, raw: np.ndarray) -> np.ndarray:
        """A raw vector (or rows of them) as the table holds it; unchanged for a group without stats."""
        if group not in self.groups:
            return np.asarray(raw, np.float32)
        mean, scale = self.groups[group]
        return ((np.asarray(raw, np.float32) - mean) / scale).astype(np.float32)

    def save(self, path: Path) -> None:
        """``<group>/mean`` (D,) and ``<group>/scale`` (1,) float32 tensors, one safetensors file."""
        flat = {}
        for g, (mean, scale) in self.groups.items():
            flat[f"{g}/mean"] = np.ascontiguousarray(mean, np.float32)
            flat[f"{g}/scale"] = np.array([scale], np.float32)
        with atomic_path(Path(path)) as tmp:
            save_file(flat, str(tmp))

    @classmethod
    def load(cls, path: Path) -> "TableStats":
        """The statistics a model was trained with; empty when it used raw vectors (no file)."""
        if not Path(path).is_file():
            return cls()
        flat = load_file(str(path))
        groups = {k.rsplit("/", 1)[0] for k in flat}
        return cls({g: (flat[f"{g}/mean"].astype(np.float32), float(flat[f"{g}/scale"][0])) for g in groups})


@dataclass
class SceneTable:
    """Store keys (and texts) of rows 1.., their groups, the matrix from a store (module docstring)."""

    kind: Literal["feature", "whole"]
    keys: list[str]  # store key of row 1 + i
    texts: list[str]  # the text its vector encodes, same order
    groups: dict[str, tuple[int, int]]  # group (feature name, or "whole") → its rows [start, stop)

    @classmethod
    def per_feature(cls, names: list[str], values: dict[str, list[str]], texts: dict[str, list[str]]) -> "SceneTable":
        """The per-feature table of canonical ``values`` (and their rendered ``texts``) of features ``names``."""
        keys, out, groups, start = [], [], {}, UNKNOWN_ROW + 1
        for n in names:
            groups[n] = (start, start + len(values[n]))
            start += len(values[n])
            keys += [scene_key(n, v) for v in values[n]]
            out += texts[n]
        return cls("feature", keys, out, groups)

    @classmethod
    def whole(cls, texts: list[str]) -> "SceneTable":
        """The whole-scene table of distinct rendered scenes ``texts``."""
        return cls("whole", [whole_scene_key(t) for t in texts], list(texts), {WHOLE_GROUP: (1, 1 + len(texts))})

    @property
    def size(self) -> int:
        """Rows, the unknown row 0 included."""
        return 1 + len(self.keys)

    @cached_property
    def rows(self) -> dict[str, int]:
        """Store key → row."""
        return {k: 1 + i for i, k in enumerate(self.keys)}

    def row(self, key: str) -> int:
        """Row of a key; the unknown row 0 for a key not in the table."""
        return self.rows.get(key, UNKNOWN_ROW)

    def start(self, group: str) -> int:
        """First row of a group (a feature's value ``j`` is in row ``start(feature) + j``)."""
        return self.groups[group][0]

    def key_texts(self) -> dict[str, str]:
        """Store key → text: what the embed stage encodes for this table."""
        return dict(zip(self.keys, self.texts))

    # ------------------------------------------------------------------ vectors

    def matrix(self, store: EmbeddingStore) -> torch.Tensor:
        """(size, D) raw frozen LLM vectors from ``store``; row 0 is zero. A missing key is a KeyError."""
        raw = stack_vectors(store, self.keys)
        return torch.from_numpy(np.concatenate([np.zeros((1, raw.shape[1]), np.float32), raw]))

    def standardize(self, table: torch.Tensor) -> torch.Tensor:
        """Centre each group's vectors on their mean and scale them to unit mean norm (row 0 stays zero).

        Why: the texts of one feature share most of their words ("weather: …"), so their LLM vectors
        share a large common component and differ little (MiniLM: cosine 0.5-0.8; a raw causal LM's
        last token: 0.9-0.99). Fed raw, the scene encoder saw near-identical inputs and collapsed to one
        constant output (scene-vector std across scenes ~1e-4). The feature itself is already given by
        the type embedding; what carries meaning is the difference between its values. Centering uses
        every value's text (no labels), so an unseen value is placed relative to the seen ones.
        The statistics are those of the table a model is trained with; :meth:`stats` keeps them so
        that raw vectors of a later value can be mapped the same way (:meth:`TableStats.apply`).
        """
        out = table.clone()
        for start, stop in self.groups.values():
            mean, scale = group_moments(table[start:stop])
            out[start:stop] = (table[start:stop] - mean) / scale
        return out

    def stats(self, table: torch.Tensor) -> TableStats:
        """Per group of the raw ``table``: the mean vector and the scale :meth:`standardize` divides by."""
        groups = {}
        for name, (start, stop) in self.groups.items():
            mean, scale = group_moments(table[start:stop])
            groups[name] = (mean.numpy().astype(np.float32), float(scale))
        return TableStats(groups)
