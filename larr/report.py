"""``report.json`` in the run directory: every stage merges its own section into it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from larr.io import atomic_write_text
from larr.layout import report_json, report_md


def read_report(run_dir: Path) -> dict[str, Any]:
    path = report_json(run_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def update_report(run_dir: Path, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into ``report[section]`` (keys of other sections are kept) and write atomically."""
    report = read_report(run_dir)
    report.setdefault(section, {}).update(values)
    atomic_write_text(report_json(run_dir), json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def write_markdown(run_dir: Path, report: dict[str, Any]) -> Path:
    """``report.md``: the whole report rendered for people (:func:`larr.report_md.render_markdown`)."""
    from larr.report_md import render_markdown

    atomic_write_text(report_md(run_dir), render_markdown(report))
    return report_md(run_dir)
