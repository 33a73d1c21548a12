"""Stage-1 corpus: shops and users rendered as documents whose fields are wrapped in special tokens.

LARR teaches the LLM the *structure* of the recommendation domain before any contrastive
training: a shop document reads

    <shop_name>Golden Wok</shop_name><category>Cantonese</category><area>Harbor</area>
    <price>cheap</price><rating>4.3</rating><desc>…</desc><menu>…</menu>

and a user document ``<user>profile. Most clicked categories: …. Most clicked shops: ….</user>``. The field
tokens (:data:`FIELD_TOKENS`) are added to the tokenizer as single tokens in stage 1, and
stage 2 renders its texts with the same :func:`shop_text` / :func:`user_text`, so both stages
see one format.

A fixed share of shops (``corpus.heldout_frac``, chosen by ``seed``) is held out: their
documents form the evaluation corpus for perplexity and are never trained on — not even by
name inside a user's most-clicked-shops list. User documents summarise clicks of the **train**
split only, so nothing from valid/test leaks into the LLM.

Output: ``RUN_DIR/corpus/train.parquet`` and ``RUN_DIR/corpus/heldout.parquet``, columns
``kind`` ('shop' | 'user'), ``id`` (shop_id or user_id), ``text``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from larr import layout
from larr.config import Config
from larr.data.schema import IMPRESSION_BASE, SHOPS, USERS, Column, SchemaError, Table, read_table
from larr.io import write_parquet

# (table column, tag) in document order. The tag is the name inside <...>.
SHOP_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "shop_name"),
    ("category", "category"),
    ("district", "area"),
    ("price_level", "price"),
    ("rating", "rating"),
    ("description", "desc"),
    ("menu", "menu"),
)
USER_TAG = "user"

FIELD_TOKENS: list[str] = [
    tok for _, tag in (*SHOP_FIELDS, ("", USER_TAG)) for tok in (f"<{tag}>", f"</{tag}>")
]
"""Every special token stage 1 adds to the tokenizer, opening and closing tags."""

PRICE_WORDS = {1: "cheap", 2: "moderate", 3: "expensive", 4: "luxury"}
"""price_level as words: the LLM already knows what 'cheap' means, it does not know '1'."""

CORPUS = Table(
    "corpus",
    (
        Column("kind", "str", "'shop' or 'user'."),
        Column("id", "int", "shop_id or user_id."),
        Column("text", "str", "The document, fields wrapped in FIELD_TOKENS."),
    ),
    "Stage-1 documents.",
)
TRAIN_FILE = "train.parquet"
HELDOUT_FILE = "heldout.parquet"


# ---------------------------------------------------------------------------- documents


def _field_value(column: str, value: Any) -> str:
    """One field as text; '' when the value is missing or means 'unknown' (then the field is skipped)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if column == "price_level":
        return PRICE_WORDS.get(int(value), "")  # 0 = unknown
    if column == "rating":
        return f"{float(value):.1f}" if float(value) > 0 else ""  # 0 = not rated yet
    return str(value).strip()


def shop_text(row: Mapping[str, Any]) -> str:
    """A shop document: each non-empty field of ``row`` (a shops-table row) wrapped in its tag."""
    parts = []
    for column, tag in SHOP_FIELDS:
        value = _field_value(column, row.get(column))
        if value:
            parts.append(f"<{tag}>{value}</{tag}>")
    return "".join(parts)


def user_text(profile: str, categories: Sequence[str] = (), shops: Sequence[str] = ()) -> str:
    """A user document: the profile plus the user's most clicked categories and shop names."""
    parts = [profile.strip().rstrip(".") + "."] if profile and profile.strip() else []
    if categories:
        parts.append("Most clicked categories: " + ", ".join(categories) + ".")
    if shops:
        parts.append("Most clicked shops: " + ", ".join(shops) + ".")
    return f"<{USER_TAG}>{' '.join(parts)}</{USER_TAG}>"


# ---------------------------------------------------------------------------- building


def split_heldout(shop_ids: Sequence[int], frac: float, seed: int) -> set[int]:
    """The held-out shop ids: a seeded random ``frac`` of the shops (at least one when frac > 0)."""
    ids = np.sort(np.asarray(shop_ids, dtype=np.int64))
    if frac <= 0 or len(ids) == 0:
        return set()
    n = min(len(ids) - 1, max(1, round(frac * len(ids)))) if len(ids) > 1 else 0
    picked = np.random.default_rng(seed).permutation(len(ids))[:n]
    return {int(i) for i in ids[picked]}


