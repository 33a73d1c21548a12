"""``report.md``: a human-readable rendering of ``report.json``.

``report.json`` is the source of truth (every stage merges its own section into it, see
:mod:`larr.report`); this module only renders it. Sections it knows get tables: ``ctr`` (the
stage-3 comparison on every slice), ``paired`` (per-seed Δ vs the ID baseline and vs the generic
encoder, with 95 % intervals), ``per_value`` (never-seen values and rarity bands), ``stage1``,
``stage2`` (retrieval and scene-semantics scores by encoder), ``embed`` (LLM calls per encoder),
``sweep``; any other section is a table of its (flattened) values, so a new stage shows up
without touching this file, and nothing is ever cut off.
"""
from __future__ import annotations

import re
from typing import Any

from larr.config import SWEEP_PARAMS
from larr.display import fmt, mean_pm, row_pm
from larr.rec.rows import REFERENCE

CTR_COLUMNS = (("AUC", "auc"), ("GAUC", "gauc"), ("logloss", "logloss"), ("AUC unseen", "auc_unseen"),
               ("AUC rare", "auc_rare"), ("AUC frequent", "auc_frequent"), ("valid AUC", "valid_auc"),
               ("valid unseen", "valid_auc_unseen"), ("valid rare", "valid_auc_rare"))
SLICE_NOTE = ("unseen = rows with a scene value never seen in training; rare = the other rows whose rarest scene "
              "value has fewer than `experiment.rare_below` train rows; frequent = the rest")
PAIRED_KEYS = (("test", "test"), ("test unseen", "test_unseen"), ("test rare", "test_rare"),
               ("test frequent", "test_frequent"), ("valid", "valid"), ("valid unseen", "valid_unseen"),
               ("valid rare", "valid_rare"))


def table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns left-aligned, the others right-aligned."""
    align = ["---"] * left + ["---:"] * (len(head) - left)
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def ordered_rows(report: dict) -> dict[str, dict]:
    """The ``ctr`` rows in the order of the comparison's model list (report.json sorts its keys)."""
    rows = report.get("ctr") or {}
    order = [m for m in (report.get("stage3") or {}).get("models", []) if m in rows]
    return {m: rows[m] for m in order + sorted(set(rows) - set(order))}


def ctr_table(rows: dict[str, dict]) -> str:
    """The comparison as a Markdown table: mean ± std over seeds on every slice, Δ vs the ID baseline."""
    head = ["model", *(c for c, _ in CTR_COLUMNS), "Δ AUC", "Δ AUC unseen", "seeds"]
    cells = []
    for name, r in rows.items():
        deltas = [f"{r[k]:+.4f}" if r.get(k) is not None else "" for k in ("delta_auc", "delta_auc_unseen")]
        cells.append([f"`{name}`", *(row_pm(r, k) for _, k in CTR_COLUMNS), *deltas, str(r.get("n_seeds", ""))])
    return table(head, cells)


def interval_cell(e: dict) -> str:
    if e.get("mean") is None:
        return "n/a"
    text = f"{e['mean']:+.4f}" + (f" [{e['lo']:+.4f}, {e['hi']:+.4f}]" if e.get("lo") is not None else "")
    return f"**{text}**" if e.get("significant") else text


def paired_tables(paired: dict, rows: list[str]) -> list[str]:
    """One table per reference: mean Δ AUC [95 % interval] per row and slice (bold: excludes 0), then the
    per-seed Δ of the test slices."""
    out = []
    for ref_key, entries in paired.items():
        ref = ref_key.removeprefix("vs_")
        names = [r for r in rows if r in entries] + sorted(set(entries) - set(rows))
        out += [f"### Δ AUC vs `{ref}`, paired by seed", "",
                table(["model", *(k for k, _ in PAIRED_KEYS)],
                      [[f"`{n}`", *(interval_cell(entries[n][k]) for _, k in PAIRED_KEYS)] for n in names]), "",
                "Per seed (test):", "",
                table(["model", *(k for k, _ in PAIRED_KEYS[:4])],
                      [[f"`{n}`", *(", ".join(f"{d:+.4f}" for d in entries[n][k]["deltas"]) or "n/a"
                                    for _, k in PAIRED_KEYS[:4])] for n in names]), ""]
    return out


