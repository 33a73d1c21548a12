"""Tables → model inputs: field vocabularies, the scene value table, tensors, batches.

Two views of the real-time scene are built, because comparing them is the point of LARR:

- **Scene ID fields** (``scene:<name>``, for the ``base_scene_ids`` baseline): each scene
  feature is one more categorical field whose vocabulary, like every field's, comes from the
  *train split only*. Index 0 is OOV, so a value never seen in training (a typhoon, a new
  district) collapses to the one "unknown" embedding — the collaborative model knows nothing
  about it. Float-valued features are bucketised by train quantiles first.
- **The scene value table** (for LARR): every distinct value of every scene feature across
  *all* splits, each rendered as its own text. Its frozen LLM vectors are precomputed (stage
  "embed", keys from :func:`larr.data.scene.scene_key`), so an unseen value still has a meaningful
  vector. Its keys and rows (``1 + offset(feature) + j``; row 0 is the zero "unknown" row) are
  owned by :class:`larr.rec.scene_table.SceneTable` (:meth:`FeatureSpec.scene_table`).
  The ``whole_text`` ablation gets the analogous table of whole rendered scenes.

Per split the output is a dict of tensors: ``x`` (N, n_fields) int64 field indices in
``spec.field_names`` order, ``scene`` (N, F) int64 rows of the scene table, ``whole`` (N,)
int64 rows of the whole-scene table, ``label`` (N,) float32, and the raw ``user`` and
``request`` ids (GAUC groups; in-batch alignment masking) and ``unseen`` (bool) slice flag.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pandas as pd
import torch

from larr.data.scene import canonical_value, whole_scene_key
from larr.data.schema import SHOPS, SPLITS, USERS, SceneFeature, SchemaError, impressions_table, read_scene_features, read_table
from larr.io import atomic_write_text
from larr.rec.scene_table import SceneTable

Side = Literal["user", "item", "context", "scene"]
UNKNOWN = "<unk>"  # index 0 of every vocabulary and of both scene tables
N_BUCKETS = 10  # quantile buckets for float scene features used as ID fields
WHOLE_SEP = "; "  # joins per-feature texts into one whole-scene text

# (field name, side, source column of the joined frame). "user" fields feed the collaborative
# user/request representation; "item" fields describe the shop; position is a display bias.
# Joined shop/user columns are renamed "shop.*"/"user.*" so that a scene feature may share a
# name with them (the synthetic world's request "district" is not the shop's district).
BASE_FIELDS: list[tuple[str, Side, str]] = [
    ("user_id", "user", "user_id"),
    ("user_home", "user", "user.home_district"),
    ("user_work", "user", "user.work_district"),
    ("shop_id", "item", "shop_id"),
    ("category", "item", "shop.category"),
    ("shop_district", "item", "shop.district"),
    ("price_level", "item", "shop.price_level"),
    ("position", "context", "position"),
]


@dataclass
class FieldSpec:
    """One categorical field: its vocabulary (train values, sorted) after the OOV index 0."""

    name: str
    side: Side
    vocab: list[str]

    @property
    def size(self) -> int:
        return len(self.vocab) + 1


@dataclass
class FeatureSpec:
    """Everything needed to turn rows into tensors again (training, evaluation, serving)."""

    fields: list[FieldSpec]
    scene: list[SceneFeature]
    scene_values: dict[str, list[str]]  # canonical values per feature, all splits
    scene_texts: dict[str, list[str]]  # their rendered texts, same order
    whole_texts: list[str]  # every distinct whole rendered scene, all splits
    buckets: dict[str, list[float]] = field(default_factory=dict)  # float features: bucket edges

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def vocab_sizes(self) -> list[int]:
        return [f.size for f in self.fields]

    @property
    def scene_names(self) -> list[str]:
        return [f.name for f in self.scene]

    @property
    def scene_cols(self) -> list[int]:
        """Column of ``x`` (field index) of each scene feature's ID field, in scene order."""
        return [self.field_names.index(f"scene:{n}") for n in self.scene_names]

    def scene_table(self, whole: bool = False) -> SceneTable:
        """The LLM table of the per-feature values (or, ``whole``, of the whole scenes): keys, rows, groups."""
        if whole:
            return SceneTable.whole(self.whole_texts)
        return SceneTable.per_feature(self.scene_names, self.scene_values, self.scene_texts)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "FeatureSpec":
        d = json.loads(text)
        d["fields"] = [FieldSpec(**f) for f in d["fields"]]
        d["scene"] = [SceneFeature(**f) for f in d["scene"]]
        return cls(**d)

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: Path) -> "FeatureSpec":
        return cls.from_json(Path(path).read_text())


