"""Stage-3 features and models (features tests live here too: one file per stage-3 core)."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from larr.data.schema import SceneFeature, read_scene_features, write_dataset_meta
from larr.rec.features import Batches, FeatureSpec, build_features
from larr.rec.models import (
    CTRModel,
    ModelDims,
    RecConfig,
    SceneEncoder,
    alignment_loss,
    ctr_loss,
    load_model,
    predict,
    save_model,
)
from larr.rec.rows import ROWS
from larr.store import DiskStore

torch.set_num_threads(1)

# ---------------------------------------------------------------------------- features


def _tiny(d):
    """The tiny data plus a float scene feature and a test row with an unseen user, shop, position."""
    imps = pq.read_table(d / "impressions.parquet").to_pylist()
    for r, t in zip(imps, [21.5, 21.5, 35.0, 35.0]):
        r["temp"] = t
    imps.append({**imps[-1], "user_id": 1, "shop_id": 2, "position": 7})
    pq.write_table(pa.Table.from_pylist(imps), d / "impressions.parquet")
    shops = pq.read_table(d / "shops.parquet").to_pylist()
    pq.write_table(pa.Table.from_pylist(shops + [{**shops[0], "shop_id": 2, "category": "noodles"}]),
                   d / "shops.parquet")
    users = pq.read_table(d / "users.parquet").to_pylist()
    pq.write_table(pa.Table.from_pylist(users + [{**users[0], "user_id": 1, "home_district": "New Port"}]),
                   d / "users.parquet")
    scene = read_scene_features(d) + [SceneFeature("temp", "float", "temperature: {value:.0f} °C")]
    write_dataset_meta(d, scene, name="tiny")
    return d


def test_vocab_from_train_only_and_oov_is_zero(tiny_data):
    spec, splits = build_features(_tiny(tiny_data))
    vocab = {f.name: f.vocab for f in spec.fields}
    assert vocab["user_id"] == ["0"] and vocab["shop_id"] == ["0", "1"] and vocab["category"] == ["hotpot", "ice cream"]
    assert vocab["scene:weather"] == ["heavy rain"] and vocab["scene:hour"] == ["12"]
    test = splits["test"]
    col = {n: test["x"][:, i].tolist() for i, n in enumerate(spec.field_names)}
    assert col["user_id"] == [1, 1, 0]  # user 1 never in train
    assert col["shop_id"] == [1, 2, 0] and col["category"] == [1, 2, 0] and col["user_home"] == [1, 1, 0]
    assert col["position"] == [1, 2, 0]
    assert col["scene:weather"] == [0, 0, 0] and col["scene:hour"] == [0, 0, 0]  # unseen scene values
    assert splits["train"]["x"][:, spec.field_names.index("scene:weather")].tolist() == [1, 1]


def test_scene_table_covers_all_splits(tiny_data):
    spec, splits = build_features(_tiny(tiny_data))
    assert spec.scene_values == {"weather": ["heatwave", "heavy rain"], "hour": ["12", "19"], "temp": ["21.5", "35.0"]}
    assert spec.scene_texts["temp"] == ["temperature: 22 °C", "temperature: 35 °C"]  # rendered from raw floats
    keys = spec.scene_table().keys
    assert keys[:2] == ["scene/weather/heatwave", "scene/weather/heavy rain"] and len(keys) == 6
    rows = splits["test"]["scene"]  # never 0: unseen values have LLM vectors
    assert [keys[i - 1] for i in rows[0].tolist()] == ["scene/weather/heatwave", "scene/hour/19", "scene/temp/35.0"]
    assert spec.whole_texts == ["weather: heatwave; hour: 19:00; temperature: 35 °C",
                                "weather: heavy rain; hour: 12:00; temperature: 22 °C"]
    assert splits["test"]["whole"].tolist() == [1, 1, 1] and splits["train"]["whole"].tolist() == [2, 2]
    texts = {**spec.scene_table().key_texts(), **spec.scene_table(whole=True).key_texts()}
    assert texts["scene/hour/19"] == "hour: 19:00" and len(texts) == 8
    assert spec.buckets["temp"] and spec.field_names[-1] == "scene:temp"


def test_scene_feature_may_share_a_name_with_a_shop_column(tiny_data):
    imps = pq.read_table(tiny_data / "impressions.parquet")
    imps = imps.append_column("district", pa.array(["Harbour", "Harbour", "Airport", "Airport"]))
    pq.write_table(imps, tiny_data / "impressions.parquet")
    scene = read_scene_features(tiny_data) + [SceneFeature("district", "str", "district: {value}")]
    write_dataset_meta(tiny_data, scene)
    spec, _ = build_features(tiny_data)
    vocab = {f.name: f.vocab for f in spec.fields}
    assert vocab["shop_district"] == ["Old Town", "Riverside"] and vocab["scene:district"] == ["Harbour"]
    assert spec.scene_values["district"] == ["Airport", "Harbour"]


def test_shapes_spec_round_trip_and_llm_tables(tiny_data, tmp_path):
    spec, splits = build_features(_tiny(tiny_data))
    t = splits["test"]
    assert t["x"].shape == (3, len(spec.fields)) and t["x"].dtype == torch.int64
    assert t["scene"].shape == (3, 3) and t["label"].dtype == torch.float32 and t["unseen"].dtype == torch.bool
    assert splits["valid"]["x"].shape == (0, len(spec.fields))
    spec.save(tmp_path / "features.json")
    assert FeatureSpec.load(tmp_path / "features.json") == spec
    store = DiskStore(tmp_path / "emb")
    texts = {**spec.scene_table().key_texts(), **spec.scene_table(whole=True).key_texts()}
    store.put_many({k: np.full(5, i, np.float32) for i, k in enumerate(texts)})
    table = spec.scene_table().matrix(store)
    assert table.shape == (spec.scene_table().size, 5) and table[0].abs().sum() == 0 and table[1, 0] == 0
    assert spec.scene_table(whole=True).matrix(store).shape == (3, 5)


def test_batches_are_seeded_and_cover_every_row():
    data = {"a": torch.arange(10), "b": torch.arange(10) * 2}
    first = [b["a"].tolist() for b in Batches(data, 4, seed=3)]
    assert first == [b["a"].tolist() for b in Batches(data, 4, seed=3)]
    assert sorted(sum(first, [])) == list(range(10)) and [len(x) for x in first] == [4, 4, 2]
    batches = Batches(data, 4, seed=3, drop_last=True)
    assert len(batches) == 2 and all((b["b"] == 2 * b["a"]).all() for b in batches)
    assert [b["a"].tolist() for b in batches] != first[:2]  # the next epoch reshuffles
    shards = [sum((b["a"].tolist() for b in Batches(data, 4, seed=1, rank=r, world_size=3)), []) for r in range(3)]
    assert all(len(s) == 3 for s in shards) and len(set(sum(shards, []))) == 9


# ---------------------------------------------------------------------------- scene encoder


def _encoder(pool="agg"):
    torch.manual_seed(0)
    return SceneEncoder(n_features=4, llm_dim=12, d=16, n_layers=2, n_heads=2, out_size=8, pool=pool).eval()


def test_agg_output_sees_every_feature_bidirectional():
    enc, v = _encoder(), torch.randn(3, 4, 12)
    out = enc(v)
    for i in (0, 3):  # with a causal mask, <agg> (position 0) would see neither
        changed = v.clone()
        changed[:, i] = torch.randn(3, 12)
        assert not torch.allclose(enc(changed), out, atol=1e-5)


def test_permutation_behaviour():
    enc, v = _encoder(), torch.randn(3, 4, 12)
    out = enc(v)
    perm = [2, 0, 3, 1]
    assert not torch.allclose(enc(v[:, perm]), out, atol=1e-5)  # values moved to other features
    moved = copy.deepcopy(enc)
    moved.type_emb.data = enc.type_emb.data[perm]  # (feature, value) pairs permuted together
    torch.testing.assert_close(moved(v[:, perm]), out, atol=1e-5, rtol=1e-5)


def test_meanpool_variant_shape():
    assert _encoder("mean")(torch.randn(5, 4, 12)).shape == (5, 8)


# ---------------------------------------------------------------------------- CTR model


def _dims(n_scene=3, table=7, llm_dim=12):
    return ModelDims(["user_id", "shop_id", "category", "position", "scene:a", "scene:b", "scene:c"],
                     ["user", "item", "item", "context", "scene", "scene", "scene"],
                     [20, 30, 5, 4, 3, 3, 3], n_scene, table, 4, llm_dim)


def _batch(n=64, seed=0, dims=None):
    g = torch.Generator().manual_seed(seed)
    dims = dims or _dims()
    x = torch.stack([torch.randint(0, s, (n,), generator=g) for s in dims.vocab_sizes], 1)
    return {"x": x, "scene": torch.randint(0, dims.scene_table, (n, dims.n_scene), generator=g),
            "whole": torch.randint(0, dims.whole_table, (n,), generator=g),
            "label": (x[:, 1] % 2 == 0).float(),  # separable: clicks depend on the shop id
            "request": torch.arange(n) // 4}


def _model(**over):
    torch.manual_seed(0)
    cfg = RecConfig(embed_dim=8, hidden=[32, 16], scene_dim=16, scene_heads=2, scene_size=8, align_dim=8,
                    dropout=0.0, **over)
    rows = 4 if cfg.scene_encoder == "whole_text" else 7
    return CTRModel(cfg, _dims(), torch.randn(rows, 12))


@pytest.mark.parametrize("backbone,structure", [("dnn", "parallel"), ("dcnv2", "parallel"), ("dcnv2", "stacked")])
def test_backbones_learn_a_separable_problem(backbone, structure):
    model = _model(backbone=backbone, dcn_structure=structure, **ROWS["base_scene_ids"].overrides)
    batch = _batch(256)
    out = model(batch)
    assert out.logit.shape == (256,) and out.scene is None
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    before = ctr_loss(model(batch), batch, model.cfg)[0].item()
    for _ in range(40):
        opt.zero_grad()
        ctr_loss(model(batch), batch, model.cfg)[0].backward()
        opt.step()
    assert ctr_loss(model(batch), batch, model.cfg)[0].item() < 0.5 * before


@pytest.mark.parametrize("variant", ["base", "larr", "larr_meanpool", "whole_text", "larr_noalign"])
def test_variants_forward(variant):
    model = _model(**ROWS[variant].overrides)
    out = model(_batch(16))
    assert out.logit.shape == (16,)
    aligning = variant in ("larr", "larr_meanpool", "whole_text")
    assert (out.scene is not None) == aligning and (out.collab is not None) == aligning
    if aligning:
        assert out.scene.shape == out.collab.shape == (16, 8)
    n_x = len(model.embedding.tables)
    assert n_x == (4 if variant == "base" else 7)
    if aligning:
        assert model.collab_fields == [0, 4, 5, 6]  # user_id + scene ID fields, never item fields
        assert _model(**ROWS[variant].overrides, align_with="user").collab_fields == [0]


def test_llm_table_is_a_frozen_buffer():
    model = _model(**ROWS["larr"].overrides)
    assert "scene_llm" in dict(model.named_buffers()) and "scene_llm" in model.state_dict()
    assert all(p is not model.scene_llm for p in model.parameters())
    batch = _batch(32)
    loss, parts = ctr_loss(model(batch), batch, model.cfg)
    loss.backward()
    assert set(parts) == {"bce", "align"}
    assert model.scene_llm.grad is None and not model.scene_llm.requires_grad
    assert model.scene_encoder.proj.weight.grad is not None  # the encoder above it does learn


def test_raw_llm_vectors_override_the_table_and_dedup_is_exact():
    model = _model(**ROWS["larr"].overrides).eval()
    batch = _batch(8)
    batch["scene"] = batch["scene"][torch.arange(8) // 2]  # pairs share a scene, encoded once
    raw = dict(batch, scene_llm=model.scene_llm[batch["scene"]])
    torch.testing.assert_close(model(raw).logit, model(batch).logit)


def _imputing_model(value_rows=None, **over):
    """Feature a: values (seen as ID 1, seen as ID 2, never seen) in table rows 1-3; b: rows 4-5 (IDs 1, 2);
    c: rows 6-7, a bucketed float feature (-1: its IDs are buckets, never imputed). ``value_rows``: train
    rows of each value (ModelDims.scene_value_rows)."""
    dims = ModelDims(**{**_dims(table=8).__dict__, "scene_vocab_ids": [[1, 2, 0], [1, 2], [-1, -1]],
                        "scene_value_rows": value_rows})
    table = torch.randn(8, 12)
    table[0] = 0  # the unknown value's row, as in every LLM table
    table[3] = 5 * table[2] + 0.01 * torch.randn(12)  # the unseen value "means" what seen ID 2 means
    torch.manual_seed(0)
    cfg = RecConfig(embed_dim=8, hidden=[32, 16], scene_dim=16, scene_heads=2, scene_size=8, align_dim=8,
                    dropout=0.0, **{**ROWS["larr"].overrides, **over})
    return CTRModel(cfg, dims, table).eval()


def _scene_batch(a_id: int, a_row: int, c_id: int = 0) -> dict[str, torch.Tensor]:
    x = torch.tensor([[1, 2, 3, 0, a_id, 1, c_id]])
    return {"x": x, "scene": torch.tensor([[a_row, 4, 6]]), "whole": torch.zeros(1, dtype=torch.long),
            "label": torch.zeros(1), "request": torch.zeros(1, dtype=torch.long)}


def test_unseen_scene_id_borrows_the_embedding_of_its_llm_neighbour():
    model = _imputing_model(impute_temperature=0.01)
    unseen = model(_scene_batch(a_id=0, a_row=3)).logit
    # the unknown ID of a never-seen value now acts as seen ID 2, its LLM neighbour (same scene input)
    torch.testing.assert_close(unseen, model(_scene_batch(a_id=2, a_row=3)).logit, atol=1e-4, rtol=0)
    assert not torch.allclose(unseen, model(_scene_batch(a_id=1, a_row=3)).logit, atol=1e-4)
    plain = _imputing_model(impute_unseen_ids=False)
    assert not torch.allclose(unseen, plain(_scene_batch(a_id=0, a_row=3)).logit, atol=1e-4)
    # the serving path (vectors given instead of table rows) imputes the same way
    b = _scene_batch(a_id=0, a_row=3)
    raw = dict(b, scene_llm=model.scene_llm[b["scene"]])
    torch.testing.assert_close(model(raw).logit, unseen)


def test_imputation_leaves_seen_ids_and_bucketed_features_alone():
    on, off = _imputing_model(), _imputing_model(impute_unseen_ids=False)
    on.load_state_dict(off.state_dict())
    for batch in (_scene_batch(a_id=1, a_row=1), _scene_batch(a_id=2, a_row=2, c_id=0)):
        torch.testing.assert_close(on(batch).logit, off(batch).logit)
    # a value missing from the request (row 0) has no vector: it stays the unknown ID
    torch.testing.assert_close(on(_scene_batch(a_id=0, a_row=0)).logit, off(_scene_batch(a_id=0, a_row=0)).logit)


def _field_a_embedding(model, batch) -> torch.Tensor:
    """Feature a's field embedding as the backbone sees it (after the imputer)."""
    ids = batch["x"][:, model.used]
    emb = model.imputer(model.embedding(ids), ids, model.embedding.tables, model.scene_llm, batch["scene"])
    return emb[0, model.imputer.cols[0]]


