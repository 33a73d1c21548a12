"""Load a trained row of a run directory and rank candidates for one (user, scene) request.

    ranker = Ranker.load("runs/demo")                       # stage3/larr_seed0, PyTorch
    ranker.rank(user_id=7, scene={"weather": "typhoon", "hour": 12}, candidates=[3, 5, 8])

What it puts together, all read from the run directory:

- the CTR model + scene module (:func:`larr.rec.models.load_model`), wrapped in the
  :class:`~larr.serve.graph.ScoringGraph` (PyTorch) or its ONNX export (onnxruntime);
- field vocabularies and user/shop profiles (:class:`~larr.serve.inputs.FieldIndexer`);
- the LLM side (:class:`~larr.serve.scenes.SceneVectors`): the model's own table, the
  embedding store its vectors came from (``RUN_DIR/embeddings/<store>``, or ``--store``: a
  folder or a ``redis://`` URL), and the frozen encoder that made that store — the stage-2
  model for ``larr`` rows, whichever ``larr.encoders.load_encoder`` builds for the others. An
  encoder whose weights are not the ones the store records is refused: its vectors would not
  mean what the model learned.

All candidates are scored in one batched forward; the scene module runs once per request.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from larr import layout
from larr.data.scene import scene_key, whole_scene_key
from larr.encoders import EncoderUnavailable, TextEncoder, load_encoder
from larr.rec.features import WHOLE_SEP, FeatureSpec
from larr.rec.models import FEATURES_FILE, load_model
from larr.rec.scene_table import WHOLE_GROUP, TableStats
from larr.serve.artifacts import DEFAULT_MODEL, ServeError, model_dir, model_version, read_export
from larr.serve.graph import ScoringGraph
from larr.serve.inputs import FieldIndexer
from larr.serve.metrics import ServeMetrics
from larr.serve.scenes import SceneItem, SceneVectors
from larr.serve.settings import ServeSettings
from larr.store import open_store

log = logging.getLogger("larr.serve")
BACKENDS = ("torch", "onnx")


@dataclass
class Ranked:
    """One ranked response: candidates (as given) and scores, best first, plus what was unknown."""

    shop_ids: list[object]
    scores: list[float]
    version: str
    unknown_user: bool = False
    unknown_shops: int = 0
    scene_sources: dict[str, str] = field(default_factory=dict)  # feature → table|cache|store|encoded|fallback|missing


class TorchScorer:
    def __init__(self, graph: ScoringGraph) -> None:
        self.graph = graph.eval()

    def __call__(self, x: np.ndarray, scene: np.ndarray | None) -> np.ndarray:
        with torch.inference_mode():
            s = None if scene is None else torch.from_numpy(scene)
            return self.graph(torch.from_numpy(x), s).numpy()


class OnnxScorer:
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, x: np.ndarray, scene: np.ndarray | None) -> np.ndarray:
        feed = {"x": x} if scene is None or "scene" not in self.inputs else {"x": x, "scene": scene}
        return self.session.run(["score"], feed)[0]


class Ranker:
    """A loaded, ready-to-score model (see the module docstring)."""

    def __init__(self, run_dir: Path, model: str, graph: ScoringGraph, spec: FeatureSpec, indexer: FieldIndexer,
                 scenes: SceneVectors | None, scorer, version: str, backend: str, metrics: ServeMetrics,
                 settings: ServeSettings, cache: bool = True) -> None:
        self.run_dir, self.model, self.graph, self.spec = Path(run_dir), model, graph, spec
        self.indexer, self.scenes, self.scorer = indexer, scenes, scorer
        self.version, self.backend, self.metrics, self.cache = version, backend, metrics, cache
        self.settings = settings
        self.whole = graph.has_scene and graph.model.cfg.scene_encoder == "whole_text"
        metrics.model_info.labels(model, version, backend).set(1)

    @classmethod
    def load(cls, run_dir: Path, model: str = DEFAULT_MODEL, backend: str = "torch", store: str | Path | None = None,
             data_dir: Path | None = None, settings: ServeSettings | None = None,
             encoder: TextEncoder | None | str = "auto", metrics: ServeMetrics | None = None,
             cache: bool = True) -> "Ranker":
        """Load row ``model`` of ``run_dir``.

        ``encoder``: ``"auto"`` builds the encoder of the model's store; a ``TextEncoder`` is used as
        given (tests, notebooks); ``None`` serves without one (new scene values get the unknown row).
        ``cache=False`` (benchmarks of the ``whole_text`` design) calls the LLM on every request.
        """
        settings = settings or ServeSettings()
        metrics = metrics or ServeMetrics()
        if backend not in BACKENDS:
            raise ServeError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
        run_dir = Path(run_dir)
        folder = model_dir(run_dir, model)
        torch.set_num_threads(max(1, settings.threads))
        net = load_model(folder)
        spec = FeatureSpec.load(folder / FEATURES_FILE)
        graph = ScoringGraph(net)
        indexer = FieldIndexer(spec, layout.data_dir(run_dir, data_dir), settings.position)
        scenes = _scene_vectors(run_dir, folder, net, spec, store, encoder, settings, metrics) if graph.has_scene \
            else None
        scorer = TorchScorer(graph) if backend == "torch" else OnnxScorer(read_export(run_dir, model)[0],
                                                                          max(1, settings.threads))
        return cls(run_dir, model, graph, spec, indexer, scenes, scorer, model_version(run_dir, model), backend,
                   metrics, settings, cache)

    # ------------------------------------------------------------------ scoring

    def rank(self, user_id: object, scene: dict[str, object], candidates: list[object],
             top_k: int | None = None) -> Ranked:
        """Score every candidate for (user, scene); best first, ``top_k`` of them (all when None)."""
        try:
            req = self.indexer.encode(user_id, scene, candidates)
        except Exception:
            if any(n not in self.indexer.features for n in scene):
                self.metrics.unknown_features.inc()
            raise
        self.metrics.candidates.inc(len(candidates))
        self.metrics.unknown_users.inc(req.unknown_user)
        self.metrics.unknown_shops.inc(req.unknown_shops)
        for name in self.spec.scene_names:
            if name not in req.scene_values:
                self.metrics.missing_features.labels(name).inc()
        scene_in, sources = self.scene_input(req.scene_values)
        scores = self.scorer(req.x, scene_in)
        order = np.argsort(-scores, kind="stable")[: top_k or len(candidates)]
        return Ranked([candidates[i] for i in order], [float(scores[i]) for i in order], self.version,
                      req.unknown_user, req.unknown_shops, sources)

    def scene_input(self, values: dict[str, object]) -> tuple[np.ndarray | None, dict[str, str]]:
        """The graph's ``scene`` input for a request's typed scene values, and each feature's source."""
        if self.scenes is None:
            return None, {}
        feats = self.spec.scene
        if self.whole:  # the whole rendered scene is one text; a missing feature → the unknown row, as in training
            complete = all(f.name in values for f in feats)
            text = WHOLE_SEP.join(f.render(values[f.name]) for f in feats if f.name in values)
            item = SceneItem(whole_scene_key(text), text, WHOLE_GROUP) if complete else None
            if not self.cache and item is not None:
                return self.scenes.encode_now([item]), {f.name: "encoded" for f in feats}
            vecs, src = self.scenes.lookup([item])
            return vecs, {f.name: src[0] for f in feats}
        items = [SceneItem(scene_key(f.name, values[f.name]), f.render(values[f.name]), f.name)
                 if f.name in values else None for f in feats]
        vecs, src = self.scenes.lookup(items)
        return vecs[None], {f.name: s for f, s in zip(feats, src)}

    def close(self) -> None:
        if self.scenes is not None:
            self.scenes.close()
            close = getattr(self.scenes.store, "close", None)
            if close is not None:
                close()