def probe_tables(probe: dict, rows: list[str]) -> list[str]:
    """Rows × (probe, slice): mean Δ AUC over seeds [95 % interval] (larr.rec.probe)."""
    from larr.rec.probe import PROBES

    names = [r for r in rows if r in probe] + sorted(set(probe) - set(rows))
    slices = [sl for sl in ("all", "unseen", "rare", "frequent") if names and sl in probe[names[0]][PROBES[0]]]
    head = ["model", *(f"{p} {sl}" for p in PROBES for sl in slices)]
    body = [[f"`{n}`", *(interval_cell(probe[n][p][sl]) for p in PROBES for sl in slices)] for n in names]
    return ["`vector_mean` / `vector_shuffle`: the scene vector replaced by its batch mean / another row's; "
            "`llm_shuffle`: every LLM input taken from another row's scene (larr.rec.probe).", "",
            table(head, body), ""]


def per_value_tables(pv: dict, rows: list[str]) -> list[str]:
    """Never-seen values and rarity bands: test rows, Δ AUC vs the reference per row (mean over seeds)."""
    shown = [r for r in rows if r != pv.get("reference")]

    def cells(e: dict, label: list[str]) -> list[str]:
        return [*label, fmt(e["rows"]), fmt(e["auc"].get(pv.get("reference"))),
                *(fmt(e["delta"].get(r)) if e["delta"].get(r) is None else f"{e['delta'][r]:+.4f}" for r in shown)]

    head = ["rows", f"AUC `{pv.get('reference')}`", *(f"Δ `{r}`" for r in shown)]
    out = [f"Values never seen in training (AUC needs ≥ {pv.get('min_rows')} test rows and both labels):", "",
           table(["feature", "value", "kind", "nearest seen", *head],
                 [cells(e, [e["feature"], str(e["value"]), e["kind"], e.get("nearest_seen") or "–"])
                  for e in pv.get("values", [])], left=4), "",
           "Seen rows by the train count of their rarest scene value:", "",
           table(["rarest value seen (train rows)", *head], [cells(b, [b["band"]]) for b in pv.get("bands", [])]),
           ""]
    return out


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def values_table(section: dict) -> str:
    """Any section as a two-column table of its flattened values (lists written out in full)."""
    def cell(v: Any) -> str:
        if isinstance(v, list):
            return ", ".join(fmt(x) for x in v) if len(v) <= 40 else f"{len(v)} values"
        return fmt(v)

    return table(["key", "value"], [[f"`{k}`", cell(v)] for k, v in _flatten(section)], left=1)


def stage2_tables(s2: dict) -> list[str]:
    """Retrieval (recall@10 / MRR by pair type × encoder), scene semantics by encoder, then training figures."""
    recall_key = next((k for k in s2 if k.startswith("recall@")), None)
    out = []
    if recall_key:
        kinds = list(s2[recall_key])
        models = sorted({m for k in kinds for m in s2[recall_key][k]}, key=["untuned", "stage1", "minilm",
                                                                            "larr"].index)
        held = s2.get("heldout_pairs") or {}
        out += [f"Held-out pairs, {recall_key} / MRR:", "",
                table(["pair type", *models],
                      [[f"{k} (n={held.get(k, '?')})", *(f"{s2[recall_key][k][m]:.3f} / {s2['mrr'][k][m]:.3f}"
                                                          if m in s2[recall_key][k] else "–" for m in models)]
                       for k in kinds]), ""]
        scores = [("pooled Spearman", "scene_semantics"), ("mean of features", "scene_semantics_macro"),
                  ("unseen × seen values (centred)", "scene_semantics_unseen"),
                  ("unseen: nearest seen value right", "scene_unseen_top1"),
                  ("transfer R², rare values", "scene_transfer_rare"),
                  ("transfer R², unseen values", "scene_transfer_unseen"),
                  ("neighbour-mix R², rare values", "scene_neighbours_rare"),
                  ("neighbour-mix R², unseen values", "scene_neighbours_unseen"),
                  ("mean cosine (anisotropy)", "scene_cosine_mean")]
        rows = [[label, *(fmt((s2.get(key) or {}).get(m), 3) for m in models)] for label, key in scores
                if s2.get(key)]
        rows += [[f"feature `{f}`", *(fmt(v.get(m), 3) for m in models)]
                 for f, v in sorted((s2.get("scene_semantics_per_feature") or {}).items())]
        if rows:
            out += ["Scene semantics (Spearman of text cosine vs hidden-attribute cosine):", "",
                    table(["score", *models], rows), ""]
    done = {"scene_semantics", "scene_semantics_macro", "scene_semantics_unseen", "scene_unseen_top1",
            "scene_transfer_rare", "scene_transfer_unseen", "scene_neighbours_rare", "scene_neighbours_unseen",
            "scene_cosine_mean", "scene_semantics_per_feature", "mrr", "heldout_pairs", recall_key}
    rest = {k: v for k, v in s2.items() if k not in done}
    if rest:
        out += ["Training:", "", values_table(rest), ""]
    return out


