"""Table schemas, declared once, and the checks every loader runs.

A data directory holds three Parquet tables and one JSON file:

- ``shops.parquet``       one row per shop (item): its text fields feed the LLM corpus.
- ``users.parquet``       one row per user: a short profile text.
- ``impressions.parquet`` one row per shown (request, shop) pair, with its click label,
                          its split and one column per real-time scene feature.
- ``dataset.json``        which scene features this data set has and how each renders as
                          text (``scene_features``), plus free-form facts about the data.

Scene features differ between data sets (a food-delivery market has weather, MovieLens has
only what a timestamp tells), so they are declared in ``dataset.json`` as a list of
:class:`SceneFeature` and every later stage (embedding cache, scene encoder, serving) finds
them there instead of hard-coding names.

Every check raises :class:`SchemaError` with one line naming the file and the column.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from larr.data.scene import canonical_value
from larr.errors import LarrError

Kind = Literal["int", "float", "str", "bool"]

SPLITS = ("train", "valid", "test")
DATASET_FILE = "dataset.json"


class SchemaError(LarrError):
    """A table does not match its declared schema (message: one line, file and column)."""


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    doc: str
    nullable: bool = False


@dataclass(frozen=True)
class SceneFeature:
    """One real-time scene feature: a column of ``impressions`` rendered as its own text.

    ``template`` is a ``str.format`` pattern with ``{value}``; LARR encodes each distinct
    rendered text once with the frozen LLM and caches it. ``descriptions`` (optional) maps a value
    (its :func:`~larr.data.scene.canonical_value`) to what the platform knows about it beyond its
    name — a landmark's category, an event's kind —, read after the name by every encoder alike:
    ``nearby landmark: Maple Garden, block 3 (residential compound)``.
    """

    name: str
    kind: Kind
    template: str
    doc: str = ""
    descriptions: dict[str, str] = field(default_factory=dict, hash=False)

    def render(self, value: object) -> str:
        text = self.template.format(value=value)
        desc = self.descriptions.get(canonical_value(value))
        return f"{text} ({desc})" if desc else text

    def to_json(self) -> dict:
        """Its entry in ``dataset.json`` (``descriptions`` only when there are any)."""
        d = asdict(self)
        if not self.descriptions:
            del d["descriptions"]
        return d


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    doc: str

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


SHOPS = Table(
    "shops",
    (
        Column("shop_id", "int", "Item id, unique, 0..n-1."),
        Column("name", "str", "Shop (or movie) name."),
        Column("category", "str", "Cuisine (or genres)."),
        Column("district", "str", "District the shop is in ('' when not applicable)."),
        Column("price_level", "int", "1 (cheap) .. 4 (expensive); 0 when unknown."),
        Column("rating", "float", "Average rating, 0..5."),
        Column("description", "str", "Free-text description."),
        Column("menu", "str", "Dishes with prices, '; '-separated ('' when not applicable)."),
        Column("open_day", "int", "First day the shop is listed (new shops open late)."),
    ),
    "Items to rank.",
)

USERS = Table(
    "users",
    (
        Column("user_id", "int", "User id, unique, 0..n-1."),
        Column("home_district", "str", "Where the user lives ('' when unknown)."),
        Column("work_district", "str", "Where the user works or studies ('' when unknown)."),
        Column("price_sensitivity", "float", "0 (indifferent) .. 1 (very price-sensitive)."),
        Column("profile", "str", "Short profile text."),
    ),
    "Who requests.",
)

IMPRESSION_BASE = Table(
    "impressions",
    (
        Column("request_id", "int", "Id of the feed request; rows of one request share it."),
        Column("ts", "int", "Request time, Unix seconds."),
        Column("day", "int", "Day index from the start of the data, used for the time split."),
        Column("user_id", "int", "Requesting user (users.user_id)."),
        Column("shop_id", "int", "Shown item (shops.shop_id)."),
        Column("position", "int", "Rank at which the item was shown, 0-based."),
        Column("label", "int", "1 clicked, 0 not."),
        Column("split", "str", "train | valid | test, by day."),
        Column("unseen_scene", "bool", "A scene value of this row never occurs in train."),
    ),
    "Shown (request, item) pairs with labels; scene columns follow, per dataset.json.",
)

TABLES = (SHOPS, USERS, IMPRESSION_BASE)


def impressions_table(scene: list[SceneFeature]) -> Table:
    """The impressions schema of a data set: the base columns plus one per scene feature."""
    cols = IMPRESSION_BASE.columns + tuple(Column(f.name, f.kind, f.doc) for f in scene)
    return Table(IMPRESSION_BASE.name, cols, IMPRESSION_BASE.doc)


# ---------------------------------------------------------------------------- dataset.json


def write_dataset_meta(data_dir: Path, scene: list[SceneFeature], **facts: object) -> None:
    from larr.io import atomic_write_text

    meta = {"scene_features": [f.to_json() for f in scene], **facts}
    atomic_write_text(Path(data_dir) / DATASET_FILE, json.dumps(meta, indent=2) + "\n")


def read_scene_features(data_dir: Path) -> list[SceneFeature]:
    path = Path(data_dir) / DATASET_FILE
    if not path.is_file():
        raise SchemaError(f"{path}: missing (every data directory declares its scene features there)")
    try:
        meta = json.loads(path.read_text())
        feats = [SceneFeature(**f) for f in meta["scene_features"]]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SchemaError(f"{path}: malformed scene_features ({e})") from None
    for f in feats:
        d = f.descriptions
        if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in d.items()):
            raise SchemaError(f"{path}: scene feature '{f.name}': descriptions must map value strings to strings")
    if not feats:
        raise SchemaError(f"{path}: scene_features is empty")
    return feats


# ---------------------------------------------------------------------------- checks

_TYPE_OK = {
    "int": pa.types.is_integer,
    "float": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "str": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "bool": pa.types.is_boolean,
}


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def check_arrow_schema(schema: pa.Schema, table: Table, where: str) -> None:
    """Raise on a missing column or a column of the wrong type."""
    for col in table.columns:
        if col.name not in schema.names:
            raise SchemaError(f"{where}: missing column '{col.name}' ({col.doc})")
        t = _value_type(schema.field(col.name).type)
        if not _TYPE_OK[col.kind](t):
            raise SchemaError(f"{where}: column '{col.name}' has type {t}, expected {col.kind}")


def check_values(data: pa.Table, table: Table, where: str) -> None:
    """Raise on an empty table, nulls in non-nullable columns, or labels outside {0, 1}."""
    import pyarrow.compute as pc

    if data.num_rows == 0:
        raise SchemaError(f"{where}: table is empty")
    for col in table.columns:
        if col.name in data.column_names and not col.nullable and data[col.name].null_count:
            raise SchemaError(f"{where}: column '{col.name}' has {data[col.name].null_count} null values")
    if "label" in data.column_names and table.name == "impressions":
        bad = pc.sum(pc.invert(pc.is_in(data["label"], pa.array([0, 1])))).as_py() or 0
        if bad:
            raise SchemaError(f"{where}: column 'label' has {bad} values other than 0/1")
    if "split" in data.column_names and table.name == "impressions":
        bad = pc.sum(pc.invert(pc.is_in(data["split"].cast(pa.string()), pa.array(SPLITS)))).as_py() or 0
        if bad:
            raise SchemaError(f"{where}: column 'split' has {bad} values other than {'/'.join(SPLITS)}")


def read_table(path: Path, table: Table, columns: list[str] | None = None) -> pa.Table:
    """Read and check one Parquet table; every failure is a one-line :class:`SchemaError`."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: file not found")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    check_arrow_schema(pf.schema_arrow, table, str(path))
    data = pf.read(columns=columns)
    check_values(data, table, str(path))
    return data


def validate_dir(data_dir: Path) -> dict[str, int]:
    """Check every table of a data directory; return row counts. Raises :class:`SchemaError`."""
    data_dir = Path(data_dir)
    scene = read_scene_features(data_dir)
    counts = {}
    for table in (SHOPS, USERS, impressions_table(scene)):
        counts[table.name] = read_table(data_dir / table.file, table).num_rows
    return counts


def schema_markdown() -> str:
    """The tables as Markdown (README "Your own data"; a test keeps the two in step)."""
    lines = ["| table | column | type | meaning |", "|---|---|---|---|"]
    for table in TABLES:
        for c in table.columns:
            doc = c.doc.replace("|", r"\|")  # a pipe would end the cell
            lines.append(f"| `{table.file}` | `{c.name}` | {c.kind} | {doc} |")
    lines.append(f"| `{IMPRESSION_BASE.file}` | one per scene feature | as declared | "
                 f"The scene features named in `{DATASET_FILE}` (`scene_features`). |")
    return "\n".join(lines) + "\n"
