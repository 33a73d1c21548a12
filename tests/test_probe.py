"""The scene-input probes (larr.rec.probe): they detect a model that ignores its scene vector."""
from __future__ import annotations

import torch

from larr.rec.models import CTRModel, ModelDims, predict
from larr.rec.probe import PROBES, probe_metrics, probe_predictions, probe_table
from larr.rec.rows import ROWS
from larr.config import RecConfig

torch.set_num_threads(1)


def _model_and_rows(n=400):
    dims = ModelDims(["user_id", "shop_id", "scene:a", "scene:b"], ["user", "item", "scene", "scene"],
                     [20, 30, 5, 5], 2, 9, 2, 12, [[1, 2, 3, 4], [1, 2, 3, 4]])
    torch.manual_seed(0)
    cfg = RecConfig(embed_dim=4, backbone="dnn", hidden=[16], scene_dim=16, scene_heads=2, scene_size=4,
                    dropout=0.0, **ROWS["larr_noimpute"].overrides)
    model = CTRModel(cfg, dims, torch.randn(9, 12)).eval()
    g = torch.Generator().manual_seed(1)
    scene = torch.randint(1, 9, (n, 2), generator=g)
    x = torch.stack([torch.randint(0, 20, (n,), generator=g), torch.randint(0, 30, (n,), generator=g),
                     torch.randint(0, 5, (n,), generator=g), torch.randint(0, 5, (n,), generator=g)], 1)
    tensors = {"x": x, "scene": scene, "whole": torch.zeros(n, dtype=torch.long)}
    return model, tensors


def _scene_columns(model):
    """Input columns of the backbone's first layer that read the scene vector (they come last)."""
    return slice(model.backbone.deep[0].in_features - model.cfg.scene_size, None)


def test_probes_find_no_use_of_a_scene_vector_the_backbone_ignores():
    model, tensors = _model_and_rows()
    with torch.no_grad():
        model.backbone.deep[0].weight[:, _scene_columns(model)] = 0.0  # the scene vector reaches nothing
    p = predict(model, tensors)
    tensors["label"] = torch.from_numpy((p > torch.tensor(p).median().item()).astype("float32"))
    masks = {"all": torch.ones(len(p), dtype=torch.bool)}
    got = probe_metrics(model, tensors, masks, p)
    assert got["vector_mean"]["all"] == 0.0 and got["vector_shuffle"]["all"] == 0.0


def test_probes_find_a_scene_vector_the_model_relies_on():
    model, tensors = _model_and_rows()
    with torch.no_grad():
        model.backbone.deep[0].weight[:, : _scene_columns(model).start] = 0.0  # only the scene vector counts
    p = predict(model, tensors)
    tensors["label"] = torch.from_numpy((p > torch.tensor(p).median().item()).astype("float32"))
    masks = {"all": torch.ones(len(p), dtype=torch.bool), "none": torch.zeros(len(p), dtype=torch.bool)}
    got = probe_metrics(model, tensors, masks, p)
    assert set(got) == set(PROBES)
    for probe in PROBES:
        assert got[probe]["all"] < -0.2 and got[probe]["none"] is None  # an empty slice has no AUC
    # seeded: the same probe twice gives the same predictions, and the model is left intact
    a, b = (probe_predictions(model, tensors, "vector_shuffle", seed=3) for _ in range(2))
    assert (a == b).all() and model.scene_probe is None and (predict(model, tensors) == p).all()


def test_probe_table_pairs_seeds_and_the_report_renders_it():
    from larr.report_md import render_markdown

    def run(d):
        return {"probe_test": {p: {"all": d, "unseen": 2 * d} for p in PROBES}}

    done = {("larr", 0): run(-0.01), ("larr", 1): run(-0.03), ("base", 0): {}, ("base", 1): {}}
    table = probe_table(done, ["base", "larr"], [0, 1])
    assert set(table) == {"larr"}  # a row without a scene module has no probes
    e = table["larr"]["vector_mean"]["unseen"]
    assert e["deltas"] == [-0.02, -0.06] and abs(e["mean"] + 0.04) < 1e-12 and e["lo"] < e["mean"] < e["hi"]
    md = render_markdown({"probe": table})
    assert "does the model use its scene input" in md and "| `larr` | -0.0200 [" in md