def test_rare_seen_id_is_shrunk_towards_its_llm_prior_and_frequent_one_is_not():
    h = 30.0
    model = _imputing_model(value_rows=[[10, 100_000, 0], [5, 5], [0, 0]], impute_prior_rows=h)
    weight = model.embedding.tables[model.imputer.cols[0]].weight.detach()
    e1, e2 = weight[1], weight[2]
    # ID 1 (10 rows): its prior is the mixture of the *other* seen values — here ID 2 alone
    torch.testing.assert_close(_field_a_embedding(model, _scene_batch(a_id=1, a_row=1)), (10 * e1 + h * e2) / (10 + h))
    # ID 2 (100k rows) keeps (almost exactly) its own embedding
    torch.testing.assert_close(_field_a_embedding(model, _scene_batch(a_id=2, a_row=2)),
                               (100_000 * e2 + h * e1) / (100_000 + h))
    assert torch.allclose(_field_a_embedding(model, _scene_batch(a_id=2, a_row=2)), e2, atol=1e-3)
    # h = 0 or no recorded rows: seen IDs untouched
    for off in (_imputing_model(value_rows=[[10, 100_000, 0], [5, 5], [0, 0]], impute_prior_rows=0.0),
                _imputing_model(value_rows=None, impute_prior_rows=h)):
        off.load_state_dict(model.state_dict())
        torch.testing.assert_close(_field_a_embedding(off, _scene_batch(a_id=1, a_row=1)), e1)


