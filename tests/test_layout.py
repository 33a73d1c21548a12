"""The run-directory layout in docs/architecture.md is the one larr/layout.py defines."""
from __future__ import annotations

import re
from pathlib import Path

from larr import layout

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def documented_tree() -> str:
    text = DOC.read_text()
    block = re.search(r"<!-- layout:begin -->\n```\n(.*?)```\n<!-- layout:end -->", text, re.S)
    assert block, f"{DOC}: no layout block between <!-- layout:begin --> and <!-- layout:end -->"
    return block.group(1)


def test_architecture_doc_shows_the_layout_of_the_code():
    assert documented_tree() == layout.tree_text(), (
        "docs/architecture.md's run-directory block is stale: paste `python -c \"from larr import layout; "
        "print(layout.tree_text(), end='')\"` between its layout markers")


def test_every_top_level_name_is_in_the_tree():
    tree = layout.tree_text()
    for name in (layout.CONFIG_FILE, layout.DATA, layout.CORPUS, layout.STAGE1, layout.STAGE1_CKPT, layout.STAGE2,
                 layout.EMBEDDINGS, layout.STAGE3, layout.STAGE3_CKPT, layout.EXPORT, layout.LOGS, layout.PLOTS,
                 layout.REPORT_JSON, layout.REPORT_MD, layout.METRICS_FILE, layout.SCENE_STATS_FILE):
        assert name in tree, name


def test_path_helpers_compose_the_names():
    run = Path("R")
    assert layout.store_dir(run, "larr") == Path("R/embeddings/larr")
    assert layout.stage3_run(run, layout.run_name("larr", 2)) == Path("R/stage3/larr_seed2")
    assert layout.stage3_run(run, layout.sweep_run_id("scene_size=4", 0)) == Path("R/stage3/sweep/scene_size=4_seed0")
    assert layout.data_dir(run) == Path("R/data") and layout.data_dir(run, Path("elsewhere")) == Path("elsewhere")
