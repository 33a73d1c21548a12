"""A ranking request → the CTR model's field indices, with the vocabularies of training.

Training encodes joined impression rows (:func:`larr.rec.features.encode`); a request instead
names a user, a scene and candidate shops, so the user's and the shops' profile fields are
looked up here from the run's ``users``/``shops`` tables, once at start-up, with the same
vocabulary look-up as training (:func:`larr.rec.features.vocab_index`, and
:func:`~larr.rec.features.scene_id_label` for scene ID fields): the indices of a known (user, shop,
scene) are exactly those the offline model saw.

Unknowns never fail a request, they map where training would have mapped them:

- a user or shop id not in the train vocabulary → OOV index 0 for its id field; its profile
  fields still come from the tables when the id is there (a shop added after training keeps
  its category, district and price level), else they are OOV too;
- a scene value never seen in training → OOV index 0 of its ``scene:<name>`` ID field (its LLM
  vector, handled by :mod:`larr.serve.scenes`, is what carries its meaning);
- a scene feature absent from the request → OOV index 0 (and the unknown LLM row).

Every candidate is scored at one display position (``ServeSettings.position``): position is a
bias feature of the logged data, not a property of the shop.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from larr.data.scene import canonical_value
from larr.data.schema import SHOPS, USERS, SceneFeature, read_table
from larr.errors import LarrError
from larr.rec.features import BASE_FIELDS, FeatureSpec, scene_id_label, vocab_index


class RequestError(LarrError):
    """A request the server cannot score as asked (unknown scene feature, wrong value type): a 422."""


@dataclass
class EncodedRequest:
    x: np.ndarray  # (N, n_fields) int64
    scene_values: dict[str, object]  # feature → typed value, only the features the request gave
    unknown_user: bool
    unknown_shops: int


def coerce_value(feat: SceneFeature, value: object) -> object:
    """A JSON scene value as the Python type of the feature's column (so keys and texts match training).

    Lenient only where no meaning is lost: an integral float for an ``int`` feature, an int for a
    ``float`` one. Anything else is a :class:`RequestError` naming the feature.
    """
    kind = feat.kind
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        if kind == "int" and (isinstance(value, int) or float(value).is_integer()):
            return int(value)
        if kind == "float":
            return float(value)
    want = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}[kind]
    raise RequestError(f"scene feature '{feat.name}' expects {want}, got {value!r}")


class FieldIndexer:
    """Request → (N, n_fields) indices in ``spec.field_names`` order (base fields, then scene IDs)."""

    def __init__(self, spec: FeatureSpec, data_dir: Path, position: int = 0) -> None:
        self.spec = spec
        self.features = {f.name: f for f in spec.scene}
        names = spec.field_names
        self.user_cols = [names.index(n) for n, side, _ in BASE_FIELDS if side == "user"]
        self.shop_cols = [names.index(n) for n, side, _ in BASE_FIELDS if side == "item"]
        self.user_id_col, self.shop_id_col = names.index("user_id"), names.index("shop_id")
        self.users, self.user_rows = self._profile_table(Path(data_dir) / USERS.file, USERS, "user", "user_id")
        self.shops, self.shop_rows = self._profile_table(Path(data_dir) / SHOPS.file, SHOPS, "item", "shop_id")
        self.base = np.zeros(len(names), np.int64)  # what every row starts from: position, then OOV
        pos_field = spec.fields[names.index("position")]
        self.base[names.index("position")] = vocab_index(np.array([position]), pos_field.vocab)[0]
        self.scene_vocab = {f.name: {v: i + 1 for i, v in enumerate(spec.fields[names.index(f"scene:{f.name}")].vocab)}
                            for f in spec.scene}
        self.scene_cols = {f.name: names.index(f"scene:{f.name}") for f in spec.scene}

    def _profile_table(self, path: Path, table, side: str, id_col: str) -> tuple[dict[str, int], np.ndarray]:
        """canonical id → row of a (n, k) matrix of the side's field indices (id field included)."""
        fields = [(n, col) for n, s, col in BASE_FIELDS if s == side]
        cols = [col.split(".", 1)[1] if "." in col else col for _, col in fields]
        rows = read_table(path, table, sorted(set(cols))).to_pandas()
        vocab = {f.name: f.vocab for f in self.spec.fields}
        matrix = np.stack([vocab_index(rows[c], vocab[n]) for (n, _), c in zip(fields, cols)], axis=1)
        index = {canonical_value(v): i for i, v in enumerate(rows[id_col].tolist())}
        return index, matrix.astype(np.int64)

    def scene_values(self, scene: dict[str, object]) -> dict[str, object]:
        """Typed values of a request's scene; an unknown feature name is a :class:`RequestError`."""
        unknown = [n for n in scene if n not in self.features]
        if unknown:
            raise RequestError(f"unknown scene feature '{unknown[0]}' (known: {', '.join(self.features)})")
        return {n: coerce_value(self.features[n], v) for n, v in scene.items()}

    def scene_id(self, name: str, value: object) -> int:
        """Index of a value in the ``scene:<name>`` ID field (float features bucketised as in training)."""
        return self.scene_vocab[name].get(scene_id_label(self.spec, name, value), 0)

    def encode(self, user_id: object, scene: dict[str, object], candidates: list[object]) -> EncodedRequest:
        values = self.scene_values(scene)
        n = len(candidates)
        x = np.tile(self.base, (n, 1))
        user = self.users.get(canonical_value(user_id))
        if user is not None:
            x[:, self.user_cols] = self.user_rows[user]
        rows = [self.shops.get(canonical_value(s), -1) for s in candidates]
        known = np.array([r >= 0 for r in rows], dtype=bool)
        if known.any():
            x[np.nonzero(known)[0][:, None], self.shop_cols] = self.shop_rows[[r for r in rows if r >= 0]]
        for name, value in values.items():
            x[:, self.scene_cols[name]] = self.scene_id(name, value)
        unknown_user = user is None or self.user_rows[user][self.user_cols.index(self.user_id_col)] == 0
        return EncodedRequest(x, values, bool(unknown_user), int((x[:, self.shop_id_col] == 0).sum()))