def test_shrinkage_only_at_evaluation_and_unseen_values_mix_the_shrunk_embeddings():
    h = 30.0
    rows = [[10, 20, 0], [5, 5], [0, 0]]
    model = _imputing_model(value_rows=rows, impute_prior_rows=h, impute_temperature=0.01)
    plain = _imputing_model(impute_prior_rows=h)  # same weights (same seed), no recorded rows: no shrinkage
    plain.load_state_dict(model.state_dict())
    for batch in (_scene_batch(a_id=1, a_row=1), _scene_batch(a_id=2, a_row=2)):
        model.train(), plain.train()
        torch.testing.assert_close(model(batch).logit, plain(batch).logit)  # training: the IDs' own embeddings
        model.eval(), plain.eval()
        assert not torch.allclose(model(batch).logit, plain(batch).logit, atol=1e-5)
    weight = model.embedding.tables[model.imputer.cols[0]].weight.detach()
    e1, e2 = weight[1], weight[2]
    shrunk_2 = (20 * e2 + h * e1) / (20 + h)
    # the never-seen value (row 3) is an LLM neighbour of ID 2: at τ = 0.01 it takes ID 2's *shrunk* embedding
    torch.testing.assert_close(_field_a_embedding(model, _scene_batch(a_id=0, a_row=3)), shrunk_2, atol=1e-4, rtol=0)


