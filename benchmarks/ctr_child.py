"""One CTR training run of benchmarks/compare_ctr.py, in its own process (one library, model, recipe, seed).

Run by compare_ctr.py, never by hand: larr's runs with larr's Python, FuxiCTR's and DeepCTR-Torch's
with the bench venv's (``make bench-env``), so nothing here imports larr unless ``--lib larr``.

Inputs: ``--npz DIR`` with ``{train,valid,test}.npz`` (``x`` (N, F) int64 field indices as larr's
features encode them, ``label``, ``request``) and ``meta.json`` (field names, vocabulary sizes).
Output ``--out FILE.json``: timings, epochs, peak RSS, and the test predictions in ``FILE.npy``
(the parent scores every library with larr.metrics, so metric code never differs).

Recipes:

- ``same``: larr's recipe exactly — AdamW (weight decay 0) at ``lr``, linear warm-up over 10 % of the
  steps then linear decay to 0, batches of 1024 rows that keep a request's rows together, in the same
  seeded request order as larr (``RequestBatches``, re-implemented below, identical permutations),
  BCE on logits, no regulariser, early stopping on valid AUC (patience 2, best epoch restored).
  The model is built from the library's own layers and initialisers.
- ``default``: the library's own flow and defaults — FuxiCTR: its ``BaseModel.fit`` (Adam 1e-3, batch
  10,000 from its ``NpzDataLoader``, gradient clipping at 10, lr ÷10 on plateau, early stopping on
  valid AUC); DeepCTR-Torch: its ``DCN`` model (with its linear part and l2 1e-5 on embeddings,
  linear and cross weights) and ``fit`` (Adam 1e-3, batch 256, shuffled rows, EarlyStopping on
  val_auc with the best weights restored). Same epoch limit as ``same``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HIDDEN, CROSS, DIM, DROPOUT, BATCH, WARMUP, PATIENCE = [128, 64], 2, 8, 0.1, 1024, 0.1, 2


def load(npz: Path) -> tuple[dict, dict]:
    meta = json.loads((npz / "meta.json").read_text())
    splits = {s: dict(np.load(npz / f"{s}.npz")) for s in ("train", "valid", "test")}
    return meta, splits


def auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries that across
    fork + exec, so every child would report at least its parent's peak (the features the parent loaded)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- larr's recipe, re-implemented


def request_batch_rows(request: torch.Tensor, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """larr.rec.train.RequestBatches: requests permuted (seed + epoch), rows laid end to end, cut."""
    order = torch.argsort(request, stable=True)
    _, counts = torch.unique_consecutive(request[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    n = len(order)
    perm = torch.randperm(len(counts), generator=torch.Generator().manual_seed(seed + epoch))
    c, s = counts[perm], starts[perm]
    offset = torch.arange(n) - torch.repeat_interleave(torch.cumsum(c, 0) - c, c)
    rows = order[torch.repeat_interleave(s, c) + offset]
    return [rows[i * batch_size:(i + 1) * batch_size] for i in range(n // batch_size)]


def lr_at(lr: float, step: int, total: int) -> float:
    warm = max(1, int(WARMUP * total))
    return lr * ((step + 1) / warm if step < warm else max(0.0, 1.0 - (step - warm) / max(1, total - warm)))


def fit_same(logit_fn, model: nn.Module, splits: dict, seed: int, lr: float, epochs: int) -> dict:
    """The ``same`` recipe around any ``logit_fn(x int64 (B, F)) -> (B,)``."""
    x = torch.from_numpy(splits["train"]["x"])
    y = torch.from_numpy(splits["train"]["label"]).float()
    req = torch.from_numpy(splits["train"]["request"])
    xv, yv = torch.from_numpy(splits["valid"]["x"]), splits["valid"]["label"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    n_batches = len(x) // BATCH
    total, step, best, best_state, bad, train_s, done = epochs * n_batches, 0, -1.0, None, 0, 0.0, 0
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()  # batching is timed too, as in larr's loop
        batches = request_batch_rows(req, BATCH, seed, epoch)
        xe, ye = x[torch.cat(batches)], y[torch.cat(batches)]
        for i in range(len(batches)):
            sl = slice(i * BATCH, (i + 1) * BATCH)
            for g in opt.param_groups:
                g["lr"] = lr_at(lr, step, total)
            loss = nn.functional.binary_cross_entropy_with_logits(logit_fn(xe[sl]), ye[sl])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        train_s += time.perf_counter() - t0
        done += 1
        model.eval()
        with torch.no_grad():
            pv = torch.cat([logit_fn(xv[i:i + 8192]) for i in range(0, len(xv), 8192)]).numpy()
        score = auc(yv, pv)
        if score > best:
            best, best_state, bad = score, {k: v.clone() for k, v in model.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= PATIENCE:
                break
    model.load_state_dict(best_state)
    model.eval()
    return {"train_seconds": train_s, "epochs": done, "train_rows": done * n_batches * BATCH, "valid_auc": best}


# ---------------------------------------------------------------------------- larr


def run_larr(args, meta, splits) -> tuple[dict, np.ndarray, float]:
    from larr.config import load_config
    from larr.rec import train as T
    from larr.rec.models import CTRModel, ModelDims, predict

    cfg = load_config(None, [f"rec.backbone={args.model}", f"rec.threads={args.threads}", f"rec.epochs={args.epochs}",
                             f"rec.lr={args.lr}", "device=cpu"])
    rec, _ = T.model_setup(cfg, "base_scene_ids")
    T.set_threads(rec)
    spec, tsplits, _ = T.load_features(Path(args.run_dir))
    assert list(spec.field_names) == meta["fields"], "features changed since the npz export"
    torch.manual_seed(args.seed)
    model = CTRModel(rec, ModelDims.from_spec(spec, 0), None)
    loop_s = [0.0]

    class TimedBatches(T.RequestBatches):
        """Times each epoch's pass over the batches: the training loop (forward, backward, step, batching),
        as the peers' loops are timed; not fit's one-off set-up (the first optimiser imports torch._dynamo,
        seconds under load) nor its per-epoch validation."""

        def __iter__(self):
            t0 = time.perf_counter()
            yield from super().__iter__()
            loop_s[0] += time.perf_counter() - t0

    T.RequestBatches = TimedBatches
    r = T.fit(model, rec, tsplits, seed=args.seed)
    n_batches = len(tsplits["train"]["label"]) // rec.batch_size
    info = {"train_seconds": loop_s[0], "fit_seconds": r.seconds, "epochs": r.state.epoch,
            "train_rows": r.state.epoch * n_batches * rec.batch_size, "valid_auc": r.state.best_score}
    t0 = time.perf_counter()
    p = predict(model, tsplits["test"], 8192)
    return info, p, time.perf_counter() - t0


# ---------------------------------------------------------------------------- FuxiCTR


def fuxi_model(meta, seed: int, model_name: str, tmp: Path, **base_kwargs):
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.layers import CrossNetV2, FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel
    from fuxictr.pytorch.torch_utils import seed_everything

    seed_everything(seed)
    fmap = {"dataset_id": "bench", "num_fields": len(meta["fields"]), "total_features": sum(meta["vocab"]),
            "input_length": len(meta["fields"]), "labels": ["label"],
            "features": [{f"f{i}": {"source": "", "type": "categorical", "vocab_size": v}}
                         for i, v in enumerate(meta["vocab"])]}
    (tmp / "feature_map.json").write_text(json.dumps(fmap))
    fm = FeatureMap("bench", str(tmp))
    fm.load(str(tmp / "feature_map.json"), {"embedding_dim": DIM})

    class Net(BaseModel):
        """FuxiCTR's zoo DCNv2 (parallel) / DNN, from the layers its wheel ships."""

        def __init__(self):
            super().__init__(fm, model_id=model_name, gpu=-1, verbose=0, model_root=str(tmp), metrics=["AUC"],
                             **base_kwargs)
            self.embedding_layer = FeatureEmbedding(fm, DIM)
            d = fm.sum_emb_out_dim()
            self.mlp = MLP_Block(d, HIDDEN, "ReLU", dropout_rates=DROPOUT)
            self.cross = CrossNetV2(d, CROSS) if model_name == "dcnv2" else None
            self.fc = nn.Linear(d + HIDDEN[-1] if self.cross is not None else HIDDEN[-1], 1)
            self.reset_parameters()
            self.model_to_device()

        def logit(self, X):
            e = self.embedding_layer(X, flatten_emb=True)
            h = self.mlp(e)
            if self.cross is not None:
                h = torch.cat([self.cross(e), h], dim=-1)
            return self.fc(h)

        def forward(self, inputs):
            return {"y_pred": self.output_activation(self.logit(self.get_inputs(inputs)))}

    return Net(), fm


