"""The registries of comparison rows (larr.rec.rows) and CTR backbones (larr.rec.backbones)."""
from __future__ import annotations

import pytest
import torch
import typer.main

from larr.cli import app
from larr.config import ENCODERS, ConfigError, ExperimentConfig, RecConfig, load_config
from larr.rec.backbones import BACKBONES
from larr.rec.rows import REFERENCE, ROWS
from test_models import _batch, _model


@pytest.mark.parametrize("name", list(ROWS))
def test_every_row_is_a_valid_rec_config_and_store(name):
    row = ROWS[name]
    rec = RecConfig(**row.overrides)
    assert all(getattr(rec, k) == v for k, v in row.overrides.items())
    assert row.store in (None, "larr", *ENCODERS) and row.doc and "\n" not in row.doc
    assert (row.store is None) == (rec.scene_encoder == "none")


def test_config_default_and_cli_help_list_the_registry():
    assert ExperimentConfig().models == list(ROWS) and REFERENCE in ROWS
    train = typer.main.get_command(app).commands["train"]
    (model_opt,) = [p for p in train.params if "--model" in p.opts]
    assert model_opt.help.removeprefix("Row of the comparison: ").removesuffix(".").split(", ") == list(ROWS)


@pytest.mark.parametrize("key", ["rec.backbone", "experiment.backbone"])
def test_unknown_backbone_is_a_one_line_config_error_naming_the_known_ones(key):
    with pytest.raises(ConfigError, match=f"{key}: .*unknown backbone 'resnet'") as exc:
        load_config(None, [f"{key}=resnet"])
    msg = str(exc.value)
    assert "\n" not in msg and all(name in msg for name in BACKBONES)
    assert load_config(None, [f"{key}=dnn"])  # a registered one is fine


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_ctr_model_builds_every_registered_backbone(backbone):
    model = _model(backbone=backbone, **ROWS["larr"].overrides)
    assert model.head.in_features == model.backbone.out_dim
    out = model(_batch(16))
    assert out.logit.shape == (16,) and torch.isfinite(out.logit).all()
