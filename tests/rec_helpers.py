"""Shared by the stage-3 tests: a tiny CTR configuration."""
from __future__ import annotations

from larr.config import Config, load_config

TINY_REC = ["rec.embed_dim=4", "rec.hidden=[16]", "rec.cross_layers=1", "rec.scene_dim=8", "rec.scene_heads=2",
            "rec.scene_layers=1", "rec.scene_size=8", "rec.align_dim=8", "rec.batch_size=512", "rec.lr=1e-2",
            "rec.epochs=2", "rec.threads=1", "rec.patience=5"]


def rec_cfg(*overrides: str) -> Config:
    """The tiny CTR config over the stub 'minilm' store of the ``quick_run`` fixture."""
    return load_config(None, ["device=cpu", "experiment.larr_encoder=minilm", *TINY_REC, *overrides])
