"""Stage-3 data as a stream: impressions too many for memory, read as pyarrow dataset batches.

``larr train`` keeps every split as in-memory tensors (:func:`larr.rec.train.load_features`) while
that is small; past ``stream.above_rows`` impressions (:func:`use_streaming`, the one rule) it
streams instead, so memory stays bounded whatever the number of rows:

- **Vocabularies in one streamed pass** (:func:`build_spec_streamed`): train value counts per
  field, every split's distinct scene values and whole scenes — the same
  :class:`~larr.rec.features.FeatureSpec` that :func:`~larr.rec.features.build_spec` makes from the
  whole frame (a test checks they are equal), plus the train counts of each scene ID value (the
  *rare* slice).
- **Train batches** (:class:`StreamedBatches`, an ``IterableDataset``): the impressions'
  row groups (of one file or of a folder of partitions) in a seeded order per epoch, read
  ``stream.scan_rows`` at a time into a buffer of ``stream.buffer_rows`` rows; the buffer's
  *requests* are shuffled (rows of a request stay together, as in
  :class:`~larr.rec.train.RequestBatches`) and cut into batches; rows left over move to the next
  buffer. Only this rank's share of each global batch is joined and encoded, so under DDP the
  model work and the encoding are split across ranks (each rank still reads the whole stream).
  A request is split only at a batch or buffer boundary.
- **Valid and test** are encoded in streamed chunks into tensors (``stream.eval_rows`` caps their
  rows, for benchmarks), scored on gathered predictions like the in-memory path.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch

from larr.config import StreamConfig
from larr.data.scene import canonical_value
from larr.data.schema import SchemaError, SceneFeature, check_arrow_schema, impressions_table, read_scene_features
from larr.distributed import Dist
from larr.rec.features import (
    BASE_FIELDS, N_BUCKETS, FeatureSpec, FieldSpec, _scene_ids, _sorted_uniques, encode, join_sides,
    scene_catalogue, side_tables, vocab_index,
)

IMPRESSIONS = "impressions.parquet"  # a file, or a folder of Parquet partitions
IMP_COLUMNS = ["request_id", "user_id", "shop_id", "position", "label", "split", "unseen_scene"]


# ---------------------------------------------------------------------------- the dataset


def impressions_dataset(data_dir: Path) -> tuple[ds.Dataset, list[SceneFeature]]:
    """The impressions as a pyarrow dataset (one file or a partitioned folder), schema checked."""
    path = Path(data_dir) / IMPRESSIONS
    if not path.exists():
        raise SchemaError(f"{path}: file not found")
    scene = read_scene_features(data_dir)
    try:
        dataset = ds.dataset(str(path), format="parquet")
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(f"{path}: not a readable Parquet dataset ({str(e).splitlines()[0]})") from None
    check_arrow_schema(dataset.schema, impressions_table(scene), str(path))
    return dataset, scene


def count_rows(data_dir: Path) -> int:
    """Impressions in the data directory, from the Parquet footers (nothing is read)."""
    dataset, _ = impressions_dataset(data_dir)
    return dataset.count_rows()


def use_streaming(cfg: StreamConfig, data_dir: Path) -> bool:
    """The one rule: stream when ``stream.mode`` says so, or (``auto``) past ``stream.above_rows`` rows."""
    if cfg.mode != "auto":
        return cfg.mode == "stream"
    return count_rows(data_dir) > cfg.above_rows


def _split_filter(split: str) -> ds.Expression:
    return pc.field("split").cast(pa.string()) == split


def _columns(scene: list[SceneFeature]) -> list[str]:
    return list(dict.fromkeys([*IMP_COLUMNS, *(f.name for f in scene)]))


def row_groups(dataset: ds.Dataset) -> list[ds.Fragment]:
    """Every row group of every file as its own fragment (the unit of the shuffled read order)."""
    return [rg for frag in dataset.get_fragments() for rg in frag.split_by_row_group()]


def scan(dataset: ds.Dataset, columns: list[str], split: str | None, scan_rows: int,
         fragments: list[ds.Fragment] | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of ``columns`` (rows of ``split`` only), fragment by fragment in the given order."""
    filt = None if split is None else _split_filter(split)
    for frag in fragments if fragments is not None else dataset.get_fragments():
        for batch in frag.to_batches(columns=columns, filter=filt, batch_size=scan_rows):
            if batch.num_rows:
                yield batch


class Joiner:
    """Adds the ``shop.*`` / ``user.*`` columns to a batch of impressions (the side tables stay in memory)."""

    def __init__(self, data_dir: Path) -> None:
        self.shops, self.users = side_tables(data_dir)
        self.where = Path(data_dir) / IMPRESSIONS

    def __call__(self, table: pa.Table | pa.RecordBatch) -> pd.DataFrame:
        return join_sides(table.to_pandas(), self.shops, self.users, self.where)


# ---------------------------------------------------------------------------- vocabularies in one pass


