"""What the scene explorer page (``GET /``) needs besides ``/v1/rank``: users, shops, scene features, neighbours.

All read-only views of what the server already loaded (the run's ``users``/``shops`` tables,
the model's feature spec and scene table), behind the same API key as ``/v1/rank``:

- :meth:`Catalog.users`: users whose id or profile words match a query;
- :meth:`Catalog.shops`: shop names, categories and price levels (the page ranks all of them);
- :func:`scene_features`: every scene feature, its kind, known values and accepted range;
- :func:`neighbours`: a value's nearest known values by cosine similarity of the standardised
  LLM vectors, and where its vector came from. A never-seen value is queued for the encoder
  exactly as a ranking request would queue it (``pending`` until its vector exists).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from larr.data.schema import SHOPS, USERS
from larr.data.scene import canonical_value, scene_key
from larr.serve.inputs import RequestError, coerce_value
from larr.serve.scenes import SceneItem

USER_COLS = ("user_id", "home_district", "work_district", "profile")
SHOP_COLS = ("shop_id", "name", "category", "district", "price_level")


def _read(path: Path, cols: tuple[str, ...]) -> list[dict]:
    have = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[c for c in cols if c in have])
    return table.to_pylist()


class Catalog:
    """The run's users and shops, as the page shows them (read once, on first use)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._users: list[dict] | None = None
        self._shops: list[dict] | None = None

    def users(self, q: str = "", limit: int = 20) -> tuple[list[dict], int]:
        if self._users is None:
            rows = _read(self.data_dir / USERS.file, USER_COLS)
            self._users = [{**r, "_text": " ".join(str(v) for v in r.values() if v is not None).lower()}
                           for r in rows]
        words = q.lower().split()
        hits = [u for u in self._users if all(w in u["_text"] for w in words)] if words else self._users
        if q.strip() and q.strip().lstrip("-").isdigit():  # an exact id first
            hits = sorted(hits, key=lambda u: canonical_value(u["user_id"]) != q.strip())
        return [{k: v for k, v in u.items() if k != "_text"} for u in hits[:limit]], len(hits)

    def shops(self, limit: int = 1000) -> tuple[list[dict], int]:
        if self._shops is None:
            self._shops = _read(self.data_dir / SHOPS.file, SHOP_COLS)
        return self._shops[:limit], len(self._shops)


def scene_features(ranker) -> dict:
    spec = ranker.spec
    enc = ranker.graph.model.cfg.scene_encoder if ranker.graph.has_scene else None
    feats = [{"name": f.name, "kind": f.kind, "template": f.template, "doc": f.doc,
              "values": list(spec.scene_values.get(f.name, [])),
              "range": list(ranker.ranges[f.name]) if f.name in ranker.ranges else None} for f in spec.scene]
    return {"model": ranker.model, "version": ranker.version, "scene_encoder": enc, "features": feats,
            "example": example_scene(ranker.data_dir, [f.name for f in spec.scene])}


def example_scene(data_dir: Path, names: list[str]) -> dict:
    """The scene of the first test-split impression (else the first one) of the run's data; {} when unreadable."""
    try:
        path = Path(data_dir) / "impressions.parquet"
        have = set(pq.read_schema(path).names)
        cols = [n for n in names if n in have] + (["split"] if "split" in have else [])
        rows = pq.ParquetFile(path).iter_batches(batch_size=4096, columns=cols)
        batch = next(rows).to_pylist()
    except Exception:
        return {}
    row = next((r for r in batch if r.get("split") == "test"), batch[0] if batch else {})
    return {k: v for k, v in row.items() if k != "split" and v is not None}


def parse_value(feat, text: str) -> object:
    """A query-string value as the feature's type (``"12"`` → 12 for an int feature)."""
    try:
        if feat.kind == "int":
            return int(text)
        if feat.kind == "float":
            return coerce_value(feat, float(text))
        if feat.kind == "bool" and text in ("true", "false"):
            return text == "true"
    except ValueError:
        pass
    else:
        if feat.kind == "str":
            return text
    raise RequestError(f"scene feature '{feat.name}' expects a {feat.kind} value, got {text[:40]!r}")


def neighbours(ranker, feature: str, text: str, k: int = 5) -> dict:
    feat = ranker.indexer.features.get(feature)
    if feat is None:
        raise RequestError(f"unknown scene feature '{feature}' (known: {', '.join(ranker.indexer.features)})")
    if ranker.scenes is None or ranker.whole:
        raise RequestError("this model has no per-feature scene vectors (no LLM input, or whole_text)")
    value = parse_value(feat, text)
    ranker.check_scene({feature: value})
    scenes = ranker.scenes
    key = scene_key(feature, value)
    vec, source = scenes.vector(SceneItem(key, feat.render(value), feature))
    near = []
    if vec is not None:
        known = ranker.spec.scene_values.get(feature, [])
        rows = [scenes.table.rows[scene_key(feature, v)] for v in known]
        table = scenes.vectors[rows]
        sims = table @ vec / (np.linalg.norm(table, axis=1) * np.linalg.norm(vec) + 1e-12)
        order = [i for i in np.argsort(-sims, kind="stable") if scene_key(feature, known[i]) != key][:k]
        near = [{"value": known[i], "similarity": float(sims[i])} for i in order]
    return {"feature": feature, "value": canonical_value(value), "source": source, "known": key in scenes.table.rows,
            "neighbours": near}