# ---------------------------------------------------------------------------- loading


def load_frame(data_dir: Path) -> tuple[pd.DataFrame, list[SceneFeature]]:
    """Impressions joined with the shop and user columns the fields need, plus the scene features."""
    data_dir = Path(data_dir)
    scene = read_scene_features(data_dir)
    imps = read_table(data_dir / "impressions.parquet", impressions_table(scene)).to_pandas()
    return join_sides(imps, *side_tables(data_dir), where=data_dir / "impressions.parquet"), scene


def side_tables(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shop and user columns the fields need (small tables: kept in memory, also when streaming)."""
    data_dir = Path(data_dir)
    shops = read_table(data_dir / SHOPS.file, SHOPS, ["shop_id", "category", "district", "price_level"]).to_pandas()
    users = read_table(data_dir / USERS.file, USERS, ["user_id", "home_district", "work_district"]).to_pandas()
    return shops, users


def join_sides(imps: pd.DataFrame, shops: pd.DataFrame, users: pd.DataFrame, where: Path) -> pd.DataFrame:
    """Impression rows with their ``shop.*`` and ``user.*`` columns; an id missing from its table is an error."""
    for name, table, key in (("shops", shops, "shop_id"), ("users", users, "user_id")):
        lost = ~imps[key].isin(table[key])
        if lost.any():
            raise SchemaError(f"{where}: column '{key}' has {int(lost.sum())} "
                              f"values not in {name}.parquet (e.g. {imps.loc[lost, key].iloc[0]})")
    shops = shops.rename(columns=lambda c: c if c == "shop_id" else f"shop.{c}")
    users = users.rename(columns=lambda c: c if c == "user_id" else f"user.{c}")
    return imps.merge(shops, on="shop_id", how="left").merge(users, on="user_id", how="left")


# ---------------------------------------------------------------------------- vocabularies


def _sorted_uniques(values: pd.Series | np.ndarray) -> list:
    """Distinct raw values, sorted (numbers numerically), as Python scalars."""
    return sorted(v.item() if isinstance(v, np.generic) else v for v in pd.unique(np.asarray(values)))


def vocab_index(values: pd.Series | np.ndarray, vocab: list[str]) -> np.ndarray:
    """Vocabulary index of each value (0 = not in ``vocab``), canonicalising each distinct value once."""
    index = {v: i + 1 for i, v in enumerate(vocab)}
    codes, uniques = pd.factorize(np.asarray(values))
    mapped = np.array([index.get(canonical_value(u), 0) for u in uniques] + [0], dtype=np.int64)
    return mapped[codes]  # code -1 (missing) picks the trailing 0


def _bucketise(values: pd.Series, edges: list[float]) -> np.ndarray:
    """Bucket labels ``b0 .. bK`` of float values, from interior quantile edges."""
    ids = np.searchsorted(np.asarray(edges), np.asarray(values, dtype=np.float64), side="right")
    return np.char.add("b", ids.astype(str))


def _scene_ids(values: pd.Series | np.ndarray, edges: list[float] | None) -> np.ndarray:
    """What a ``scene:<name>`` ID field holds for raw values: their bucket label (float features, ``edges``) or
    the values themselves."""
    return _bucketise(values, edges) if edges is not None else np.asarray(values)


def _scene_id_column(frame: pd.DataFrame, feat: SceneFeature, buckets: dict[str, list[float]]) -> np.ndarray:
    return _scene_ids(frame[feat.name], buckets.get(feat.name))


def scene_id_label(spec: "FeatureSpec", name: str, value: object) -> str:
    """The vocabulary label of one raw value in the ``scene:<name>`` ID field (a float feature's: its bucket)."""
    return canonical_value(_scene_ids(np.array([value]), spec.buckets.get(name))[0])


def build_spec(frame: pd.DataFrame, scene: list[SceneFeature]) -> FeatureSpec:
    """Vocabularies from the train rows; the scene tables from all rows."""
    train = frame[frame["split"] == "train"]
    if train.empty:
        raise SchemaError("impressions: no rows with split 'train' to build vocabularies from")
    fields = [FieldSpec(name, side, [canonical_value(v) for v in _sorted_uniques(train[col])])
              for name, side, col in BASE_FIELDS]
    buckets = {}
    for f in scene:
        if f.kind == "float":
            qs = np.quantile(train[f.name].to_numpy(np.float64), np.linspace(0, 1, N_BUCKETS + 1)[1:-1])
            buckets[f.name] = [float(q) for q in np.unique(qs)]
        ids = _scene_id_column(train, f, buckets)
        fields.append(FieldSpec(f"scene:{f.name}", "scene", [canonical_value(v) for v in _sorted_uniques(ids)]))
    return FeatureSpec(fields, list(scene), *scene_catalogue(frame, scene), buckets)


def scene_catalogue(frame: pd.DataFrame, scene: list[SceneFeature]) -> tuple[dict[str, list[str]],
                                                                              dict[str, list[str]], list[str]]:
    """The scene tables' contents, from all rows: per feature its distinct canonical values (sorted) and
    their rendered texts, and every distinct whole rendered scene (sorted)."""
    values, texts = {}, {}
    for f in scene:
        raw = _sorted_uniques(frame[f.name])
        values[f.name] = [canonical_value(v) for v in raw]
        texts[f.name] = [f.render(v) for v in raw]
    names = [f.name for f in scene]
    local = _scene_local_index(names, values, frame)
    whole = sorted({_whole_text(names, texts, row) for row in np.unique(local, axis=0)})
    return values, texts, whole


def embed_catalogue(data_dir: Path) -> tuple[SceneTable, SceneTable, set[str]]:
    """What the embed stage needs of a data directory, without building the feature spec: the per-feature
    and the whole-scene table (the keys and texts :meth:`FeatureSpec.scene_table` gives for the same data)
    and the canonical ids of the shops shown in train. Reads only the impressions' scene, shop and split
    columns."""
    data_dir = Path(data_dir)
    scene = read_scene_features(data_dir)
    names = [f.name for f in scene]
    frame = read_table(data_dir / "impressions.parquet", impressions_table(scene),
                       list(dict.fromkeys([*names, "shop_id", "split"]))).to_pandas()
    values, texts, whole = scene_catalogue(frame, scene)
    seen = {canonical_value(v) for v in _sorted_uniques(frame.loc[frame["split"] == "train", "shop_id"])}
    return SceneTable.per_feature(names, values, texts), SceneTable.whole(whole), seen


# ---------------------------------------------------------------------------- encoding


def _scene_local_index(names: list[str], values: dict[str, list[str]], frame: pd.DataFrame) -> np.ndarray:
    """(N, F) index of each row's value within its feature's value list; -1 if absent."""
    cols = [vocab_index(frame[n], values[n]) - 1 for n in names]
    return np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0), np.int64)


