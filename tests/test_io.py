from __future__ import annotations

import stat

import pytest

from larr.io import atomic_dir, atomic_path, atomic_write_text


def test_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temp file left behind


def test_failed_dir_write_keeps_old_dir(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "w").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "w").write_text("2")
            raise RuntimeError("killed")
    assert (target / "w").read_text() == "1"
    with atomic_dir(target) as d:
        (d / "w").write_text("3")
    assert (target / "w").read_text() == "3" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_artifacts_are_not_owner_only(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_dir(tmp_path / "d"):
        pass
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) & stat.S_IRGRP
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) & stat.S_IRGRP
