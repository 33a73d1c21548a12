"""Stage-3 models: CTR backbones, the LARR scene encoder, the alignment loss, save/load.

Reading order, top to bottom:

1. :class:`ModelDims` — the sizes the data and the LLM fix. (The hyper-parameters are
   :class:`larr.config.RecConfig`; the rows of the comparison, as its overrides, are
   :data:`larr.rec.rows.ROWS`.)
2. Building blocks — :func:`mlp`, :class:`FieldEmbedding`, :class:`CrossNetV2`.
3. Backbones on the concatenated inputs — :class:`DNN`, :class:`DCNv2`; ``rec.backbone`` picks
   one by its name in :data:`larr.rec.backbones.BACKBONES` (adding one: see that module).
4. The scene module — :class:`SceneEncoder` (per-feature LLM vectors → bidirectional
   Transformer with an ``<agg>`` token, or mean pooling) and :class:`WholeSceneEncoder`.
5. :class:`CTRModel` — field embeddings (+ scene vector) → backbone → click logit; also the
   two vectors the alignment loss compares.
6. Losses — :func:`alignment_loss` (symmetric in-batch InfoNCE) and :func:`ctr_loss`.
7. :func:`predict`, :func:`save_model`, :func:`load_model`.

The frozen LLM vectors of the scene table are a *buffer* of :class:`CTRModel`, not a
parameter: the LLM is frozen in stage 3, so they get no gradient, the optimiser never sees
them, and they travel inside ``model.safetensors`` so a saved model is self-contained.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from larr.config import RecConfig
from larr.io import atomic_dir
from larr.rec.backbones import build_backbone
from larr.rec.features import Batches, FeatureSpec

FORMAT = "larr-rec/1"
MODEL_FILE, CONFIG_FILE, FEATURES_FILE = "model.safetensors", "config.json", "features.json"


@dataclass
class ModelDims:
    """Sizes a model is built from: what the data and the LLM fix, not hyper-parameters."""

    field_names: list[str]
    field_sides: list[str]
    vocab_sizes: list[int]
    n_scene: int  # scene features per request
    scene_table: int  # rows of the per-feature LLM table (row 0 = unknown)
    whole_table: int  # rows of the whole-scene LLM table (row 0 = unknown)
    llm_dim: int
    # Per scene feature, per value (scene-table order): its ID in the feature's vocabulary, 0 when the value
    # never occurs in train, -1 when the feature's IDs are buckets of values (float features).
    scene_vocab_ids: list[list[int]] | None = None
    # Per scene feature, per value (same order): the train rows that hold it (0 when never seen) — how much
    # its ID embedding could learn; None for models saved before it was recorded (no prior on seen IDs).
    scene_value_rows: list[list[int]] | None = None

    @classmethod
    def from_spec(cls, spec: FeatureSpec, llm_dim: int, counts: list[torch.Tensor] | None = None) -> "ModelDims":
        """``counts``: train rows per vocabulary index of each scene ID field (:func:`larr.rec.slices.train_counts`)."""
        vocab = {f.name: {v: i + 1 for i, v in enumerate(f.vocab)} for f in spec.fields}
        ids = [[-1 if n in spec.buckets else vocab[f"scene:{n}"].get(v, 0) for v in spec.scene_values[n]]
               for n in spec.scene_names]
        rows = None if counts is None else [[int(c[i]) if i > 0 else 0 for i in k_ids]
                                            for k_ids, c in zip(ids, counts)]
        return cls(spec.field_names, [f.side for f in spec.fields], spec.vocab_sizes, len(spec.scene),
                   spec.scene_table().size, spec.scene_table(whole=True).size, llm_dim, ids, rows)


# ---------------------------------------------------------------------------- building blocks


def mlp(in_dim: int, hidden: list[int], dropout: float = 0.0, out_dim: int | None = None) -> nn.Sequential:
    """Linear-ReLU-Dropout blocks, optionally ending in a plain Linear to ``out_dim``."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = h
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class FieldEmbedding(nn.Module):
    """One embedding table per categorical field: (B, n_fields) indices → (B, n_fields, d)."""

    def __init__(self, vocab_sizes: list[int], dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n, dim) for n in vocab_sizes)
        for t in self.tables:
            nn.init.normal_(t.weight, std=0.01)  # small: early logits near 0, no saturated start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([t(x[:, i]) for i, t in enumerate(self.tables)], dim=1)