def test_rare_ids_are_hidden_in_training_in_proportion_to_their_rarity():
    # feature a: ID 1 seen in 10 rows, ID 2 in 100,000; b: IDs in 30 rows each; c is bucketed (never hidden)
    model = _imputing_model(value_rows=[[10, 100_000, 0], [30, 30], [0, 0]], id_drop_rows=10.0).train()
    x = torch.tensor([[1, 2, 3, 0, 1, 1, 1], [1, 2, 3, 0, 2, 2, 1]]).repeat(5000, 1)
    torch.manual_seed(0)
    hidden = model.id_dropout(x[:, model.used])
    a, b, c = (model.used.index(i) for i in (4, 5, 6))
    assert abs(hidden[0::2, a].float().mean().item() - 10 / 20) < 0.03  # n = 10, d = 10: half the time
    assert hidden[1::2, a].float().mean().item() < 0.001  # n = 100,000: almost never
    assert abs(hidden[:, b].float().mean().item() - 10 / 40) < 0.03
    assert not hidden[:, c].any() and not hidden[:, :a].any()  # bucketed and user/shop IDs are kept
    # in training the unknown ID's embedding gets gradient (no train row holds that ID otherwise)
    batch = {**_scene_batch(a_id=1, a_row=1), "x": x[:200]}
    batch["scene"] = batch["scene"].repeat(200, 1)
    model(batch).logit.sum().backward()
    assert model.embedding.tables[a].weight.grad[0].abs().sum() > 0
    # evaluation never hides an ID: the same as the model without dropout
    off = _imputing_model(value_rows=[[10, 100_000, 0], [30, 30], [0, 0]])
    assert off.id_dropout is None  # d = 0: off
    off.load_state_dict(model.state_dict())
    torch.testing.assert_close(model.eval()(batch).logit, off(batch).logit)