def _weighted_quantiles(counts: Counter, qs: np.ndarray) -> np.ndarray:
    """``np.quantile`` of the multiset ``counts`` (value → rows), exactly as of the expanded values."""
    values = np.array(sorted(counts), dtype=np.float64)
    return np.quantile(np.repeat(values, [counts[v] for v in values]), qs)


def build_spec_streamed(data_dir: Path, scan_rows: int = 1 << 17) -> tuple[FeatureSpec, list[torch.Tensor]]:
    """The feature spec of :func:`~larr.rec.features.build_spec` in one streamed pass, and the train
    rows of every scene ID vocabulary index (:func:`larr.rec.slices.train_counts` of the train split).

    Memory holds value counts and distinct scenes, never the rows."""
    dataset, scene = impressions_dataset(data_dir)
    join = Joiner(data_dir)
    names = [f.name for f in scene]
    base_cols = [col for _, _, col in BASE_FIELDS]
    train_counts: dict[str, Counter] = {c: Counter() for c in [*base_cols, *names]}
    scenes: set[tuple] = set()
    rows = 0
    for batch in scan(dataset, _columns(scene), None, scan_rows):
        frame = join(batch)
        rows += len(frame)
        train = frame[frame["split"] == "train"]
        for col in train_counts:
            vc = train[col].value_counts(sort=False)
            train_counts[col].update({(v.item() if isinstance(v, np.generic) else v): int(n)
                                      for v, n in vc.items() if n})
        if names:
            scenes.update(frame[names].drop_duplicates().itertuples(index=False, name=None))
    if not train_counts[base_cols[0]]:
        raise SchemaError("impressions: no rows with split 'train' to build vocabularies from")
    fields = [FieldSpec(name, side, [canonical_value(v) for v in _sorted_uniques(np.array(list(train_counts[col]),
                                                                                        dtype=object))])
              for name, side, col in BASE_FIELDS]
    buckets: dict[str, list[float]] = {}
    id_counts: list[Counter] = []
    for f in scene:
        counts = train_counts[f.name]
        if f.kind == "float":
            qs = _weighted_quantiles(counts, np.linspace(0, 1, N_BUCKETS + 1)[1:-1])
            buckets[f.name] = [float(q) for q in np.unique(qs)]
        raw = list(counts)
        labels = _scene_ids(np.array(raw, dtype=np.float64 if f.kind == "float" else object), buckets.get(f.name))
        per_label: Counter = Counter()  # raw labels (ints sort as numbers, as build_spec sorts them)
        for label, v in zip(labels, raw):
            per_label[label.item() if isinstance(label, np.generic) else label] += counts[v]
        id_counts.append(per_label)
        fields.append(FieldSpec(f"scene:{f.name}", "scene",
                                [canonical_value(v) for v in _sorted_uniques(np.array(list(per_label), dtype=object))]))
    distinct = pd.DataFrame(list(scenes), columns=names)
    spec = FeatureSpec(fields, list(scene), *scene_catalogue(distinct, scene), buckets)
    counts_t = []
    for fs, per_label in zip(spec.fields[len(BASE_FIELDS):], id_counts):
        t = torch.zeros(fs.size, dtype=torch.int64)
        labels = list(per_label)
        t.index_put_((torch.from_numpy(vocab_index(np.array(labels, dtype=object), fs.vocab)),),
                     torch.tensor([per_label[k] for k in labels], dtype=torch.int64), accumulate=True)
        counts_t.append(t)
    return spec, counts_t


# ---------------------------------------------------------------------------- valid / test


def encode_split(data_dir: Path, spec: FeatureSpec, split: str, max_rows: int | None = None,
                 scan_rows: int = 1 << 17) -> dict[str, torch.Tensor]:
    """Tensors of one split (as :func:`~larr.rec.features.encode`), built chunk by chunk; the first
    ``max_rows`` rows in file order when capped (whole days of the synthetic world)."""
    dataset, scene = impressions_dataset(data_dir)
    join = Joiner(data_dir)
    parts, n = [], 0
    for batch in scan(dataset, _columns(scene), split, scan_rows):
        if max_rows is not None and n + batch.num_rows > max_rows:
            batch = batch.slice(0, max_rows - n)
        parts.append(encode(spec, join(batch)))
        n += batch.num_rows
        if max_rows is not None and n >= max_rows:
            break
    if not parts:
        parts = [encode(spec, join(dataset.schema.empty_table().select(_columns(scene))))]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


SPEC_CACHE = "stream_spec.json"  # in RUN_DIR/stage3/features, next to the in-memory cache
COUNTS_CACHE = "stream_counts.safetensors"


