"""Streaming stage-3 data (``larr.rec.stream``): the one-pass vocabularies equal the in-memory ones, the
streamed batches keep requests together and split into rank shares like RequestBatches, the one rule
picks the path, and `larr train` trains from the stream (also under 2 gloo ranks)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from larr import layout
from larr.config import StreamConfig, load_config
from larr.distributed import Dist
from larr.rec.features import build_features
from larr.rec.slices import train_counts
from larr.rec.stream import StreamedBatches, build_spec_streamed, encode_split, request_order, use_streaming
from larr.rec.train import train_model
from test_distributed import TRAIN_SETS, copy_run, sets, torchrun

SMALL = StreamConfig(mode="stream", buffer_rows=3000, scan_rows=700)


def test_streamed_vocabularies_and_counts_equal_the_in_memory_ones(quick_run):
    data = quick_run / "data"
    spec, splits = build_features(data)
    streamed, counts = build_spec_streamed(data, scan_rows=999)  # many small reads: merging must be exact
    assert streamed == spec
    cols = [spec.field_names.index(f"scene:{n}") for n in spec.scene_names]
    for a, b in zip(train_counts(splits["train"]["x"], cols, spec.vocab_sizes), counts):
        assert torch.equal(a, b)
    test = encode_split(data, spec, "test", scan_rows=500)
    for k, v in splits["test"].items():
        assert torch.equal(test[k], v), k
    assert len(encode_split(data, spec, "valid", max_rows=100)["label"]) == 100


def test_the_one_rule_picks_the_path(quick_run):
    rows = pq.ParquetFile(quick_run / "data" / "impressions.parquet").metadata.num_rows
    assert use_streaming(StreamConfig(above_rows=rows - 1), quick_run / "data")
    assert not use_streaming(StreamConfig(above_rows=rows), quick_run / "data")
    assert use_streaming(StreamConfig(mode="stream", above_rows=10**9), quick_run / "data")
    assert not use_streaming(StreamConfig(mode="memory", above_rows=0), quick_run / "data")


def test_request_order_keeps_each_request_together():
    request = np.array([4, 4, 4, 9, 9, 1, 7, 7, 7, 7])
    order = request_order(request, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(10))
    runs = [k for i, k in enumerate(request[order]) if i == 0 or k != request[order][i - 1]]
    assert sorted(runs) == [1, 4, 7, 9]  # each request one run


def test_streamed_batches_cover_the_epoch_and_split_into_rank_shares(quick_run):
    data = quick_run / "data"
    spec, splits = build_features(data)
    whole = StreamedBatches(data, spec, 512, SMALL, seed=3)
    batches = list(whole)
    n_train = len(splits["train"]["label"])
    assert len(batches) == len(whole) == n_train // 512 and all(len(b["label"]) == 512 for b in batches)
    rows = torch.cat([b["request"] for b in batches])
    assert len(torch.unique(rows)) > 0.9 * len(torch.unique(splits["train"]["request"]))  # the epoch, shuffled
    # requests stay together: within a batch, a request's rows are one run (cuts only at batch/buffer ends)
    cut = sum(len(torch.unique_consecutive(b["request"])) - len(torch.unique(b["request"])) for b in batches)
    assert cut == 0
    whole.set_epoch(1)
    assert not torch.equal(next(iter(whole))["request"], batches[0]["request"])  # reshuffled per epoch
    whole.set_epoch(0)
    shares = [list(StreamedBatches(data, spec, 512, SMALL, seed=3, dist=Dist(r, 2))) for r in range(2)]
    for i, b in enumerate(batches):
        for k in b:
            assert torch.equal(torch.cat([shares[0][i][k], shares[1][i][k]]), b[k]), k
    capped = StreamedBatches(data, spec, 512, SMALL.model_copy(update={"max_steps_per_epoch": 3}), seed=3)
    assert len(capped) == len(list(capped)) == 3


def test_train_model_streams(quick_run, tmp_path):
    run = copy_run(quick_run, tmp_path / "run")
    over = ["stream.mode=stream", "stream.buffer_rows=100000", "rec.epochs=2"]
    m = train_model(load_config(None, [*TRAIN_SETS, *over]), run, "larr", seed=0)
    spec, splits = build_features(run / "data")
    assert m["streamed"] is True and m["test"]["n"] == len(splits["test"]["label"])
    assert m["test"]["auc"] > 0.58 and m["history"][1]["valid_logloss"] < m["history"][0]["valid_logloss"] + 0.01
    assert not (layout.features_dir(run) / "tensors.safetensors").exists()  # no split tensors were built


@pytest.mark.slow
def test_two_process_streamed_train_matches_one_process(quick_run, tmp_path):
    """Both ranks read the same stream and take their share of each global batch: the same run as one
    process up to float rounding (see test_distributed.test_two_process_train_matches_one_process)."""
    over = [*TRAIN_SETS, "stream.mode=stream", "stream.buffer_rows=5000", "stream.scan_rows=1000", "rec.epochs=1"]
    one, two = copy_run(quick_run, tmp_path / "one"), copy_run(quick_run, tmp_path / "two")
    single = train_model(load_config(None, over), one, "larr", seed=0)
    torchrun(["train", "--out", str(two), "--model", "larr", *sets(over)], cwd=tmp_path)
    multi = json.loads((layout.stage3_run(two, layout.run_name("larr", 0)) / layout.METRICS_FILE).read_text())
    assert multi["streamed"] and multi["world_size"] == 2 and multi["steps"] == single["steps"]
    assert multi["test"]["auc"] == pytest.approx(single["test"]["auc"], abs=1e-3)
    assert multi["history"][0]["train_bce"] == pytest.approx(single["history"][0]["train_bce"], rel=1e-4)
    shutil.rmtree(tmp_path / "one")


def test_streamed_spec_is_cached_per_data(quick_run, tmp_path):
    from larr.rec.stream import SPEC_CACHE, cached_spec

    data = quick_run / "data"
    spec, counts = cached_spec(data, tmp_path / "cache", "fp1")
    again, counts2 = cached_spec(tmp_path / "nowhere", tmp_path / "cache", "fp1")  # read back, no data needed
    assert again == spec and all(torch.equal(a, b) for a, b in zip(counts, counts2))
    saved = json.loads((tmp_path / "cache" / SPEC_CACHE).read_text())
    assert saved["data"] == "fp1"
    from larr.data.schema import SchemaError

    with pytest.raises(SchemaError, match="not found"):
        cached_spec(tmp_path / "nowhere", tmp_path / "cache", "fp2")  # other data: rebuilt (and here: no data)


def test_a_folder_of_partitions_streams_like_one_file(quick_run, tmp_path):
    """``impressions.parquet/`` as a folder of part files (how big logs arrive) gives the same spec and batches."""
    data = tmp_path / "data"
    shutil.copytree(quick_run / "data", data)
    table = pq.read_table(data / "impressions.parquet")
    (data / "impressions.parquet").unlink()
    (data / "impressions.parquet").mkdir()
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), data / "impressions.parquet" / "part-0.parquet", row_group_size=2000)
    pq.write_table(table.slice(half), data / "impressions.parquet" / "part-1.parquet", row_group_size=2000)
    spec, _ = build_features(quick_run / "data")
    streamed, _ = build_spec_streamed(data)
    assert streamed == spec
    batches = list(StreamedBatches(data, spec, 512, SMALL, seed=1))
    assert len(batches) == int((table["split"].to_numpy() == "train").sum()) // 512
    m = train_model(load_config(None, [*TRAIN_SETS, "rec.epochs=1", "stream.mode=stream"]), copy_run(quick_run, tmp_path / "run"),
                    "base", seed=0, data_dir=data)
    assert m["streamed"] and m["test"]["n"] == len(encode_split(data, spec, "test")["label"])