def _whole_text(names: list[str], texts: dict[str, list[str]], local_row: np.ndarray) -> str:
    """One scene as one text: the per-feature texts joined (a feature with no text is skipped)."""
    return WHOLE_SEP.join(texts[n][j] for n, j in zip(names, local_row) if j >= 0)


def _field_indices(spec: FeatureSpec, frame: pd.DataFrame) -> np.ndarray:
    """(N, n_fields) vocabulary indices, in ``spec.fields`` order (base fields, then scene IDs)."""
    cols = [vocab_index(frame[col], fs.vocab) for fs, (_, _, col) in zip(spec.fields, BASE_FIELDS)]
    for fs, feat in zip(spec.fields[len(BASE_FIELDS):], spec.scene):
        cols.append(vocab_index(_scene_id_column(frame, feat, spec.buckets), fs.vocab))
    return np.stack(cols, axis=1).astype(np.int64)


def _whole_rows(spec: FeatureSpec, local: np.ndarray) -> np.ndarray:
    """(N,) row of each scene in the whole-scene table (0 when a value or the scene is unknown).

    Each distinct scene is rendered once, then scattered back to its rows."""
    table = spec.scene_table(whole=True)
    distinct, inverse = np.unique(local, axis=0, return_inverse=True)
    rows = [0 if (r < 0).any() else table.row(whole_scene_key(_whole_text(spec.scene_names, spec.scene_texts, r)))
            for r in distinct]
    return np.array(rows + [0], dtype=np.int64)[inverse.reshape(-1)]


