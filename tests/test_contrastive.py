"""Stage 2: InfoNCE, the cached-trunk training path, a tiny end-to-end run, and the evaluation metrics."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from larr.config import load_config
from larr.llm import contrastive as C
from larr.llm import evaluate as E
from larr.llm.embedding_model import EmbeddingModel
from larr.llm.encode import Encoder
from larr.llm.pairs import build_pairs
from test_pairs import write_world

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------------- InfoNCE


def test_info_nce_matches_hand_computed_3x3() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    b = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    tau = 0.5
    # cosines a_i · b_j (all rows are unit vectors):
    #   a0: 0.8, 0.0, 1.0      a1: 0.6, 1.0, 0.0      a2: 0.96, 0.8, 0.6
    # rows (a → b), positives on the diagonal, logits = cos / 0.5:
    row0 = -(1.6 - math.log(math.exp(1.6) + math.exp(0.0) + math.exp(2.0)))
    row1 = -(2.0 - math.log(math.exp(1.2) + math.exp(2.0) + math.exp(0.0)))
    row2 = -(1.2 - math.log(math.exp(1.92) + math.exp(1.6) + math.exp(1.2)))
    # columns (b → a): column j holds cos(a_i, b_j) over i
    col0 = -(1.6 - math.log(math.exp(1.6) + math.exp(1.2) + math.exp(1.92)))
    col1 = -(2.0 - math.log(math.exp(0.0) + math.exp(2.0) + math.exp(1.6)))
    col2 = -(1.2 - math.log(math.exp(2.0) + math.exp(0.0) + math.exp(1.2)))
    expected = ((row0 + row1 + row2) / 3 + (col0 + col1 + col2) / 3) / 2
    assert C.info_nce(a, b, tau).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_masks_repeated_texts_instead_of_pushing_them_away() -> None:
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    b[2] = b[0]  # pairs 0 and 2 share their right text (e.g. a popular shop)
    keys_l, keys_r = torch.tensor([0, 1, 2]), torch.tensor([10, 11, 10])
    logits = a @ b.T / 0.1
    inf = float("-inf")
    rows = logits.clone()
    rows[0, 2] = rows[2, 0] = inf  # b_2 is a_0's positive text (and vice versa): not a negative
    cols = logits.T.clone()
    cols[0, 2] = cols[2, 0] = inf  # for query b_0, a_2 is paired with that same text: a positive too
    t = torch.arange(3)
    expected = (torch.nn.functional.cross_entropy(rows, t) + torch.nn.functional.cross_entropy(cols, t)) / 2
    got = C.info_nce(a, b, 0.1, left_keys=keys_l, right_keys=keys_r)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.item() < C.info_nce(a, b, 0.1).item()


# ---------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from larr.llm.backbone import make_tiny_model

    texts = [
        "<shop_name>Shop1 Kitchen</shop_name><category>noodle soup</category> hot bowl rain",
        "<user>Office worker who orders lunch. Often orders: hotpot, salads.</user> weather: heavy rain",
        "weather: typhoon; time slot: lunch; weather: snow; sunny dinner",
    ] * 5
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "lm", texts=texts, vocab_size=400, num_layers=3)


TEXTS = ["weather: heavy rain", "<user>Office worker 3</user> time slot: lunch", "Shop2 noodle soup, hot", "x"]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_cached_training_path_equals_the_saved_model_forward(tiny_lm: Path, k: int) -> None:
    """Frozen-bottom cache + top layers (with the last-token shortcut) == the model's own forward."""
    model = EmbeddingModel.from_causal_lm_folder(tiny_lm, head_dim=8, max_length=32).eval()
    split = C.Split.of(model.base, k)
    ids = C.tokenize(model, TEXTS)
    states = C.frozen_states(model, ids, split, torch.float32, torch.device("cpu"), batch_size=2)
    with torch.no_grad():
        via_cache = C.encode_from_states(model, states, split, torch.device("cpu"))
        batch = model.tokenize(TEXTS)
        direct = model(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(via_cache, direct, atol=2e-5, rtol=1e-4)


def _pair_loss(model: EmbeddingModel, left: list[str], right: list[str], tau: float) -> float:
    with torch.no_grad():
        a = model(**model.tokenize(left))
        b = model(**model.tokenize(right))
    return C.info_nce(a, b, tau).item()


@pytest.mark.slow
def test_tiny_run_lowers_loss_and_saves_a_sentence_transformers_folder(tmp_path: Path, tiny_lm: Path) -> None:
    from sentence_transformers import SentenceTransformer

    data_dir = write_world(tmp_path / "data")
    cfg = load_config(None, [
        f"llm.model={tiny_lm}", "device=cpu", "contrastive.max_steps=30", "contrastive.batch_size=8",
        "contrastive.lr=3e-3", "contrastive.head_lr=3e-3", "contrastive.trainable_layers=1",
        "contrastive.temperature=0.1", "contrastive.uu_min_jaccard=0.3", "contrastive.ss_min_coclick=2",
        "contrastive.max_length=32", "contrastive.heldout_frac=0.2", "contrastive.cache_dtype=float32",
    ])
    data = build_pairs(data_dir, cfg)
    model = EmbeddingModel.from_causal_lm_folder(tiny_lm, head_dim=16, max_length=32)
    us = data.train["user_shop"]
    before = _pair_loss(model.eval(), us.left, us.right, 0.1)
    stats = C.train(model, data.train, cfg, torch.device("cpu"), log_dir=tmp_path / "logs", progress=False)
    after = _pair_loss(model, us.left, us.right, 0.1)
    assert stats.steps == 30 and stats.last_loss < stats.first_loss
    assert stats.cache_dtype == "float32"  # what the cache was computed in, as the stage-2 report records it
    assert after < before
    assert any((tmp_path / "logs").iterdir())  # TensorBoard events

    out = model.save_pretrained(tmp_path / "stage2")
    ours = Encoder.from_pretrained(out, device="cpu").encode(TEXTS)
    theirs = SentenceTransformer(str(out), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(ours, model(**model.tokenize(TEXTS)).numpy(), atol=1e-5)


@pytest.mark.slow
def test_run_writes_stage2_folder_and_report(tmp_path: Path, tiny_lm: Path) -> None:
    from larr.report import read_report

    run_dir = tmp_path / "run"
    write_world(run_dir / "data")
    cfg = load_config(None, [
        f"llm.model={tiny_lm}", "device=cpu", "contrastive.max_steps=5", "contrastive.batch_size=4",
        "contrastive.max_length=32", "contrastive.scene_in_user_text=true", "contrastive.heldout_frac=0.2",
        "contrastive.uu_min_jaccard=0.3", "contrastive.ss_min_coclick=2",
    ])
    result = C.run(cfg, run_dir, progress=False)
    assert (run_dir / "stage2" / "modules.json").is_file() and (run_dir / "stage2" / "larr_config.yaml").is_file()
    report = read_report(run_dir)["stage2"]
    assert report["steps"] == 5 and report["scene_in_user_text"] is True
    for kind in ("user_user", "shop_shop", "user_shop"):
        assert set(report["recall@10"][kind]) >= {"untuned", "larr"}  # no stage1 folder: that row is skipped
        assert "stage1" not in report["mrr"][kind]
    assert set(report["scene_semantics"]) >= {"untuned", "larr"}
    assert set(report["scene_semantics_per_feature"]) == {"weather", "time_slot"}
    assert set(report["scene_cosine_mean"]) >= {"untuned", "larr"}
    assert result["out_dir"].endswith("stage2")


# ---------------------------------------------------------------------------- evaluation metrics


def test_retrieval_metrics_match_hand_computed_ranks() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    c = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    # scores q0: 1.0, 0.8, 0.0, 0.6   target 1 → rank 2
    #        q1: 0.0, 0.6, 1.0, 0.8   target 0 → rank 4
    #        q2: 0.6, 0.96, 0.8, 1.0  target 2 → rank 3; excluding candidate 3 → rank 2
    targets = np.array([1, 0, 2])
    m = E.retrieval_metrics(q, c, targets, k=2)
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 3) / 3)
    m = E.retrieval_metrics(q, c, targets, exclude=[np.array([0]), np.array([], int), np.array([3])], k=2)
    assert m["recall@2"] == pytest.approx(2 / 3)  # q0: rank 1 (0 removed), q2: rank 2
    assert m["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 2) / 3)


def test_constant_vectors_rank_last() -> None:
    """Ties count against the target: an encoder that maps everything to one vector scores 0."""
    m = E.retrieval_metrics(np.ones((2, 3)), np.ones((5, 3)), np.array([0, 4]), k=4)
    assert m["recall@4"] == 0.0 and m["mrr"] == pytest.approx(1 / 5)


def test_scene_semantics_rewards_attribute_aligned_embeddings(tmp_path: Path) -> None:
    data_dir = write_world(tmp_path / "data")
    table = E.scene_value_table(data_dir)
    assert table["text"].tolist()[:2] == ["weather: sunny", "weather: heavy rain"]
    attrs = table[E.attribute_columns(table)].to_numpy()
    perfect = E.scene_semantics(table, attrs + 0.01)  # embeddings that *are* the attributes
    assert perfect.pooled == pytest.approx(1.0) and perfect.per_feature["weather"] == pytest.approx(1.0)
    assert perfect.per_feature["time_slot"] is None  # one pair: undefined
    assert perfect.macro == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert E.scene_semantics(table, rng.normal(size=(len(table), 8))).pooled < 0.9
    same = E.scene_semantics(table, np.ones((len(table), 3)))  # full anisotropy
    assert same.mean_cosine == pytest.approx(1.0) and same.pooled is None


def test_unseen_scene_scores_check_the_nearest_seen_value(tmp_path: Path) -> None:
    """typhoon is unseen: its nearest seen weather by attributes is snow (warmth .9 ~ 1.0)."""
    table = E.scene_value_table(write_world(tmp_path / "data"))
    assert table["seen"].all()  # every value of the fixture occurs in train
    assert E.scene_semantics(table, np.eye(len(table))).unseen_top1 is None
    table["seen"] = table["value"] != "typhoon"
    attrs = table[E.attribute_columns(table)].to_numpy()
    right = E.scene_semantics(table, attrs + 0.01)
    assert right.unseen_top1 == 1.0 and right.unseen == pytest.approx(1.0)  # centred attributes: same order
    vecs = attrs.copy()
    vecs[3] = vecs[0]  # typhoon written like sunny
    wrong = E.scene_semantics(table, vecs)
    assert wrong.unseen_top1 == 0.0 and wrong.unseen < 0
