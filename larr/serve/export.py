"""``larr export``: a trained row's scoring graph as ONNX, for serving with onnxruntime.

The graph is :class:`~larr.serve.graph.ScoringGraph` — field embeddings, the scene module run
once per request, the backbone and the click head — with inputs ``x`` (N, n_fields) int64
(N dynamic) and, for models with LLM input, ``scene`` (the standardised per-feature vectors of
the request's scene, (1, F, D); (1, D) for ``whole_text``); output ``score`` (N,) click
probabilities. Everything before the graph (vocabulary look-ups, the scene-vector caches) is
plain Python in the server either way, so the two backends differ only in who runs the graph.

Written with the ``torch.export``-based exporter (PyTorch's default since 2.9), weights inside
the one file, into ``RUN_DIR/export/<row>/`` by one atomic folder swap, with ``export.json``
recording the weights it was made from (a re-trained row makes the export stale, and the
server refuses a stale one).
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from larr.io import atomic_dir
from larr.rec.models import load_model
from larr.layout import export_dir
from larr.serve.artifacts import (DEFAULT_MODEL, EXPORT_FORMAT, EXPORT_META, ONNX_FILE, model_dir, model_version,
                                  weights_digest)
from larr.serve.graph import ScoringGraph

OPSET = 18
MAX_ROWS = 1 << 20  # upper bound of the dynamic candidate axis (the exporter wants one)


def example_inputs(graph: ScoringGraph, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Valid inputs for ``graph``: random in-vocabulary indices and scene vectors."""
    g = torch.Generator().manual_seed(seed)
    sizes = graph.model.dims.vocab_sizes
    x = torch.stack([torch.randint(0, v, (n,), generator=g) for v in sizes], dim=1)
    if not graph.has_scene:
        return (x,)
    return x, torch.randn(graph.scene_shape(), generator=g)


def export_onnx(run_dir: Path, name: str = DEFAULT_MODEL, check: bool = True) -> Path:
    """Write ``RUN_DIR/export/<name>/model.onnx`` (+ ``export.json``); return the folder.

    ``check`` compares onnxruntime's scores with PyTorch's on random inputs (|Δ| ≤ 1e-5) before
    the export is swapped in, so a graph the runtime computes differently is never published.
    """
    run_dir = Path(run_dir)
    graph = ScoringGraph(load_model(model_dir(run_dir, name))).eval()
    args = example_inputs(graph)
    names = ["x", "scene"][: len(args)]
    dynamic = {"x": {0: torch.export.Dim("n", min=1, max=MAX_ROWS)}}
    if graph.has_scene:
        dynamic["scene"] = None
    out = export_dir(run_dir, name)
    with atomic_dir(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's business
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # nor "torchvision is not installed"
        torch.onnx.export(graph, args, str(tmp / ONNX_FILE), input_names=names, output_names=["score"],
                          dynamic_shapes=dynamic, dynamo=True, opset_version=OPSET, external_data=False,
                          verbose=False)
        if check:
            max_diff = check_parity(graph, tmp / ONNX_FILE)
            if max_diff > 1e-5:
                raise RuntimeError(f"ONNX scores differ from PyTorch's by {max_diff:.2e}")
        meta = {"format": EXPORT_FORMAT, "model": name, "weights": weights_digest(run_dir, name),
                "version": model_version(run_dir, name), "opset": OPSET, "torch": torch.__version__,
                "inputs": {n: ["n", *a.shape[1:]] if n == "x" else list(a.shape) for n, a in zip(names, args)}}
        (tmp / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def check_parity(graph: ScoringGraph, onnx_file: Path, sizes: tuple[int, ...] = (1, 7, 200)) -> float:
    """Largest |onnxruntime − PyTorch| score over random inputs of a few batch sizes."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, n in enumerate(sizes):
        args = example_inputs(graph, n, seed=1 + i)
        with torch.inference_mode():
            want = graph(*args).numpy()
        feed = dict(zip(["x", "scene"], (a.numpy() for a in args)))
        got = session.run(["score"], feed)[0]
        worst = max(worst, float(np.abs(got - want).max()))
    return worst