def encode(spec: FeatureSpec, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
    """Tensors of one split (see the module docstring for the keys)."""
    local = _scene_local_index(spec.scene_names, spec.scene_values, frame)
    table = spec.scene_table()
    offsets = np.array([table.start(n) for n in spec.scene_names], dtype=np.int64)
    return {
        "x": torch.from_numpy(_field_indices(spec, frame)),
        "scene": torch.from_numpy(np.where(local >= 0, local + offsets, 0).astype(np.int64)),
        "whole": torch.from_numpy(_whole_rows(spec, local)),
        "label": torch.from_numpy(frame["label"].to_numpy(np.float32, copy=True)),
        "user": torch.from_numpy(frame["user_id"].to_numpy(np.int64, copy=True)),
        "request": torch.from_numpy(frame["request_id"].to_numpy(np.int64, copy=True)),
        "unseen": torch.from_numpy(frame["unseen_scene"].to_numpy(bool, copy=True)),
    }


def build_features(data_dir: Path) -> tuple[FeatureSpec, dict[str, dict[str, torch.Tensor]]]:
    """Read a data directory; return the spec and the tensors of each split."""
    frame, scene = load_frame(data_dir)
    spec = build_spec(frame, scene)
    return spec, {s: encode(spec, frame[frame["split"] == s]) for s in SPLITS}


# ---------------------------------------------------------------------------- batches


class Batches:
    """Mini-batches of a split's tensors, reshuffled every epoch by a seeded generator.

    Epoch ``e`` uses seed ``seed + e``, so a run is reproducible and a resumed run can skip
    to its epoch with ``set_epoch``. With ``world_size > 1`` each rank takes every
    ``world_size``-th row of the permutation, truncated to equal length (DDP needs equal
    step counts on every rank).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        self.tensors, self.batch_size, self.shuffle = tensors, batch_size, shuffle
        self.seed, self.drop_last, self.rank, self.world_size = seed, drop_last, rank, world_size
        self.n = len(next(iter(tensors.values())))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rows(self) -> torch.Tensor:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        per_rank = self.n // self.world_size if self.world_size > 1 else self.n
        return order[self.rank :: self.world_size][:per_rank]

    def __len__(self) -> int:
        per_rank = self.n // self.world_size if self.world_size > 1 else self.n
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rows = self._rows()
        self.epoch += 1
        for start in range(0, len(rows), self.batch_size):
            idx = rows[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            yield {k: v[idx] for k, v in self.tensors.items()}