def user_click_history(
    impressions: pd.DataFrame, shops: pd.DataFrame, top_k: int, exclude_shops: set[int] = frozenset()
) -> dict[int, tuple[list[str], list[str]]]:
    """user_id → (top categories, top shop names) by train-split click count.

    Only ``split == 'train'`` clicks count, so user documents carry no valid/test signal.
    Shops in ``exclude_shops`` (the held-out ones) are not named, so their names are not
    trained on; their categories still count. Ties break by name, so the result is deterministic.
    """
    clicks = impressions[(impressions["split"] == "train") & (impressions["label"] == 1)]
    clicks = clicks.merge(shops[["shop_id", "name", "category"]], on="shop_id", how="inner")
    history: dict[int, tuple[list[str], list[str]]] = {}
    for uid, group in clicks.groupby("user_id", sort=True):
        cats = _top(group["category"], top_k)
        named = group[~group["shop_id"].isin(exclude_shops)]
        history[int(uid)] = (cats, _top(named["name"], top_k))
    return history


def _top(values: pd.Series, k: int) -> list[str]:
    counts = values[values.astype(str).str.len() > 0].value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [str(v) for v, _ in ranked[:k]]


def build_corpus(data_dir: Path, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, heldout) document frames with columns kind, id, text."""
    data_dir = Path(data_dir)
    shops = read_table(data_dir / SHOPS.file, SHOPS).to_pandas()
    heldout = split_heldout(shops["shop_id"], cfg.corpus.heldout_frac, cfg.seed)
    shop_docs = pd.DataFrame(
        {"kind": "shop", "id": shops["shop_id"].astype("int64"), "text": [shop_text(r) for r in _rows(shops)]}
    )
    is_heldout = shop_docs["id"].isin(heldout)
    train_parts = [shop_docs[~is_heldout]]
    if cfg.corpus.include_users:
        train_parts.append(_user_docs(data_dir, shops, heldout, cfg.corpus.user_top_k))
    train = pd.concat(train_parts, ignore_index=True)
    return train.reset_index(drop=True), shop_docs[is_heldout].reset_index(drop=True)


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    return df.to_dict("records")


def _user_docs(data_dir: Path, shops: pd.DataFrame, heldout: set[int], top_k: int) -> pd.DataFrame:
    users = read_table(data_dir / USERS.file, USERS, columns=["user_id", "profile"]).to_pandas()
    imps = read_table(
        data_dir / IMPRESSION_BASE.file, IMPRESSION_BASE, columns=["user_id", "shop_id", "label", "split"]
    ).to_pandas()
    imps["split"] = imps["split"].astype(str)
    history = user_click_history(imps, shops, top_k, exclude_shops=heldout)
    texts = [user_text(p, *history.get(int(u), ([], []))) for u, p in zip(users["user_id"], users["profile"])]
    return pd.DataFrame({"kind": "user", "id": users["user_id"].astype("int64"), "text": texts})


# ---------------------------------------------------------------------------- files


def corpus_paths(run_dir: Path) -> tuple[Path, Path]:
    """(train, heldout) Parquet paths inside a run directory."""
    d = layout.corpus_dir(run_dir)
    return d / TRAIN_FILE, d / HELDOUT_FILE


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    schema = pa.schema([("kind", pa.string()), ("id", pa.int64()), ("text", pa.string())])
    return pa.Table.from_pandas(df[["kind", "id", "text"]], schema=schema, preserve_index=False)


def read_corpus(path: Path) -> pd.DataFrame:
    """Read one corpus file; a missing file says which command makes it."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: file not found (run `larr corpus --out RUN_DIR` first)")
    return read_table(path, CORPUS).to_pandas()


def run(cfg: Config, run_dir: Path, data_dir: Path | None = None, resume: bool = False) -> dict[str, int]:
    """Build and write the corpus; return counts. ``resume`` is accepted for symmetry (it is fast)."""
    data_dir = layout.data_dir(run_dir, data_dir)
    train, heldout = build_corpus(data_dir, cfg)
    train_path, heldout_path = corpus_paths(run_dir)
    write_parquet(_to_arrow(train), train_path)
    if len(heldout):
        write_parquet(_to_arrow(heldout), heldout_path)
    else:
        heldout_path.unlink(missing_ok=True)
    return {
        "train_shops": int((train["kind"] == "shop").sum()),
        "train_users": int((train["kind"] == "user").sum()),
        "heldout_shops": len(heldout),
        "train_chars": int(train["text"].str.len().sum()),
    }