def test_a_hidden_id_can_train_as_its_llm_prior():
    """id_drop_to="prior": a hidden seen ID becomes its leave-one-out prior (what imputation would give it)."""
    rows = [[10, 100_000, 0], [30, 30], [0, 0]]
    model = _imputing_model(value_rows=rows, id_drop_rows=1e9, id_drop_to="prior").train()
    a = model.used.index(4)
    ids = _scene_batch(a_id=1, a_row=1)["x"][:, model.used]
    emb = model.imputer.hide(model.embedding(ids), ids, torch.ones_like(ids, dtype=torch.bool),
                             model.embedding.tables, model.scene_llm)
    weight = model.embedding.tables[a].weight
    torch.testing.assert_close(emb[0, a], weight[2], atol=1e-6, rtol=0)  # ID 1's only other seen value is ID 2
    # d → ∞ hides every ID; in prior mode feature a's rows train ID 2's embedding, not the unknown one
    model(_scene_batch(a_id=1, a_row=1)).logit.sum().backward()
    assert weight.grad[2].abs().sum() > 0 and weight.grad[0].abs().sum() == 0


def test_save_load_identical_predictions(tmp_path):
    spec = FeatureSpec([], [], {}, {}, [])
    model = _model(**ROWS["larr"].overrides).eval()
    tensors = _batch(50, seed=1)
    save_model(model, spec, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "features.json", "model.safetensors"]
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(predict(loaded, tensors), predict(model, tensors))
    assert loaded.cfg == model.cfg and json.loads((tmp_path / "m" / "config.json").read_text())["rec"]["backbone"]
    assert FeatureSpec.load(tmp_path / "m" / "features.json") == spec


