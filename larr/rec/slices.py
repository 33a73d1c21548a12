"""The slices every stage-3 metric is reported on: all rows, and three that partition them.

- ``unseen``: rows with a scene value that never occurs in the train split (the data's own
  ``unseen_scene`` flag) — where an ID model has only its untrained unknown embedding;
- ``rare``: the other rows whose *rarest* scene value occurs in fewer than ``rare_below`` train
  rows — values an ID embedding has seen a handful of times (the long tail of places and events);
- ``frequent``: the rest, every scene value seen at least ``rare_below`` times in train.

Rarity is counted on the scene ID fields, i.e. after float features are bucketised, exactly as an
ID model sees them. ``unseen``, ``rare`` and ``frequent`` are disjoint and cover every row, so a
row's slice says how much an ID model can know about its scene.
"""
from __future__ import annotations

import torch

SLICES = ("all", "unseen", "rare", "frequent")


def train_counts(train_x: torch.Tensor, cols: list[int], vocab_sizes: list[int]) -> list[torch.Tensor]:
    """Per scene ID field (``cols`` of ``x``): how many train rows hold each vocabulary index."""
    return [torch.bincount(train_x[:, c], minlength=vocab_sizes[c]) for c in cols]


def rarest_count(x: torch.Tensor, cols: list[int], counts: list[torch.Tensor]) -> torch.Tensor:
    """(N,) train rows of each row's rarest *seen* scene value (unknown index 0 ignored; no field → a huge count)."""
    big = torch.iinfo(torch.int64).max
    out = torch.full((len(x),), big, dtype=torch.int64)
    for c, n in zip(cols, counts):
        ids = x[:, c]
        seen_n = torch.where(ids > 0, n[ids.clamp(max=len(n) - 1)], torch.full_like(ids, big))
        out = torch.minimum(out, seen_n)
    return out


def slice_masks(tensors: dict[str, torch.Tensor], cols: list[int], counts: list[torch.Tensor],
                rare_below: int) -> dict[str, torch.Tensor]:
    """Boolean masks of :data:`SLICES` for one split's tensors (``x`` and ``unseen``)."""
    unseen = tensors["unseen"].bool()
    rare = ~unseen & (rarest_count(tensors["x"], cols, counts) < rare_below)
    return {"all": torch.ones_like(unseen), "unseen": unseen, "rare": rare, "frequent": ~unseen & ~rare}


def metric_key(split: str, name: str) -> str:
    """Key of a (split, slice) in a run's metrics: ``test``, ``test_unseen``, ``valid_rare``, ..."""
    return split if name == "all" else f"{split}_{name}"
