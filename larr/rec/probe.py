"""Does a trained CTR model use its scene input? Metrics with that input destroyed, per slice.

A model can carry a scene module and ignore it: when ID embeddings explain the clicks, the backbone
learns to read nothing from the scene vector. Three probes tell, each compared with the intact model
on the same rows (``Δ AUC = probe − intact``; ≈ 0 means the model does not use what the probe took):

- ``vector_mean``: the scene vector (the aggregation encoder's ``<agg>`` output) replaced by its mean
  over an evaluation batch — what the model knows from the scene vector beyond a constant;
- ``vector_shuffle``: the scene vectors permuted across the rows of a batch (another request's scene);
- ``llm_shuffle``: every LLM input — scene vector, the frequency mix's text tokens, the imputation of
  never-seen IDs — taken from another row's scene, while the ID fields keep their own.

Probes change inputs, never weights, and are seeded, so they reproduce.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from larr.metrics import auc
from larr.rec.models import CTRModel, predict

PROBES = ("vector_mean", "vector_shuffle", "llm_shuffle")


@contextmanager
def probing(model: CTRModel, probe: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[CTRModel]:
    """``model`` with ``probe`` applied to its scene vector, for the duration of the block."""
    model.scene_probe = probe
    try:
        yield model
    finally:
        model.scene_probe = None


def _batch_mean(scene: torch.Tensor) -> torch.Tensor:
    return scene.mean(0, keepdim=True).expand_as(scene)


def _shuffler(seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return lambda scene: scene[torch.randperm(len(scene), generator=g).to(scene.device)]


def probe_predictions(model: CTRModel, tensors: dict[str, torch.Tensor], probe: str, batch_size: int = 8192,
                      seed: int = 0) -> np.ndarray:
    """Click probabilities of one split's rows under ``probe`` (one of :data:`PROBES`)."""
    if probe == "llm_shuffle":
        key = "whole" if model.cfg.scene_encoder == "whole_text" else "scene"
        perm = torch.randperm(len(tensors[key]), generator=torch.Generator().manual_seed(seed))
        return predict(model, {**tensors, key: tensors[key][perm]}, batch_size)
    if probe not in PROBES:
        raise ValueError(f"unknown probe '{probe}' (choose from {', '.join(PROBES)})")
    with probing(model, _batch_mean if probe == "vector_mean" else _shuffler(seed)):
        return predict(model, tensors, batch_size)


def probe_metrics(model: CTRModel, tensors: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                  intact: np.ndarray, batch_size: int = 8192, seed: int = 0) -> dict[str, dict[str, float | None]]:
    """``{probe: {slice: Δ AUC vs intact}}`` on one split; ``masks`` are its slices (:func:`slice_masks`)."""
    y = tensors["label"].numpy()
    out: dict[str, dict[str, float | None]] = {}
    for probe in PROBES:
        p = probe_predictions(model, tensors, probe, batch_size, seed)
        out[probe] = {}
        for name, mask in masks.items():
            m = mask.numpy()
            try:
                out[probe][name] = round(auc(y[m], p[m]) - auc(y[m], intact[m]), 5)
            except ValueError:  # empty slice or one class only
                out[probe][name] = None
    return out


def probe_saved_run(run_dir, run_id: str, splits: dict[str, dict[str, torch.Tensor]], masks: dict[str, torch.Tensor],
                    batch_size: int = 8192) -> dict[str, dict[str, float | None]]:
    """:func:`probe_metrics` on the test split for a saved run ``RUN_DIR/stage3/<run_id>`` (e.g. one trained
    before probes were recorded)."""
    from larr import layout
    from larr.rec.models import load_model

    model = load_model(layout.stage3_run(run_dir, run_id))
    return probe_metrics(model, splits["test"], masks, predict(model, splits["test"], batch_size), batch_size)


def probe_table(done: dict[tuple[str, int], dict], rows: list[str], seeds: list[int]) -> dict:
    """``{row: {probe: {slice: t_interval of the per-seed Δ AUC}}}`` for the rows whose runs carry probes."""
    from larr.rec.paired import t_interval

    out: dict = {}
    for row in rows:
        runs = [done[(row, s)].get("probe_test") for s in seeds]
        if not all(runs):
            continue
        out[row] = {p: {sl: t_interval([r[p][sl] for r in runs if r[p].get(sl) is not None]) for sl in runs[0][p]}
                    for p in PROBES}
    return out
