"""``report.json`` in the run directory: every stage merges its own section into it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from larr.io import atomic_write_text

REPORT_FILE = "report.json"


def read_report(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / REPORT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def update_report(run_dir: Path, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into ``report[section]`` (keys of other sections are kept) and write atomically."""
    report = read_report(run_dir)
    report.setdefault(section, {}).update(values)
    atomic_write_text(Path(run_dir) / REPORT_FILE, json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report