# ---------------------------------------------------------------------------- alignment loss


def test_alignment_loss_hand_computed_2x2():
    scene = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised: e1, e2
    collab = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # normalised: (.6, .8), e2
    tau = 0.5
    sim = [[0.6, 0.0], [0.8, 1.0]]  # cos(scene_i, collab_j)

    def ce(row, i):
        return -(row[i] / tau) + math.log(sum(math.exp(v / tau) for v in row))

    s2c = (ce(sim[0], 0) + ce(sim[1], 1)) / 2
    c2s = (ce([sim[0][0], sim[1][0]], 0) + ce([sim[0][1], sim[1][1]], 1)) / 2
    got = alignment_loss(scene, collab, tau)
    assert got.item() == pytest.approx((s2c + c2s) / 2, rel=1e-6)
    # rows of one group are not each other's negatives: each row is then its own only candidate
    assert alignment_loss(scene, collab, tau, groups=torch.tensor([7, 7])).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------- frequency mix, alignment target


def test_alignment_with_scene_ids_groups_identical_scenes_and_stops_gradients():
    model = _model(**ROWS["larr"].overrides, align_with="scene_ids", align_groups="scene", align_stop_grad=True)
    assert model.collab_fields == [4, 5, 6]  # scene ID fields only: what the scene side can match
    batch = _batch(8)
    batch["scene"][4:] = batch["scene"][0]  # rows 0, 4-7 share one scene; rows 1-3 differ
    from larr.rec.models import alignment_groups

    groups = alignment_groups(batch, model.cfg)
    assert (groups[4:] == groups[0]).all() and len(set(groups[:4].tolist())) == 4
    assert torch.equal(alignment_groups(batch, model.cfg.model_copy(update={"align_groups": "request"})),
                       batch["request"])
    model.train()
    out = model(batch)
    alignment_loss(out.scene, out.collab, 0.1, groups).backward()
    assert model.embedding.tables[4].weight.grad is None  # stop-gradient: the IDs are the target, not moved
    assert model.collab_tower[0].weight.grad is not None and model.scene_encoder.proj.weight.grad is not None
