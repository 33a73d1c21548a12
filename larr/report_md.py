"""``report.md``: a human-readable rendering of ``report.json``.

``report.json`` is the source of truth (every stage merges its own section into it, see
:mod:`larr.report`); this module only renders it. Sections it knows get a table (``ctr``: the
stage-3 comparison, ``embed``: LLM calls per encoder, ``sweep``: a table per swept
hyper-parameter); any other section is listed as its
scalar values, so a new stage shows up without touching this file.
"""
from __future__ import annotations

import json

from larr.config import SWEEP_PARAMS
from larr.display import fmt, mean_pm, row_pm
from larr.rec.rows import REFERENCE

CTR_COLUMNS = (("AUC", "auc"), ("GAUC", "gauc"), ("logloss", "logloss"), ("AUC unseen", "auc_unseen"),
               ("GAUC unseen", "gauc_unseen"), ("valid AUC", "valid_auc"))


def ordered_rows(report: dict) -> dict[str, dict]:
    """The ``ctr`` rows in the order of the comparison's model list (report.json sorts its keys)."""
    rows = report.get("ctr") or {}
    order = [m for m in (report.get("stage3") or {}).get("models", []) if m in rows]
    return {m: rows[m] for m in order + sorted(set(rows) - set(order))}


def ctr_table(rows: dict[str, dict]) -> str:
    """The comparison as a Markdown table: mean ± std over seeds, and Δ unseen AUC vs the ID baseline."""
    head = ["model", *(c for c, _ in CTR_COLUMNS), "Δ AUC", "Δ AUC unseen", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, r in rows.items():
        deltas = [f"{r[k]:+.4f}" if r.get(k) is not None else "" for k in ("delta_auc", "delta_auc_unseen")]
        cells = [f"`{name}`", *(row_pm(r, k) for _, k in CTR_COLUMNS), *deltas, str(r.get("n_seeds", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _stage3_notes(setup: dict) -> list[str]:
    out = [f"Seeds {setup.get('seeds')}; CTR backbone `{setup.get('backbone')}`; vectors of the LARR rows from "
           f"encoder `{setup.get('larr_encoder')}`; {setup.get('trained_runs', 0)} runs trained, "
           f"{setup.get('reused_runs', 0)} reused, {fmt(setup.get('seconds'), 1)} s."]
    for name, why in (setup.get("skipped") or {}).items():
        out.append(f"- skipped `{name}`: {why}")
    return out


def embed_table(embed: dict) -> str:
    lines = ["| encoder | dim | per-feature texts | whole-scene texts | whole-scene calls now | whole-scene s |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, e in (embed.get("encoders") or {}).items():
        w = e.get("whole") or {}
        lines.append(f"| `{name}` | {fmt(e.get('dim'))} | {fmt(e['scene']['texts'])} | "
                     f"{fmt(w.get('texts')) if w else '–'} | {fmt(w.get('encoded')) if w else '–'} | "
                     f"{fmt(w.get('seconds'), 1) if w else '–'} |")
    return "\n".join(lines)


def sweep_rows(entry: dict, reference: dict | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and cells of one swept parameter: per value valid / test / unseen AUC, and Δ unseen vs the ID
    baseline when the comparison has it; the config's own value is marked."""
    head = ["value", "valid AUC", "AUC", "AUC unseen"]
    ref = (reference or {}).get("auc_unseen")
    if ref is not None:
        head.append(f"Δ AUC unseen vs {REFERENCE}")
    rows = []
    for i, v in enumerate(entry["values"]):
        cells = [f"{v:g}" + (" (config)" if v == entry.get("default") else "")]
        cells += [mean_pm(entry[k][i], entry[f"{k}_std"][i]) for k in ("valid_auc", "auc", "auc_unseen")]
        if ref is not None:
            u = entry["auc_unseen"][i]
            cells.append("" if u is None else f"{u - ref:+.4f}")
        rows.append(cells)
    return head, rows


def sweep_tables(report: dict) -> list[str]:
    """The ``sweep`` section: one Markdown table per hyper-parameter (the paper's Figure 4 as numbers)."""
    sweep, setup = report.get("sweep") or {}, report.get("sweep_setup") or {}
    reference = (report.get("ctr") or {}).get(REFERENCE)
    out = [f"The `larr` row with one hyper-parameter changed at a time (the others at their config value); "
           f"seeds {setup.get('seeds')}, vectors from encoder `{setup.get('larr_encoder')}`; the last `larr sweep` "
           f"trained {setup.get('trained_runs', 0)} runs and reused {setup.get('reused_runs', 0)} in "
           f"{fmt(setup.get('seconds'), 1)} s. Plots: `plots/sweep_<param>.png`.", ""]
    for param in [p for p in SWEEP_PARAMS if p in sweep] + sorted(set(sweep) - set(SWEEP_PARAMS)):
        head, rows = sweep_rows(sweep[param], reference)
        out += [f"### {SWEEP_PARAMS.get(param, param)} (`rec.{param}`)", "",
                "| " + " | ".join(head) + " |", "|" + "|".join(["---:"] * len(head)) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    return out


def _generic(section: dict) -> list[str]:
    out = []
    for k, v in section.items():
        if isinstance(v, (dict, list)):
            text = json.dumps(v, ensure_ascii=False)
            v = text if len(text) <= 160 else text[:157] + "..."
        out.append(f"- **{k}**: {fmt(v)}")
    return out


def render_markdown(report: dict) -> str:
    """The whole report as Markdown (CTR comparison first: it is the result people look for)."""
    parts = ["# LARR run report", ""]
    if report.get("ctr"):
        parts += ["## Stage 3: CTR comparison (test split; unseen = test rows with a scene value never seen in "
                  "training)", "", ctr_table(ordered_rows(report)), ""]
        if report.get("stage3"):
            parts += _stage3_notes(report["stage3"]) + [""]
    if report.get("embed"):
        e = report["embed"]
        parts += ["## Embed: frozen encoder calls", "",
                  f"{fmt(e.get('scene_texts'))} per-feature scene texts vs {fmt(e.get('whole_scene_texts'))} "
                  "distinct whole-scene texts (one LLM call each).", "", embed_table(e), ""]
    if report.get("sweep"):
        parts += ["## Hyper-parameter sweep (test split; the paper's Figure 4)", ""] + sweep_tables(report)
    for name, section in report.items():
        if name in ("ctr", "stage3", "embed", "sweep", "sweep_setup"):
            continue
        parts += [f"## {name}", ""]
        parts += _generic(section) if isinstance(section, dict) else [fmt(section)]
        parts.append("")
    return "\n".join(parts)