class CrossNetV2(nn.Module):
    """DCN-V2 cross layers: ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l`` (full-rank W)."""

    def __init__(self, dim: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


# ---------------------------------------------------------------------------- backbones


class DNN(nn.Module):
    """Plain MLP over the concatenated inputs."""

    def __init__(self, in_dim: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        self.deep = mlp(in_dim, hidden, dropout)
        self.out_dim = hidden[-1] if hidden else in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deep(x)


class DCNv2(nn.Module):
    """DCN-V2 (Wang et al. 2021): cross network and deep network, side by side or stacked."""

    def __init__(self, in_dim: int, hidden: list[int], cross_layers: int, structure: str, dropout: float) -> None:
        super().__init__()
        self.structure = structure
        self.cross = CrossNetV2(in_dim, cross_layers)
        self.deep = mlp(in_dim, hidden, dropout)
        deep_out = hidden[-1] if hidden else in_dim
        self.out_dim = in_dim + deep_out if structure == "parallel" else deep_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.structure == "parallel":
            return torch.cat([self.cross(x), self.deep(x)], dim=-1)
        return self.deep(self.cross(x))


# ---------------------------------------------------------------------------- scene module


class SceneEncoder(nn.Module):
    """LARR's scene aggregation: per-feature LLM vectors (B, F, D_llm) → scene vector (B, s).

    Each feature's vector is projected to width d and tagged with a learnable *feature-type*
    embedding; a learnable ``<agg>`` token is prepended and a Transformer encoder runs over the
    F + 1 tokens with **no attention mask**, so every token sees every other (bidirectional)
    and ``<agg>`` can gather from all features. Its output, through an MLP, is the scene vector.

    Order behaviour: there is no positional encoding besides the type embedding, so the output
    depends on *which feature holds which value* (swap two features' values and it changes) but
    not on the order in which the (feature, value) pairs are listed — permuting the inputs and
    the type embeddings together leaves it unchanged.

    ``pool="mean"`` (the ``meanpool`` ablation) replaces the Transformer by the mean of the
    tagged tokens.
    """

    def __init__(self, n_features: int, llm_dim: int, d: int, n_layers: int, n_heads: int, out_size: int,
                 dropout: float = 0.0, pool: Literal["agg", "mean"] = "agg") -> None:
        super().__init__()
        self.pool = pool
        self.proj = nn.Linear(llm_dim, d)
        self.type_emb = nn.Parameter(0.02 * torch.randn(n_features, d))
        if pool == "agg":
            self.agg = nn.Parameter(0.02 * torch.randn(1, 1, d))
            layer = nn.TransformerEncoderLayer(d, n_heads, 4 * d, dropout, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.head = mlp(d, [d], dropout, out_size)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(vectors) + self.type_emb  # (B, F, d)
        if self.pool == "mean":
            return self.head(tokens.mean(dim=1))
        agg = self.agg.expand(tokens.shape[0], -1, -1)
        h = self.encoder(torch.cat([agg, tokens], dim=1))  # no mask: bidirectional
        return self.head(h[:, 0])


class WholeSceneEncoder(nn.Module):
    """The ``whole_text`` ablation: one LLM vector of the whole rendered scene → scene vector."""

    def __init__(self, llm_dim: int, d: int, out_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = mlp(llm_dim, [d, d], dropout, out_size)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.net(vectors)


# ---------------------------------------------------------------------------- the CTR model


class UnseenIDImputer(nn.Module):
    """Gives a scene value's ID embedding an LLM prior: imputes never-seen values, shrinks rare ones.

    An ID model maps every never-seen value ("typhoon") to the one unknown ID, whose embedding was never
    trained: whatever it learnt about weather is lost exactly where the scene is new. With the value's
    cached LLM vector we can do better at no serving cost: its ID embedding becomes the *prior* of the
    value — the mixture of the seen values' ID embeddings weighted by LLM similarity,
    ``softmax(cos(v, v_seen) / τ)`` — typhoon borrows what the model learnt for thunderstorm and heavy rain.

    A value seen in only ``n`` train rows has an ID embedding fitted on a handful of clicks; with
    ``prior_rows = h > 0`` it is shrunk towards its prior (computed from the *other* seen values):
    ``(n·e + h·prior) / (n + h)`` — a posterior mean in which the LLM prior counts as ``h`` rows. Frequent
    values keep their own embedding (n ≫ h); a never-seen value is the case n = 0, the imputation above
    (whose mixture then reads the shrunk embeddings). Needs the train rows per value
    (``ModelDims.scene_value_rows``); without them only never-seen values are rewritten.

    Training is unchanged (it runs in eval mode: evaluation, serving). Only rows whose value has a vector
    are rewritten. The vectors are the model's standardised per-feature table, or the ``scene_llm``
    vectors passed in when serving a value not in the table.
    """

    def __init__(self, vocab_ids: list[list[int]], cols: list[int], temperature: float, prior_rows: float = 0.0,
                 value_rows: list[list[int]] | None = None) -> None:
        """``cols[k]``: the embedding field (column of the model's used fields) of scene feature k;
        ``value_rows[k]``: train rows of each of its values (:class:`ModelDims`)."""
        super().__init__()
        self.cols, self.temperature = cols, temperature
        self.features: list[int] = []  # features with IDs of their own and at least one seen value
        self.shrunk: list[int] = []  # of them, features whose seen values get the prior (two seen values or more)
        start = 1  # row 0 of the table is the unknown value
        for k, ids in enumerate(vocab_ids):
            ids_t = torch.tensor(ids, dtype=torch.long)
            seen = ids_t > 0
            if ids and min(ids) >= 0 and bool(seen.any()):
                self.features.append(k)
                self.register_buffer(f"seen_rows_{k}", torch.arange(start, start + len(ids))[seen], persistent=False)
                self.register_buffer(f"seen_ids_{k}", ids_t[seen], persistent=False)
                if prior_rows > 0 and value_rows is not None and int(seen.sum()) > 1:
                    self.shrunk.append(k)
                    n = torch.tensor(value_rows[k], dtype=torch.float32)[seen]
                    self.register_buffer(f"shrink_{k}", (prior_rows / (n + prior_rows))[:, None], persistent=False)
                    pos = torch.full((int(ids_t.max()) + 1,), -1, dtype=torch.long)  # ID → index among the seen
                    pos[ids_t[seen]] = torch.arange(int(seen.sum()))
                    self.register_buffer(f"seen_pos_{k}", pos, persistent=False)
            start += len(ids)

    def _seen_embeddings(self, k: int, weight: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """(S, d) ID embeddings of feature k's seen values, shrunk towards their leave-one-out LLM prior."""
        own = weight[getattr(self, f"seen_ids_{k}")]
        if k not in self.shrunk:
            return own
        a = getattr(self, f"shrink_{k}")
        return (1 - a) * own + a * self._loo_prior(seen, own)

    @staticmethod
    def _unit(v: torch.Tensor, key: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
        """Vectors as unit vectors of the space where similarity is measured (``key``: a projection, or none)."""
        return F.normalize(key(v) if key else v, dim=-1)

    def _seen_keys(self, k: int, table: torch.Tensor, key: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
        """(S, D) feature k's seen values in that space."""
        return self._unit(table[getattr(self, f"seen_rows_{k}")], key)

    def _seen_pos(self, k: int, col_ids: torch.Tensor) -> torch.Tensor:
        """(B,) index of each ID among feature k's seen values; -1 for the unknown ID."""
        pos = getattr(self, f"seen_pos_{k}")
        return pos[col_ids.clamp(max=len(pos) - 1)]

    def _loo_prior(self, seen: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """(S, d): each seen value's mix of the *other* seen values' embeddings ``own`` by LLM similarity."""
        sim = (seen @ seen.T / self.temperature).masked_fill(torch.eye(len(seen), dtype=torch.bool,
                                                                       device=seen.device), float("-inf"))
        return torch.softmax(sim, dim=-1) @ own

    @property
    def prior_cols(self) -> list[int]:
        """Embedding fields whose seen values have a leave-one-out prior (:meth:`hide` can replace them)."""
        return [self.cols[k] for k in self.shrunk]

    def hide(self, emb: torch.Tensor, ids: torch.Tensor, hidden: torch.Tensor, tables: nn.ModuleList,
             table: torch.Tensor, key: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Training: where ``hidden`` (:class:`RareIDDropout`; only :attr:`prior_cols`), a seen ID's embedding
        becomes its leave-one-out prior — what it would be imputed as were it never seen, so training meets
        the case evaluation imputes."""
        fields = list(emb.unbind(1))
        for k in self.shrunk:
            col = self.cols[k]
            prior = self._loo_prior(self._seen_keys(k, table, key), tables[col].weight[getattr(self, f"seen_ids_{k}")])
            pos = self._seen_pos(k, ids[:, col])
            todo = hidden[:, col] & (pos >= 0)
            fields[col] = torch.where(todo[:, None], prior[pos.clamp(min=0)], fields[col])
        return torch.stack(fields, dim=1)

    def forward(self, emb: torch.Tensor, ids: torch.Tensor, tables: nn.ModuleList, table: torch.Tensor,
                rows: torch.Tensor | None, vectors: torch.Tensor | None = None,
                key: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``emb``/``ids``: (B, n_fields, d)/(B, n_fields); each row's per-feature vectors are ``table[rows]`` or, when given, ``vectors`` (B, F, D) — or
        (1, F, D), one scene shared by all B rows (serving), imputed once and broadcast; an all-zero
        vector (the table's row 0) means the value is missing. ``key`` maps vectors into the space where
        similarity is measured (the scene encoder's token projection, ``impute_space="encoder"``).

        Branch-free (every row is computed, then selected), so it traces and exports to ONNX as is."""
        fields = list(emb.unbind(1))
        for k in self.features:
            v, col = (vectors[:, k] if vectors is not None else table[rows[:, k]]), self.cols[k]
            seen = self._seen_keys(k, table, key)
            known = self._seen_embeddings(k, tables[col].weight, seen)
            if k in self.shrunk:  # seen IDs: their shrunk embedding
                pos = self._seen_pos(k, ids[:, col])
                fields[col] = torch.where((pos >= 0)[:, None], known[pos.clamp(min=0)], fields[col])
            weights = torch.softmax(self._unit(v, key) @ seen.T / self.temperature, dim=-1)
            imputed = weights @ known
            todo = (ids[:, col] == 0) & (v.abs().sum(-1) > 0)
            fields[col] = torch.where(todo[:, None], imputed, fields[col])
        return torch.stack(fields, dim=1)


class RareIDDropout(nn.Module):
    """Training only: a scene ID seen in ``n`` train rows is replaced by the unknown ID with probability ``d/(n + d)``.

    An ID model learns nothing for the unknown ID (no train row holds one) and the CTR model need not read
    the scene vector where every value has an ID of its own: for frequent values the ID wins, and at test
    a never-seen or rare value leaves the model with an untrained embedding and a scene vector it learnt
    to ignore. Hiding rare IDs in training — in proportion to how little their embedding can learn — trains
    the unknown ID as "some rare value" and makes the model read the scene vector exactly where IDs are
    weak. Frequent values (n ≫ d) are almost never hidden, unlike uniform ID dropout. ``d = 0``: off.
    """

    def __init__(self, vocab_ids: list[list[int]], value_rows: list[list[int]], cols: list[int], rows: float) -> None:
        super().__init__()
        self.cols: list[int] = []
        for k, (ids, n) in enumerate(zip(vocab_ids, value_rows)):
            if not ids or min(ids) < 0:  # bucketed (float) features have no per-value IDs to hide
                continue
            p = torch.zeros(max(ids) + 1)
            for i, c in zip(ids, n):
                if i > 0:
                    p[i] = rows / (c + rows)
            self.register_buffer(f"p_{len(self.cols)}", p, persistent=False)
            self.cols.append(cols[k])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, n_fields) field indices → (B, n_fields) bool, True where the row's ID is hidden."""
        hidden = torch.zeros_like(ids, dtype=torch.bool)
        for j, col in enumerate(self.cols):
            p = getattr(self, f"p_{j}")
            hidden[:, col] = torch.rand(len(ids), device=ids.device) < p[ids[:, col].clamp(max=len(p) - 1)]
        return hidden


class Scored(NamedTuple):
    logit: torch.Tensor  # (B,)
    emb: torch.Tensor  # (B, n_used, d) field embeddings (never-seen scene IDs imputed in eval mode)
    scene: torch.Tensor | None  # (B, scene_size) scene vector, for models with a scene module


class CTROutput(NamedTuple):
    logit: torch.Tensor  # (B,)
    scene: torch.Tensor | None  # (B, align_dim) scene side of the alignment, when aligning
    collab: torch.Tensor | None  # (B, align_dim) collaborative user/request side, when aligning


class CTRModel(nn.Module):
    """Click model: field embeddings (+ LARR scene vector) → DNN or DCNv2 → logit.

    ``scene_llm`` is the frozen LLM table the scene encoder gathers from: per-feature values
    (``transformer``/``meanpool``, indexed by ``batch["scene"]``) or whole scenes
    (``whole_text``, indexed by ``batch["whole"]``). Left ``None``, a zero table of the right
    shape is made (for :func:`load_model`, which then loads the saved one).

    The *collaborative user/request representation* is an MLP over the embeddings of the
    user-side fields (user id and profile fields) and — when the model has them and
    ``align_with`` says so — the scene ID fields: what the ID-based recommender knows about who
    is asking, and when. It contains no LLM input, which is what makes aligning the scene
    vector with it informative. ``align_with="scene_ids"`` keeps only the scene ID fields — the
    collaborative embedding of the scene itself, what the scene side can match without knowing the user;
    ``align_stop_grad`` makes those IDs a fixed target; ``align_groups="scene"`` stops requests with the
    same scene from being each other's negatives (:func:`alignment_groups`).
    """

    def __init__(self, cfg: RecConfig, dims: ModelDims, scene_llm: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg, self.dims = cfg, dims
        self.used = [i for i, s in enumerate(dims.field_sides) if cfg.scene_ids or s != "scene"]
        used_sides = [dims.field_sides[i] for i in self.used]
        collab_sides = {"user": ("user",), "user_and_scene_ids": ("user", "scene"), "scene_ids": ("scene",)}[cfg.align_with]
        self.collab_fields = [j for j, s in enumerate(used_sides) if s in collab_sides]
        self.embedding = FieldEmbedding([dims.vocab_sizes[i] for i in self.used], cfg.embed_dim)
        in_dim = len(self.used) * cfg.embed_dim
        self.scene_encoder = self._build_scene_encoder(cfg, dims, scene_llm)
        if self.scene_encoder is not None:
            in_dim += cfg.scene_size
        scene_cols = [self.used.index(i) for i, s in enumerate(dims.field_sides) if s == "scene"] if cfg.scene_ids else []
        self.id_dropout = None
        if cfg.id_drop_rows > 0 and scene_cols and dims.scene_value_rows is not None:
            self.id_dropout = RareIDDropout(dims.scene_vocab_ids, dims.scene_value_rows, scene_cols, cfg.id_drop_rows)
        self.imputer = None
        if cfg.impute_unseen_ids and cfg.scene_ids and cfg.scene_encoder in ("transformer", "meanpool") \
                and dims.scene_vocab_ids is not None:
            self.imputer = UnseenIDImputer(dims.scene_vocab_ids, scene_cols, cfg.impute_temperature,
                                           cfg.impute_prior_rows, dims.scene_value_rows)
        # Diagnostics only (larr.rec.probe): a function applied to the scene vector before the backbone.
        self.scene_probe: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.backbone: nn.Module = build_backbone(cfg.backbone, in_dim, cfg)
        self.head = nn.Linear(self.backbone.out_dim, 1)
        if cfg.uses_alignment:  # built only when used: DDP rejects parameters without gradients
            self.scene_proj = nn.Linear(cfg.scene_size, cfg.align_dim)
            self.collab_tower = mlp(len(self.collab_fields) * cfg.embed_dim, [cfg.hidden[-1]] if cfg.hidden else [],
                                    cfg.dropout, cfg.align_dim)

    def _build_scene_encoder(self, cfg: RecConfig, dims: ModelDims, table: torch.Tensor | None) -> nn.Module | None:
        if cfg.scene_encoder == "none":
            return None
        rows = dims.whole_table if cfg.scene_encoder == "whole_text" else dims.scene_table
        if table is None:
            table = torch.zeros(rows, dims.llm_dim)
        if tuple(table.shape) != (rows, dims.llm_dim):
            raise ValueError(f"scene LLM table has shape {tuple(table.shape)}, expected {(rows, dims.llm_dim)}")
        self.register_buffer("scene_llm", table.detach().float().clone())
        if cfg.scene_encoder == "whole_text":
            return WholeSceneEncoder(dims.llm_dim, cfg.scene_dim, cfg.scene_size, cfg.dropout)
        pool = "mean" if cfg.scene_encoder == "meanpool" else "agg"
        return SceneEncoder(dims.n_scene, dims.llm_dim, cfg.scene_dim, cfg.scene_layers, cfg.scene_heads,
                            cfg.scene_size, cfg.dropout, pool)

    def scene_vector(self, rows: torch.Tensor | None, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Scene vector (B, s) of table ``rows``; ``vectors`` (LLM vectors as the table holds them)
        override the table look-up — the serving path, and a scene value that is not in the table yet."""
        if vectors is not None:
            return self.scene_encoder(vectors)
        # Rows of one request (and often of many requests) share a scene: encode each distinct
        # scene of the batch once and scatter back. Same result, a fraction of the compute.
        distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
        return self.scene_encoder(self.scene_llm[distinct])[inverse]

    def score(self, x: torch.Tensor, rows: torch.Tensor | None = None, vectors: torch.Tensor | None = None) -> Scored:
        """The click logit of field indices ``x`` (B, n_fields) in their scene, and what it was computed from.

        The scene is given as rows of the LLM table — ``rows`` (B, F) per feature, (B,) for
        ``whole_text`` — or as its vectors: ``vectors`` (B, F, D) / (B, D), or (1, F, D) / (1, D), one
        scene shared by all B rows (serving), encoded and imputed once and broadcast. Branch-free on
        tensor values, so :class:`larr.serve.graph.ScoringGraph` exports it to ONNX as it is.
        """
        ids = x[:, self.used]
        key = self.scene_encoder.proj if self.cfg.impute_space == "encoder" and self.imputer is not None else None
        if self.id_dropout is not None and self.training:
            hidden = self.id_dropout(ids)  # rare IDs hidden: the unknown ID, or the value's LLM prior
            prior = self.cfg.id_drop_to == "prior" and self.imputer is not None
            to_prior = torch.zeros_like(hidden)
            if prior:
                to_prior[:, self.imputer.prior_cols] = hidden[:, self.imputer.prior_cols]
            emb = self.embedding(ids.masked_fill(hidden & ~to_prior, 0))
            if prior:
                emb = self.imputer.hide(emb, ids, to_prior, self.embedding.tables, self.scene_llm, key)
        else:
            emb = self.embedding(ids)  # (B, n_used, d)
        # Training rows never hold an unknown ID with a vector (vocabularies come from train), so the
        # imputer would only rewrite nothing at every step: it runs in eval mode (evaluation, serving).
        if self.imputer is not None and not self.training:
            emb = self.imputer(emb, ids, self.embedding.tables, self.scene_llm, rows, vectors, key)
        scene = None
        if self.scene_encoder is not None:
            scene = self.scene_vector(rows, vectors).expand(x.shape[0], -1)
            if self.scene_probe is not None:
                scene = self.scene_probe(scene)
        parts = [emb.flatten(1)] + ([scene] if scene is not None else [])
        return Scored(self.head(self.backbone(torch.cat(parts, dim=-1))).squeeze(-1), emb, scene)

    def forward(self, batch: dict[str, torch.Tensor]) -> CTROutput:
        """``batch``: ``x``, the scene's table rows (``scene``, or ``whole`` for ``whole_text``) and
        optionally ``scene_llm`` vectors that override the table (see :meth:`score`)."""
        rows = batch.get("whole" if self.cfg.scene_encoder == "whole_text" else "scene")
        logit, emb, scene = self.score(batch["x"], rows, batch.get("scene_llm"))
        if not self.cfg.uses_alignment:
            return CTROutput(logit, None, None)
        ids = emb[:, self.collab_fields].flatten(1)
        collab = self.collab_tower(ids.detach() if self.cfg.align_stop_grad else ids)
        return CTROutput(logit, self.scene_proj(scene), collab)


# ---------------------------------------------------------------------------- losses


def alignment_loss(scene: torch.Tensor, collab: torch.Tensor, temperature: float,
                   groups: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric in-batch InfoNCE between scene and collaborative vectors (cosine / τ).

    Row i's positive is row i of the other side; the other rows of the batch are negatives.
    Rows sharing a ``groups`` id (e.g. impressions of one request: same user, same scene) are
    identical pairs, not negatives, so they are masked out of each other's denominators.
    """
    from larr.losses import info_nce

    s, c = F.normalize(scene, dim=-1), F.normalize(collab, dim=-1)
    return info_nce(s, c, temperature, left_keys=groups, right_keys=groups)  # both sides of a row share its group


def alignment_groups(batch: dict[str, torch.Tensor], cfg: RecConfig) -> torch.Tensor | None:
    """Group id per alignment pair: pairs of one group are not each other's negatives.

    ``align_groups="request"``: the rows of a request (same user, same scene). ``"scene"``: every pair
    with the same scene — two requests in the same scene are the same scene, not a negative to push
    away (what the scene side can tell apart is the scene, not who is asking)."""
    if cfg.align_groups == "scene":
        rows = batch.get("whole" if cfg.scene_encoder == "whole_text" else "scene")
        if rows is not None:
            return torch.unique(rows.reshape(len(rows), -1), dim=0, return_inverse=True)[1]
    return batch.get("request")


def ctr_loss(out: CTROutput, batch: dict[str, torch.Tensor], cfg: RecConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Training loss ``BCE + λ·alignment`` and its parts (floats, for logging)."""
    bce = F.binary_cross_entropy_with_logits(out.logit, batch["label"])
    if out.scene is None:
        return bce, {"bce": bce.item()}
    align = alignment_loss(out.scene, out.collab, cfg.align_temperature, alignment_groups(batch, cfg))
    return bce + cfg.align_weight * align, {"bce": bce.item(), "align": align.item()}


# ---------------------------------------------------------------------------- inference, save, load


@torch.no_grad()
def predict(model: CTRModel, tensors: dict[str, torch.Tensor], batch_size: int = 8192) -> np.ndarray:
    """Click probabilities for every row of a split, in row order (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    keep = {k: v for k, v in tensors.items() if k in ("x", "scene", "whole")}
    out = [torch.sigmoid(model({k: v.to(device) for k, v in b.items()}).logit).cpu()
           for b in Batches(keep, batch_size, shuffle=False)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def save_model(model: CTRModel, spec: FeatureSpec, out_dir: Path) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``features.json`` into ``out_dir``.

    The folder is replaced atomically as a whole, so give the model a folder of its own.
    """
    with atomic_dir(Path(out_dir)) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp / MODEL_FILE, metadata={"format": FORMAT})
        config = {"format": FORMAT, "rec": model.cfg.model_dump(mode="json"), "dims": asdict(model.dims)}
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / FEATURES_FILE).write_text(spec.to_json())
    return Path(out_dir)


def load_model(model_dir: Path, device: str | torch.device = "cpu") -> CTRModel:
    """Rebuild a model from ``config.json`` and load its weights (and frozen LLM table); eval mode.

    The feature spec of the same folder: ``FeatureSpec.load(model_dir / "features.json")``.
    """
    model_dir = Path(model_dir)
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    model = CTRModel(RecConfig.model_validate(config["rec"]), ModelDims(**config["dims"]))
    model.load_state_dict(load_file(model_dir / MODEL_FILE))
    return model.to(device).eval()