def cached_spec(data_dir: Path, cache: Path, fingerprint: str, scan_rows: int = 1 << 17,
                dist: Dist | None = None) -> tuple[FeatureSpec, list[torch.Tensor]]:
    """:func:`build_spec_streamed`, kept in ``cache`` for the data of ``fingerprint`` (every run of a
    comparison reuses it); with several ranks rank 0 builds it and the others read it."""
    from safetensors.torch import load_file, save_file

    from larr.io import atomic_path, atomic_write_text

    dist = dist or Dist()
    if not dist.main:
        dist.barrier()
    try:
        saved = json.loads((cache / SPEC_CACHE).read_text())
        if saved["data"] != fingerprint:
            raise ValueError("stale")
        flat = load_file(cache / COUNTS_CACHE)
        spec, counts = FeatureSpec.from_json(json.dumps(saved["spec"])), [flat[str(i)] for i in range(len(flat))]
    except (OSError, KeyError, ValueError):
        if not dist.main:
            raise SchemaError(f"{cache / SPEC_CACHE}: rank 0 did not leave the streamed feature spec") from None
        spec, counts = build_spec_streamed(data_dir, scan_rows)
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache / COUNTS_CACHE) as tmp:
            save_file({str(i): c.contiguous() for i, c in enumerate(counts)}, tmp)
        atomic_write_text(cache / SPEC_CACHE, json.dumps({"data": fingerprint, "spec": json.loads(spec.to_json())},
                                                         ensure_ascii=False) + "\n")
    if dist.main:
        dist.barrier()
    return spec, counts


def stream_features(cfg: StreamConfig, data_dir: Path, cache: Path, fingerprint: str,
                    dist: Dist | None = None) -> tuple[FeatureSpec, list[torch.Tensor],
                                                       dict[str, dict[str, torch.Tensor]]]:
    """What a streamed run holds in memory: the spec, the train counts of the scene ID values (both
    cached, :func:`cached_spec`), and the valid and test tensors (at most ``cfg.eval_rows`` rows each)."""
    spec, counts = cached_spec(data_dir, cache, fingerprint, cfg.scan_rows, dist)
    splits = {s: encode_split(data_dir, spec, s, cfg.eval_rows, cfg.scan_rows) for s in ("valid", "test")}
    return spec, counts, splits


# ---------------------------------------------------------------------------- train batches


def request_order(request: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row order of a buffer: its runs of equal request ids in a random order, each run's rows together."""
    if len(request) == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, request[1:] != request[:-1]])
    counts = np.diff(np.r_[starts, len(request)])
    perm = rng.permutation(len(starts))
    s, c = starts[perm], counts[perm]
    return np.repeat(s, c) + (np.arange(len(request)) - np.repeat(np.cumsum(c) - c, c))


class StreamedBatches(torch.utils.data.IterableDataset):
    """Global batches of ``batch_size`` train rows read as a stream; this rank yields its share of each
    (rows ``[r·B/N, (r+1)·B/N)``, as :class:`~larr.rec.train.RequestBatches`). ``len`` = batches per
    epoch (capped by ``max_steps``); every rank yields exactly that many, so DDP steps stay in step."""

    def __init__(self, data_dir: Path, spec: FeatureSpec, batch_size: int, cfg: StreamConfig, seed: int = 0,
                 dist: Dist | None = None, n_rows: int | None = None) -> None:
        super().__init__()
        self.data_dir, self.spec, self.batch_size, self.cfg, self.seed = Path(data_dir), spec, batch_size, cfg, seed
        self.dist = dist or Dist()
        self.dataset, scene = impressions_dataset(data_dir)
        self.columns = _columns(scene)
        self.join = Joiner(data_dir)
        self.n = n_rows if n_rows is not None else self.dataset.count_rows(filter=_split_filter("train"))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full = self.n // self.batch_size
        return full if self.cfg.max_steps_per_epoch is None else min(full, self.cfg.max_steps_per_epoch)

    def _buffers(self) -> Iterator[pa.Table]:
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = row_groups(self.dataset)
        groups = [groups[i] for i in rng.permutation(len(groups))]
        pending, rows = [], 0
        for batch in scan(self.dataset, self.columns, "train", self.cfg.scan_rows, groups):
            pending.append(batch)
            rows += batch.num_rows
            if rows >= self.cfg.buffer_rows:
                yield pa.Table.from_batches(pending)
                pending, rows = [], 0
        if pending:
            yield pa.Table.from_batches(pending)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        B, world, rank = self.batch_size, self.dist.world, self.dist.rank
        share = B // world
        left, carry = len(self), None
        for i, table in enumerate(self._buffers()):
            if left == 0:
                return
            if carry is not None:
                table = pa.concat_tables([carry, table.cast(carry.schema)])
            order = request_order(table["request_id"].to_numpy(), np.random.default_rng([self.seed, self.epoch, i]))
            full = min(len(order) // B, left)
            mine = order[: full * B].reshape(full, B)[:, rank * share: (rank + 1) * share if rank < world - 1 else B]
            carry = table.take(pa.array(order[full * B:]))
            if full == 0:
                continue
            tensors = encode(self.spec, self.join(table.take(pa.array(mine.reshape(-1)))))
            width = mine.shape[1]
            for j in range(full):
                yield {k: v[j * width: (j + 1) * width] for k, v in tensors.items()}
            left -= full
