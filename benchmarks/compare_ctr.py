"""larr's stage-3 DNN and DCNv2 side by side with FuxiCTR 2.3.10 and DeepCTR-Torch 0.3.0.

    make bench-env                                    # .bench-venv: CPU torch, fuxictr, deepctr-torch
    python benchmarks/compare_ctr.py                  # demo world + MovieLens-100K, 3 seeds
    python benchmarks/compare_ctr.py --data DIR ...   # any folder that passes `larr data validate`

Every library gets the same inputs: the 18 ID fields of larr's ``base_scene_ids`` row (8 user/item/
context fields + one per scene feature of the demo world; MovieLens has 6 scene features), encoded
once by larr (train-split vocabularies, index 0 = unseen) and exported as int64 arrays. Same
architecture: embedding size 8 per field, MLP [128, 64] (ReLU, dropout 0.1), 2 full-rank cross
layers (DCN-V2, parallel), a linear head. Each (library, model, recipe, seed) trains in its own
process with one torch thread (larr's with this Python, the peers with the bench venv's) — see
benchmarks/ctr_child.py for the two recipes (``same``: larr's optimiser, schedule, epochs and
batch composition; ``default``: each library's own flow). Test AUC and logloss are computed here
from the saved predictions with larr.metrics, so the metric code is the same for everyone.

Also measured, once per data set: the model's FLOPs per sample, this machine's single-thread
fp32 GEMM peak and the share of it larr's DCNv2 training reaches, larr's DCNv2 at 2 threads, and
(``--profile``) a py-spy profile of one larr training run: where the time goes.
Writes ``OUT.json`` and ``OUT.md`` (default ``runs/bench_ctr/compare_ctr``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHILD = ROOT / "benchmarks" / "ctr_child.py"
LIBS = ("larr", "fuxictr", "deepctr")
MODELS = ("dnn", "dcnv2")
LIB_NAMES = {"larr": "larr", "fuxictr": "FuxiCTR 2.3.10", "deepctr": "DeepCTR-Torch 0.3.0"}


# ---------------------------------------------------------------------------- data


def prepare(name: str, data: Path | None, work: Path) -> tuple[Path, Path]:
    """RUN_DIR with the data (generated when ``data`` is None) and its larr features exported as npz."""
    from larr.data.local import copy_dir
    from larr.rec.train import load_features

    run = work / name
    data_dir = run / "data"
    if not (data_dir / "dataset.json").is_file():
        if data is not None:
            copy_dir(data, data_dir)
        elif name == "demo":
            from larr.data.synth import generate

            generate(data_dir, preset="demo", seed=0, progress=False)
        elif name == "movielens":
            from larr.data.movielens import convert

            convert(data_dir)
    spec, splits, _ = load_features(run)
    npz = run / "npz"
    if not (npz / "meta.json").is_file():
        npz.mkdir(parents=True, exist_ok=True)
        for s, t in splits.items():
            np.savez(npz / f"{s}.npz", x=t["x"].numpy(), label=t["label"].numpy().astype(np.float32),
                     request=t["request"].numpy(), user=t["user"].numpy())
        (npz / "meta.json").write_text(json.dumps({"fields": spec.field_names, "vocab": spec.vocab_sizes,
                                                   "rows": {s: len(t["label"]) for s, t in splits.items()}}))
    return run, npz


# ---------------------------------------------------------------------------- one run


def child(lib: str, model: str, recipe: str, seed: int, run: Path, npz: Path, out: Path, args,
          threads: int = 1, prefix: list[str] | None = None) -> dict:
    py = sys.executable if lib == "larr" else str(args.bench_python)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RAY_DISABLE_USAGE_STATS": "1"}
    cmd = [*(prefix or []), py, str(CHILD), "--lib", lib, "--model", model, "--recipe", recipe, "--seed", str(seed),
           "--epochs", str(args.epochs), "--lr", str(args.lr), "--threads", str(threads), "--npz", str(npz),
           "--run-dir", str(run), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{lib} {model} {recipe} seed {seed} failed:\n{proc.stderr[-3000:]}")
    info = json.loads(out.read_text())
    p = np.load(out.with_suffix(".npy"))
    from larr.metrics import auc, logloss

    y = np.load(npz / "test.npz")["label"]
    info.update(test_auc=auc(y, p), test_logloss=logloss(y, p))
    return info


# ---------------------------------------------------------------------------- FLOPs, GEMM peak


def flops_per_sample(n_fields: int, model: str) -> int:
    """Forward multiply-adds × 2 of the dense part (embedding look-ups are memory, not FLOPs)."""
    d = n_fields * 8
    f, width = 0, d
    for h in (128, 64):
        f += 2 * width * h
        width = h
    if model == "dcnv2":
        f += 2 * (2 * d * d + 2 * d)  # 2 cross layers: W x (+ b), x0 ⊙ (.) + x
        width += d
    return f + 2 * width  # head


def gemm_peak_gflops(threads: int = 1) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * 1024 ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def profile_larr(run: Path, npz: Path, work: Path, args) -> dict:
    """py-spy (from the bench venv) over one larr DCNv2 training run: share of samples per leaf frame."""
    spy = Path(args.bench_python).parent / "py-spy"
    raw = work / "pyspy_larr_dcnv2.txt"
    child("larr", "dcnv2", "same", 0, run, npz, work / "profile_run.json", args,
          prefix=[str(spy), "record", "--format", "raw", "--rate", "200", "--native", "-o", str(raw), "--"])
    leaf, py_leaf, parts, total, in_loop = Counter(), Counter(), Counter(), 0, 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames, n = stack.split(";"), int(n)
        total += n
        if not any(f.startswith("fit (larr/rec/train.py") for f in frames):
            continue  # imports, data loading, test prediction: not training
        in_loop += n
        if any("importlib._bootstrap" in f for f in frames):
            parts["one-off imports inside fit (torch._dynamo on the first optimiser)"] += n
            continue
        leaf[frames[-1].split(" (")[0]] += n
        py_frames = [f for f in frames if ".py:" in f]
        if py_frames:
            py_leaf[py_frames[-1].split(" (")[0]] += n
        for part, keys in PROFILE_PARTS.items():
            if any(k in f for f in frames for k in keys):
                parts[part] += n
    share = lambda c: [(k, round(v / max(1, in_loop), 3)) for k, v in c.most_common(12)]
    return {"samples": total, "fit_samples": in_loop, "fit_share_of_process": round(in_loop / max(1, total), 3),
            "parts": {k: round(v / max(1, in_loop), 3) for k, v in parts.items()}, "top_native_leaf": share(leaf),
            "top_python_frame": share(py_leaf), "raw": str(raw)}


PROFILE_PARTS = {  # inclusive shares of fit's samples (a sample may count in more than one)
    "forward": ("forward (larr/rec/models.py",),
    "backward": ("_engine_run_backward",),
    "optimizer step": ("adamw.py", "adam.py"),
    "zero_grad": ("zero_grad",),
    "batching (gather, slicing)": ("__iter__ (larr/rec/train.py", "rows (larr/rec/train.py"),
    "loss": ("ctr_loss", "request_loss"),
    "lr schedule": ("set_lr",),
    "validation": ("evaluate_split",),
    "embedding forward (18 tables + stack)": ("FieldEmbedding.forward",),
}


# ---------------------------------------------------------------------------- table


def mean_std(xs: list[float]) -> tuple[float, float]:
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def aggregate(runs: list[dict]) -> list[dict]:
    rows = {}
    for r in runs:
        rows.setdefault((r["dataset"], r["model"], r["lib"], r["recipe"]), []).append(r)
    out = []
    for (ds, model, lib, recipe), rs in rows.items():
        row = {"dataset": ds, "model": model, "lib": lib, "recipe": recipe, "seeds": len(rs)}
        for k in ("test_auc", "test_logloss", "train_samples_per_s", "infer_samples_per_s", "peak_rss_mb", "epochs"):
            row[k], row[k + "_std"] = mean_std([r[k] for r in rs])
        out.append(row)
    for row in out:  # ratios larr / library, same data set and model (larr's only recipe is 'same')
        ref = next((r for r in out if r["dataset"] == row["dataset"] and r["model"] == row["model"]
                    and r["lib"] == "larr"), None)
        if ref is not None and row["lib"] != "larr":
            row["auc_delta_larr_minus_lib"] = ref["test_auc"] - row["test_auc"]
            for k in ("train_samples_per_s", "infer_samples_per_s", "peak_rss_mb"):
                row[f"ratio_{k}"] = ref[k] / row[k]
    return out


def markdown(rows: list[dict], extra: dict, cmd: str) -> str:
    lines = [f"Command: `{cmd}`", "",
             "| data | model | library | recipe | test AUC | logloss | train samples/s | inference samples/s | "
             "peak RSS MB | epochs | ΔAUC larr − lib | train ×larr/lib | infer ×larr/lib | RSS ×larr/lib |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def pm(k, d=4):
            return f"{r[k]:.{d}f} ± {r[k + '_std']:.{d}f}"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {LIB_NAMES[r['lib']]} | {r['recipe']} | {pm('test_auc')} | "
            f"{pm('test_logloss')} | {r['train_samples_per_s']:,.0f} ± {r['train_samples_per_s_std']:,.0f} | "
            f"{r['infer_samples_per_s']:,.0f} | {r['peak_rss_mb']:.0f} | {r['epochs']:.1f} | "
            + (f"{r['auc_delta_larr_minus_lib']:+.4f} | {r['ratio_train_samples_per_s']:.2f} | "
               f"{r['ratio_infer_samples_per_s']:.2f} | {r['ratio_peak_rss_mb']:.2f} |" if r["lib"] != "larr"
               else "– | – | – | – |"))
    lines += ["", "Speed (larr, 1 thread):", ""]
    for ds, e in extra.items():
        lines.append(f"- {ds}: FLOPs/sample forward DNN {e['flops']['dnn']:,}, DCNv2 {e['flops']['dcnv2']:,}; "
                     f"single-thread GEMM peak {e['gemm_gflops']:.1f} GFLOP/s; larr DCNv2 training "
                     f"{e['larr_dcnv2_train_gflops']:.2f} GFLOP/s (3× forward) = {100 * e['peak_share']:.1f} % of it; "
                     f"2 threads: {e.get('two_threads_samples_per_s', float('nan')):,.0f} vs 1 thread "
                     f"{e['larr_dcnv2_samples_per_s']:,.0f} samples/s")
        if "profile" in e:
            pr = e["profile"]
            lines.append(f"  - py-spy, larr DCNv2 `fit` ({100 * pr['fit_share_of_process']:.0f} % of the process): "
                         + ", ".join(f"{k} {100 * v:.0f} %" for k, v in pr["parts"].items())
                         + "; top native frames: " + ", ".join(f"`{k}` {100 * v:.0f} %" for k, v in pr["top_native_leaf"][:5]))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, action="append", help="data folder(s); default: demo world + MovieLens")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_ctr")
    ap.add_argument("--out", type=Path, default=None, help="OUT.json / OUT.md (default WORK/compare_ctr)")
    ap.add_argument("--bench-python", type=Path, default=ROOT / ".bench-venv" / "bin" / "python")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3, help="most epochs (early stopping on valid AUC, patience 2)")
    ap.add_argument("--lr", type=float, default=1e-2, help="lr of the 'same' recipe (larr's default)")
    ap.add_argument("--libs", nargs="+", default=list(LIBS), choices=LIBS)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--recipes", nargs="+", default=["same", "default"], choices=["same", "default"])
    ap.add_argument("--default-seeds", type=int, default=None,
                    help="run the 'default' recipes on the first N seeds only (they are the slow ones)")
    ap.add_argument("--profile", action="store_true", help="py-spy profile of one larr DCNv2 run per data set")
    args = ap.parse_args()
    if any(lib != "larr" for lib in args.libs) and not Path(args.bench_python).exists():
        sys.exit(f"{args.bench_python} not found: run `make bench-env` first")
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out or args.work / "compare_ctr"
    sets = [(p.name, p) for p in args.data] if args.data else [("demo", None), ("movielens", None)]
    runs, extra = [], {}
    t_all = time.perf_counter()
    peaks = [gemm_peak_gflops(1)]  # measured again after each data set; the max is the least disturbed
    for name, data in sets:
        run, npz = prepare(name, data, args.work)
        meta = json.loads((npz / "meta.json").read_text())
        print(f"== {name}: {len(meta['fields'])} fields, rows {meta['rows']}", flush=True)
        for seed in args.seeds:
            for model in args.models:
                for lib in args.libs:
                    for recipe in args.recipes:
                        if lib == "larr" and recipe == "default":
                            continue  # larr's default recipe is the 'same' one
                        if recipe == "default" and args.default_seeds is not None \
                                and seed not in args.seeds[:args.default_seeds]:
                            continue
                        r = child(lib, model, recipe, seed, run, npz, args.work / f"{name}_{lib}_{model}_{recipe}_{seed}.json",
                                  args)
                        r["dataset"] = name
                        runs.append(r)
                        print(f"{name} {model:5s} {lib:8s} {recipe:7s} seed {seed}: AUC {r['test_auc']:.4f} "
                              f"logloss {r['test_logloss']:.4f} train {r['train_samples_per_s']:,.0f}/s "
                              f"infer {r['infer_samples_per_s']:,.0f}/s RSS {r['peak_rss_mb']:.0f} MB "
                              f"epochs {r['epochs']}", flush=True)
        peaks.append(gemm_peak_gflops(1))
        peak = max(peaks)
        fl = {m: flops_per_sample(len(meta["fields"]), m) for m in MODELS}
        larr_dcn = [r for r in runs if r["dataset"] == name and r["lib"] == "larr" and r["model"] == "dcnv2"]
        e = {"flops": fl, "gemm_gflops": peak, "gemm_gflops_measurements": list(peaks)}
        if larr_dcn:
            sps = float(np.mean([r["train_samples_per_s"] for r in larr_dcn]))
            e.update(larr_dcnv2_samples_per_s=sps, larr_dcnv2_train_gflops=3 * fl["dcnv2"] * sps / 1e9,
                     peak_share=3 * fl["dcnv2"] * sps / 1e9 / peak)
            two = child("larr", "dcnv2", "same", args.seeds[0], run, npz, args.work / f"{name}_larr_2threads.json",
                        args, threads=2)
            e["two_threads_samples_per_s"] = two["train_samples_per_s"]
            if args.profile:
                e["profile"] = profile_larr(run, npz, args.work, args)
        extra[name] = e
    rows = aggregate(runs)
    cmd = "python benchmarks/compare_ctr.py " + " ".join(sys.argv[1:])
    result = {"command": cmd, "seconds": round(time.perf_counter() - t_all), "rows": rows, "runs": runs,
              "speed": extra, "cpu_count": os.cpu_count(), "loadavg_end": os.getloadavg()}
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(rows, extra, cmd)
    out.with_suffix(".md").write_text(md)
    print(md)
    for name, e in extra.items():
        if "profile" in e:
            print(f"profile {name}: {json.dumps({k: v for k, v in e['profile'].items() if k != 'raw'})}")
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')} in {result['seconds']} s")


if __name__ == "__main__":
    main()
