"""benchmarks/stage3_variants.py: a variant names the row it modifies, and a bad one fails before any training."""
from __future__ import annotations

import re

import pytest

from bench_helpers import load_benchmark


def test_a_variant_names_its_row_or_takes_the_default():
    parse = load_benchmark("stage3_variants").parse_variant
    assert parse("ids30@base_scene_ids=rec.id_drop_rows=30", "larr") == (
        "ids30", "base_scene_ids", ["rec.id_drop_rows=30"])
    assert parse("lr=rec.lr=0.02,rec.epochs=4", "larr_noalign") == ("lr", "larr_noalign", ["rec.lr=0.02", "rec.epochs=4"])


@pytest.mark.parametrize("text, message", [("ids30@no_such_row=rec.id_drop_rows=30", "unknown row 'no_such_row'"),
                                           ("ids30", "expected NAME[@ROW]=key=value")])
def test_a_malformed_variant_is_one_line(text, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        load_benchmark("stage3_variants").parse_variant(text, "larr")