def time_evaluate(model) -> list[float]:
    """Wrap a library model's ``evaluate`` so its seconds can be taken out of the training time; returns the
    one-element accumulator."""
    eval_s = [0.0]
    inner = model.evaluate

    def timed(*a, **k):
        t0 = time.perf_counter()
        out = inner(*a, **k)
        eval_s[0] += time.perf_counter() - t0
        return out

    model.evaluate = timed
    return eval_s


def run_fuxictr(args, meta, splits) -> tuple[dict, np.ndarray, float]:
    from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader

    tmp = Path(tempfile.mkdtemp(prefix="fuxi."))
    if args.recipe == "same":
        model, _ = fuxi_model(meta, args.seed, args.model, tmp)
        names = [f"f{i}" for i in range(len(meta["fields"]))]
        logit = lambda x: model.logit({n: x[:, i] for i, n in enumerate(names)}).squeeze(-1)
        info = fit_same(logit, model, splits, args.seed, args.lr, args.epochs)
        xt = torch.from_numpy(splits["test"]["x"])
        t0 = time.perf_counter()
        with torch.no_grad():
            p = torch.cat([torch.sigmoid(logit(xt[i:i + 8192])) for i in range(0, len(xt), 8192)]).numpy()
        return info, p, time.perf_counter() - t0
    # default: FuxiCTR's own loader and fit
    model, fm = fuxi_model(meta, args.seed, args.model, tmp)  # BaseModel defaults: patience 2, lr ÷10 on plateau
    os.makedirs(model.model_dir, exist_ok=True)  # its checkpoint folder (FuxiCTR's run script makes it)
    model.compile("adam", "binary_crossentropy", lr=1e-3)
    for s in ("train", "valid", "test"):
        cols = {f"f{i}": splits[s]["x"][:, i] for i in range(len(meta["fields"]))}
        np.savez(tmp / f"{s}.npz", label=splits[s]["label"].astype(np.float32), **cols)
    train = NpzDataLoader(fm, str(tmp / "train.npz"), batch_size=10000, shuffle=True, num_workers=0)
    valid = NpzDataLoader(fm, str(tmp / "valid.npz"), batch_size=10000, shuffle=False, num_workers=0)
    eval_s = time_evaluate(model)
    t0 = time.perf_counter()
    model.fit(train, epochs=args.epochs, validation_data=valid, max_gradient_norm=10.0)
    train_s = time.perf_counter() - t0 - eval_s[0]
    epochs = model._epoch_index + 1
    info = {"train_seconds": train_s, "epochs": epochs, "train_rows": epochs * len(splits["train"]["label"]),
            "valid_auc": float(model._best_metric)}
    test = NpzDataLoader(fm, str(tmp / "test.npz"), batch_size=8192, shuffle=False, num_workers=0)
    t0 = time.perf_counter()
    p = model.predict(test)
    return info, p, time.perf_counter() - t0