def _scene_vectors(run_dir: Path, folder: Path, net, spec: FeatureSpec, store: str | Path | None,
                   encoder: TextEncoder | None | str, settings: ServeSettings, metrics: ServeMetrics) -> SceneVectors:
    """The model's table, the store its vectors came from, and that store's encoder."""
    meta = json.loads((folder / layout.METRICS_FILE).read_text()) if (folder / layout.METRICS_FILE).is_file() else {}
    store_name, ident = meta.get("store"), meta.get("encoder")
    location = store if store is not None else (layout.store_dir(run_dir, store_name) if store_name else None)
    st = open_store(location if isinstance(location, str) else Path(location), dim=net.dims.llm_dim,
                    encoder=ident, autoflush=False) if location is not None else None
    if encoder == "auto":
        encoder = _load_encoder(run_dir, store_name, ident)
    elif encoder is not None and ident is not None and encoder.name != ident:
        raise ServeError(f"encoder '{encoder.name}' is not the one the model's vectors came from ('{ident}')")
    table = spec.scene_table(whole=net.cfg.scene_encoder == "whole_text")
    return SceneVectors(net.scene_llm.detach().cpu().numpy(), table, TableStats.load(folder / layout.SCENE_STATS_FILE),
                        st, encoder, settings, metrics)


def _load_encoder(run_dir: Path, store_name: str | None, ident: str | None) -> TextEncoder | None:
    """The encoder that made the model's store, or None (warned) when it is not available here."""
    if store_name is None:
        return None
    from larr.config import load_config

    cfg_file = layout.config_file(run_dir)
    cfg = load_config(cfg_file if cfg_file.is_file() else None, ["device=cpu"])
    t0 = time.perf_counter()
    try:
        enc = load_encoder(store_name, cfg, run_dir)
    except EncoderUnavailable as e:
        log.warning("serving without an encoder (new scene values get the unknown row): %s", e)
        return None
    if ident is not None and enc.name != ident:
        raise ServeError(f"the '{store_name}' encoder in {run_dir} is now '{enc.name}', but the model was trained "
                         f"with vectors of '{ident}' (re-run `larr embed` and `larr train`)")
    log.info("loaded encoder %s in %.1fs", enc.name, time.perf_counter() - t0)
    return enc
