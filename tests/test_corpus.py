"""Stage-1 corpus: document format, held-out split, train-only user histories."""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from larr.config import load_config
from larr.data.schema import SchemaError
from larr.llm import corpus as C


def write_fixture_tables(data_dir: Path, n_shops: int = 20, n_users: int = 6) -> Path:
    """Tiny shops/users/impressions tables in the larr schema (no generator needed)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cats = ["Noodles", "Pizza", "Sushi", "Burgers"]
    shops = pa.table(
        {
            "shop_id": pa.array(range(n_shops), pa.int64()),
            "name": [f"Shop{i} Kitchen" for i in range(n_shops)],
            "category": [cats[i % len(cats)] for i in range(n_shops)],
            "district": ["Harbor" if i % 2 else "Old Town" for i in range(n_shops)],
            "price_level": pa.array([1 + i % 4 for i in range(n_shops)], pa.int64()),
            "rating": [3.0 + (i % 20) / 10 for i in range(n_shops)],
            "description": [f"A cosy {cats[i % len(cats)].lower()} place by the river." for i in range(n_shops)],
            "menu": [f"dish {i} 12.5; soup {i} 6.0" for i in range(n_shops)],
            "open_day": pa.array([0] * n_shops, pa.int64()),
        }
    )
    users = pa.table(
        {
            "user_id": pa.array(range(n_users), pa.int64()),
            "home_district": ["Harbor"] * n_users,
            "work_district": ["Old Town"] * n_users,
            "price_sensitivity": [0.5] * n_users,
            "profile": [f"Student who likes late dinners, user {u}" for u in range(n_users)],
        }
    )
    rows = []
    for u in range(n_users):
        # train clicks on shops 4u..4u+1 (category Noodles/Pizza for u even), test clicks on shop 3.
        for j, (shop, split, label) in enumerate(
            [(4 * u % n_shops, "train", 1), (4 * u % n_shops, "train", 1), ((4 * u + 1) % n_shops, "train", 1),
             ((4 * u + 2) % n_shops, "train", 0), (3, "test", 1), (3, "test", 1), (3, "valid", 1)]
        ):
            rows.append((len(rows), 1000 + j, j, u, shop, j, label, split, False))
    cols = list(zip(*rows))
    imps = pa.table(
        {
            "request_id": pa.array(cols[0], pa.int64()),
            "ts": pa.array(cols[1], pa.int64()),
            "day": pa.array(cols[2], pa.int64()),
            "user_id": pa.array(cols[3], pa.int64()),
            "shop_id": pa.array(cols[4], pa.int64()),
            "position": pa.array(cols[5], pa.int64()),
            "label": pa.array(cols[6], pa.int64()),
            "split": list(cols[7]),
            "unseen_scene": list(cols[8]),
            "weather": ["rain"] * len(rows),
        }
    )
    for name, table in (("shops", shops), ("users", users), ("impressions", imps)):
        pq.write_table(table, data_dir / f"{name}.parquet")
    return data_dir


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_fixture_tables(tmp_path / "data")


def test_field_tokens_are_paired_tags():
    assert len(FIELD_TOKENS := C.FIELD_TOKENS) == len(set(FIELD_TOKENS)) == 2 * (len(C.SHOP_FIELDS) + 1)
    for open_, close in zip(FIELD_TOKENS[::2], FIELD_TOKENS[1::2]):
        assert close == open_.replace("<", "</", 1)


def test_shop_doc_wraps_every_field():
    row = {"name": "Golden Wok", "category": "Cantonese", "district": "Harbor", "price_level": 2,
           "rating": 4.31, "description": "Fast wok dishes.", "menu": "fried rice 8.0; dumplings 6.5"}
    text = C.shop_text(row)
    for (column, tag) in C.SHOP_FIELDS:
        match = re.search(f"<{tag}>(.*?)</{tag}>", text)
        assert match and match.group(1), f"{tag} missing in {text}"
    assert "<price>moderate</price>" in text and "<rating>4.3</rating>" in text
    # the tags come in SHOP_FIELDS order, no text outside them
    assert re.fullmatch("".join(f"<{t}>[^<]*</{t}>" for _, t in C.SHOP_FIELDS), text)


def test_shop_doc_skips_empty_fields():
    text = C.shop_text({"name": "Toy Story (1995)", "category": "Animation|Comedy", "district": "",
                        "price_level": 0, "rating": 0.0, "description": "A film.", "menu": ""})
    assert "<area>" not in text and "<menu>" not in text and "<price>" not in text and "<rating>" not in text
    assert text.startswith("<shop_name>Toy Story (1995)</shop_name><category>")


def test_user_doc_format():
    assert C.user_text("Nurse on night shifts", ["Noodles"], ["Shop1"]) == (
        "<user>Nurse on night shifts. Most clicked categories: Noodles. Most clicked shops: Shop1.</user>"
    )
    assert C.user_text("", [], []) == "<user></user>"


def test_heldout_split_is_seeded_and_sized():
    a = C.split_heldout(range(100), 0.1, seed=0)
    assert a == C.split_heldout(list(reversed(range(100))), 0.1, seed=0)
    assert len(a) == 10 and a != C.split_heldout(range(100), 0.1, seed=1)
    assert C.split_heldout(range(5), 0.0, seed=0) == set()
    assert len(C.split_heldout(range(5), 0.01, seed=0)) == 1


def test_run_writes_disjoint_train_and_heldout(tmp_path, data_dir):
    cfg = load_config(None, ["corpus.heldout_frac=0.25"])
    counts = C.run(cfg, tmp_path / "run", data_dir=data_dir)
    train_path, heldout_path = C.corpus_paths(tmp_path / "run")
    train, heldout = C.read_corpus(train_path), C.read_corpus(heldout_path)
    assert counts == {"train_shops": 15, "train_users": 6, "heldout_shops": 5,
                      "train_chars": int(train["text"].str.len().sum())}
    assert set(heldout["kind"]) == {"shop"}
    held_ids = set(heldout["id"])
    assert not held_ids & set(train.loc[train["kind"] == "shop", "id"])
    # no held-out shop name appears anywhere in the training text (users' favourites included)
    all_train = "\n".join(train["text"])
    for i in held_ids:
        assert f"Shop{i} Kitchen" not in all_train
    assert list(train.columns) == ["kind", "id", "text"]


def test_user_docs_use_train_clicks_only(tmp_path, data_dir):
    cfg = load_config(None, ["corpus.heldout_frac=0.0"])
    C.run(cfg, tmp_path / "run", data_dir=data_dir)
    train = C.read_corpus(C.corpus_paths(tmp_path / "run")[0])
    users = train[train["kind"] == "user"].set_index("id")["text"]
    assert len(users) == 6
    # shop 3 is clicked only in valid/test: it must not be anybody's favourite (user 0 never clicks it in train)
    assert "Shop3 Kitchen" not in users[0]
    # user 0: clicked shop 0 twice and shop 1 once in train; the shop-2 impression was not a click
    assert "Most clicked shops: Shop0 Kitchen, Shop1 Kitchen." in users[0]
    assert "Most clicked categories: Noodles, Pizza." in users[0]
    assert "Shop2 Kitchen" not in users[0]


def test_missing_tables_are_one_line_errors(tmp_path):
    with pytest.raises(SchemaError, match="shops.parquet: file not found"):
        C.run(load_config(), tmp_path / "run", data_dir=tmp_path / "nowhere")
    with pytest.raises(SchemaError, match="larr corpus"):
        C.read_corpus(tmp_path / "run" / "corpus" / "train.parquet")