def _stage3_notes(setup: dict) -> list[str]:
    out = [f"Seeds {setup.get('seeds')}; CTR backbone `{setup.get('backbone')}`; vectors of the LARR rows from "
           f"encoder `{setup.get('larr_encoder')}`; {setup.get('trained_runs', 0)} runs trained, "
           f"{setup.get('reused_runs', 0)} reused, {fmt(setup.get('seconds'), 1)} s."]
    return out + skipped_lines(setup)


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


def skipped_lines(setup: dict) -> list[str]:
    """One line per skipped row: why, and how to run it."""
    how = {"whole_text": "`larr embed --out RUN --set embed.whole_budget_s=null`, then `larr evaluate --out RUN`"}
    out = []
    for name, why in (setup.get("skipped") or {}).items():
        first = str(why)
        if len(first) > 160:  # e.g. thousands of whole-scene keys: say how many, not which
            missing = re.search(r"(\d+) keys missing", first)
            first = first.split(" (", 1)[0] + (f" ({int(missing.group(1)):,} vectors missing)" if missing else "")
        out.append(f"- skipped `{name}`: {first}; to run it: {how.get(name, '`larr embed --out RUN`, then `larr evaluate --out RUN`')}")
    return out


def render_markdown(report: dict) -> str:
    """The whole report as Markdown (CTR comparison first: it is the result people look for)."""
    parts = ["# LARR run report", ""]
    rows = ordered_rows(report)
    if rows:
        parts += [f"## Stage 3: CTR comparison (test and valid splits; {SLICE_NOTE})", "", ctr_table(rows), ""]
        if report.get("stage3"):
            parts += _stage3_notes(report["stage3"]) + [""]
    if report.get("paired"):
        parts += ["## Stage 3, paired by seed (mean Δ AUC [95 % t-interval]; bold: the interval excludes 0)", ""]
        parts += paired_tables(report["paired"], list(rows))
    if report.get("probe"):
        parts += ["## Stage 3: does the model use its scene input? (test Δ AUC with the input destroyed; "
                  "≈ 0: unused)", ""] + probe_tables(report["probe"], list(rows))
    if report.get("per_value"):
        parts += ["## Stage 3 per value (test split)", ""] + per_value_tables(report["per_value"], list(rows))
    if report.get("stage1"):
        parts += ["## Stage 1: continual pretraining", "", values_table(report["stage1"]), ""]
    if report.get("stage2"):
        parts += ["## Stage 2: contrastive fine-tuning", ""] + stage2_tables(report["stage2"])
    if report.get("embed"):
        e = report["embed"]
        parts += ["## Embed: frozen encoder calls", "",
                  f"{fmt(e.get('scene_texts'))} per-feature scene texts vs {fmt(e.get('whole_scene_texts'))} "
                  "distinct whole-scene texts (one LLM call each).", "", embed_table(e), ""]
    if report.get("sweep"):
        parts += ["## Hyper-parameter sweep (test split; the paper's Figure 4)", ""] + sweep_tables(report)
    known = ("ctr", "stage3", "paired", "probe", "per_value", "stage1", "stage2", "embed", "sweep", "sweep_setup")
    for name, section in report.items():
        if name in known:
            continue
        parts += [f"## {name}", "", values_table(section) if isinstance(section, dict) else fmt(section), ""]
    return "\n".join(parts)