# ---------------------------------------------------------------------------- DeepCTR-Torch


def run_deepctr(args, meta, splits) -> tuple[dict, np.ndarray, float]:
    from deepctr_torch.callbacks import EarlyStopping
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DCN

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    names = [f"f{i}" for i in range(len(meta["fields"]))]
    cols = [SparseFeat(n, v, embedding_dim=DIM) for n, v in zip(names, meta["vocab"])]
    cross = CROSS if args.model == "dcnv2" else 0
    if args.recipe == "same":  # no linear part, no regularisers: the architecture of larr's row
        model = DCN([], cols, cross_num=cross, cross_parameterization="matrix", dnn_hidden_units=tuple(HIDDEN),
                    dnn_dropout=DROPOUT, l2_reg_linear=0, l2_reg_embedding=0, l2_reg_cross=0, seed=args.seed)
        logit = lambda x: torch.logit(model(x.float()).squeeze(-1).clamp(1e-7, 1 - 1e-7))
        info = fit_same(logit, model, splits, args.seed, args.lr, args.epochs)
        xt = torch.from_numpy(splits["test"]["x"]).float()
        t0 = time.perf_counter()
        with torch.no_grad():
            p = torch.cat([model(xt[i:i + 8192]).squeeze(-1) for i in range(0, len(xt), 8192)]).numpy()
        return info, p, time.perf_counter() - t0
    model = DCN(cols, cols, cross_num=cross, cross_parameterization="matrix", dnn_hidden_units=tuple(HIDDEN),
                dnn_dropout=DROPOUT, seed=args.seed)
    model.compile("adam", "binary_crossentropy", metrics=["auc"])
    xd = {s: {n: splits[s]["x"][:, i] for i, n in enumerate(names)} for s in ("train", "valid", "test")}
    eval_s = time_evaluate(model)
    stop = EarlyStopping(monitor="val_auc", patience=PATIENCE, mode="max", restore_best_weights=True)
    t0 = time.perf_counter()
    hist = model.fit(xd["train"], splits["train"]["label"], batch_size=256, epochs=args.epochs, verbose=0,
                     validation_data=(xd["valid"], splits["valid"]["label"]), callbacks=[stop])
    train_s = time.perf_counter() - t0 - eval_s[0]
    epochs = len(hist.history["val_auc"])
    info = {"train_seconds": train_s, "epochs": epochs, "train_rows": epochs * len(splits["train"]["label"]),
            "valid_auc": float(max(hist.history["val_auc"]))}
    t0 = time.perf_counter()
    p = model.predict(xd["test"], batch_size=8192).reshape(-1)
    return info, p, time.perf_counter() - t0


RUNNERS = {"larr": run_larr, "fuxictr": run_fuxictr, "deepctr": run_deepctr}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=list(RUNNERS), required=True)
    ap.add_argument("--model", choices=["dnn", "dcnv2"], required=True)
    ap.add_argument("--recipe", choices=["same", "default"], required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--npz", type=Path, required=True)
    ap.add_argument("--run-dir", type=Path, help="larr only: the run directory whose features were exported")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta, splits = load(args.npz)
    t0 = time.perf_counter()
    info, p, infer_s = RUNNERS[args.lib](args, meta, splits)
    n_test = len(splits["test"]["label"])
    info.update(lib=args.lib, model=args.model, recipe=args.recipe, seed=args.seed, threads=torch.get_num_threads(),
                wall_seconds=time.perf_counter() - t0, infer_seconds=infer_s,
                train_samples_per_s=info["train_rows"] / info["train_seconds"],
                infer_samples_per_s=n_test / infer_s, peak_rss_mb=peak_rss_mb(), torch=torch.__version__)
    np.save(args.out.with_suffix(".npy"), np.asarray(p, dtype=np.float64).reshape(-1))
    args.out.write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
