"""Typed configuration: pydantic models, loaded from YAML, with dotted overrides.

``load_config("configs/demo.yaml", ["data.seed=7"])`` reads the file, applies each
``key=value`` override (the value is parsed as YAML, so ``7`` is an int and ``[1, 2]`` a
list), and validates the result. Unknown keys are errors, so a typo never silently does
nothing. The config actually used is saved into the run directory with :func:`save_config`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from larr.errors import LarrError
from larr.rec.backbones import check_backbone
from larr.rec.rows import LARR_STORE_ROWS, ROWS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where impressions come from: generated (synth), converted (movielens), or a folder of your own (dir)."""

    source: Literal["synth", "movielens", "dir"] = Field(
        "synth", description="synth: generate the world; movielens: convert MovieLens-100K; dir: the folder "
        "data.dir, which must pass `larr data validate` (copied into RUN_DIR/data, see larr/data/local.py).")
    dir: Path | None = Field(None, description="With source=dir: your data folder (`larr demo --data DIR` sets both).")
    preset: Literal["quick", "demo", "large"] = Field(
        "demo", description="Size of the generated world (synth only)."
    )
    seed: int | None = Field(None, description="Generator seed; defaults to the top-level seed.")
    descriptions: bool = Field(
        False, description="synth only: dataset.json carries each landmark's category and each event's kind, "
        "read after the value's name by every encoder (larr.data.synth.described_features).")

    @model_validator(mode="after")
    def _dir_with_source(self) -> "DataConfig":
        if self.source == "dir" and self.dir is None:
            raise ValueError("data.source=dir needs data.dir (the folder with your tables)")
        if self.source != "dir" and self.dir is not None:
            raise ValueError(f"data.dir is set but data.source is {self.source!r}; use data.source=dir")
        return self


class LLMConfig(_Strict):
    """The backbone causal LM shared by stages 1-2."""

    model: str = Field("smollm2", description="'smollm2' (the packaged default) or a Hugging Face model folder.")
    max_length: int = Field(256, description="Token limit for encoded texts.")


class CorpusConfig(_Strict):
    """Stage-1 corpus: shop (and user) documents with field tokens."""

    heldout_frac: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of shops held out (by seed) for perplexity evaluation; never trained on."
    )
    include_users: bool = Field(True, description="Add one <user> document per user to the training corpus.")
    user_top_k: int = Field(
        3, ge=0, description="Most clicked categories / shops (train split only) named in a user document."
    )


class PretrainConfig(_Strict):
    """Stage 1: continual pretraining (next-token loss on packed corpus blocks).

    Defaults are sized for the demo world on 2 CPU cores (SmolLM2-135M, bf16 autocast): 30 steps ×
    4 blocks × 256 tokens ≈ 31k tokens, a few minutes there, and most of the held-out perplexity
    drop already (each run records ``train_seconds``, ``tokens_per_second`` and ``ppl_before`` /
    ``ppl_after`` in report.json ``stage1``).
    LoRA vs full at 30 steps on that corpus: LoRA lr 2e-3 → ppl 22.6, full lr 3e-4 → 25.4
    (LoRA lr 1e-3 → 48.6); per step LoRA costs 0.9-1.15x a full step on CPU (the backward pass
    through the frozen base is still paid, LoRA adds its own small matmuls), so the drop per
    second is a tie within measurement noise.
    """

    method: Literal["lora", "full"] = Field(
        "lora",
        description="lora: LoRA on target_modules + the new field-token rows (peft trainable_token_indices); "
        "full: every weight trains. LoRA is the default: its ppl drop per CPU-second ties with full fine-tuning "
        "here (see the class doc), it changes the base weights (general language knowledge that stage 2 needs "
        "for unseen scene words) only by a low-rank update, and a checkpoint is ~60 MB instead of ~1.6 GB.",
    )
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    seq_len: int = Field(256, ge=2, description="Tokens per packed block (documents joined by EOS).")
    batch_size: int = Field(4, ge=1, description="Blocks per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(
        2e-3, gt=0.0, description="Peak AdamW lr. 2e-3 suits LoRA's short run (1e-3 halves the ppl drop); "
        "use ~3e-4 with method=full."
    )
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping; 0 disables it.")
    epochs: float = Field(1.0, gt=0.0, description="Passes over the packed corpus (used only when max_steps is null).")
    max_steps: int | None = Field(
        30, ge=1, description="Optimizer steps; overrides epochs. 30 fits the demo's CPU time budget (one "
        "epoch of the demo corpus is ~8x as many steps); null = train by epochs."
    )
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0)
    checkpoint_every: int = Field(10, ge=1, description="Optimizer steps between checkpoints in RUN_DIR/stage1_ckpt.")
    log_every: int = Field(1, ge=1, description="Optimizer steps between TensorBoard points.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16 = autocast of the forward pass (weights and optimizer stay float32); auto = bf16 "
        "where the hardware does it natively (CUDA, CPUs with AVX512-BF16/AMX: 1.3-1.5x faster steps, same ppl), "
        "else fp32. Perplexity is always evaluated in fp32."
    )
    threads: int = Field(0, ge=0, description="torch threads per process (0 = torch's default, all cores).")
    eval_batch_size: int = Field(8, ge=1)
    eval_max_tokens: int | None = Field(
        8192, ge=2, description="Cap on held-out tokens scored for perplexity (the demo's 50 held-out shops are "
        "~6.2k tokens, all scored); null = all."
    )


PAIR_WEIGHTS = {"user_user": 1.0, "shop_shop": 1.0, "user_shop": 1.0,  # stage-2 defaults
                "scene_shop": 0.0, "scene_scene": 0.0}


EncoderName = Literal["larr", "untuned", "minilm"]
"""Frozen text encoders of the embed stage: ``larr`` = the stage-2 model (RUN_DIR/stage2), ``untuned`` =
the backbone ``llm.model`` in raw last-token mode, ``minilm`` = all-MiniLM-L6-v2 (generic sentence encoder).
How each is found and loaded: ``larr.encoders.REGISTRY``."""
ENCODERS: tuple[str, ...] = get_args(EncoderName)
EvalEncoderName = Literal[EncoderName, "stage1"]
"""The stage-2 evaluation's encoders: those of the embed stage plus ``stage1`` (RUN_DIR/stage1, raw last-token)."""


class ContrastiveConfig(_Strict):
    """Stage 2: contrastive fine-tuning into a text-embedding model (see larr/llm/contrastive.py)."""

    # loss and model
    temperature: float = Field(0.05, gt=0, description="InfoNCE temperature τ (cosine similarities / τ).")
    weights: dict[str, float] = Field(
        dict(PAIR_WEIGHTS),
        description="λ per pair type in λ1·L_uu + λ2·L_ss + λ3·L_us + λ4·L_sc + λ5·L_scs (scene_shop, scene_scene: "
        "see pairs.scene_shop_pairs, pairs.scene_scene_pairs); "
        "a type with weight 0 is not trained. Types left out keep their default (--set contrastive.weights.user_user=0 "
        "changes only that one).",
    )
    head_dim: int = Field(256, ge=1, description="Output size of the MLP head (the embedding dimension).")
    max_length: int | None = Field(
        64, ge=8, description="Token limit of stage-2 texts (including <emb>); None = llm.max_length."
    )
    trainable_layers: int = Field(
        1, ge=0, description="Top transformer layers fine-tuned with the head; the layers below are frozen "
        "and their outputs computed once per text (0 = head only).",
    )
    cache_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Precision of the one-off frozen-layer pass and its cache. auto = bfloat16 where it is "
        "native (CUDA, CPUs with AVX512-BF16/AMX: ~2x faster), else float32 (emulated bf16 is ~100x slower on an "
        "AVX2 CPU).")
    # optimisation
    batch_size: int = Field(32, ge=2, description="Pairs per type per step (in-batch negatives = batch_size - 1).")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate of the trainable LM layers.")
    head_lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the MLP head.")
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    epochs: float = Field(
        8.0, gt=0, description="Passes over the largest pair type (steps are cheap: only the top layers run)."
    )
    max_steps: int | None = Field(None, ge=1, description="Train exactly this many steps (instead of epochs).")
    time_budget_s: float | None = Field(
        None, gt=0, description="Stop training after this many seconds (the cosine schedule is sized by steps)."
    )
    # pairs (rules documented in larr/llm/pairs.py)
    uu_min_jaccard: float = Field(0.2, ge=0, le=1, description="user-user: Jaccard of clicked-shop sets ≥ this.")
    uu_min_common: int = Field(2, ge=1, description="user-user: at least this many shops clicked by both.")
    uu_max_per_user: int = Field(5, ge=1, description="user-user: keep each user's most similar partners only.")
    ss_min_coclick: int = Field(3, ge=1, description="shop-shop: at least this many users clicked both.")
    ss_min_score: float = Field(0.05, ge=0, le=1, description="shop-shop: coclicks / sqrt(n_a n_b) ≥ this.")
    ss_max_per_shop: int = Field(5, ge=1, description="shop-shop: keep each shop's best partners only.")
    uu_max_pairs: int = Field(1500, ge=1, description="user-user: at most this many training pairs (seeded sample).")
    ss_max_pairs: int = Field(1500, ge=1, description="shop-shop: at most this many training pairs (seeded sample).")
    us_max_pairs: int = Field(2000, ge=1, description="user-shop: at most this many training click pairs (seeded sample).")
    sc_min_lift: float = Field(1.2, gt=0, description="scene-shop: a value lifts a category whose share of its "
                               "clicks is ≥ this × the category's overall share.")
    sc_min_clicks: int = Field(20, ge=1, description="scene-shop: ... and that got at least this many of its clicks.")
    sc_max_categories: int = Field(3, ge=1, description="scene-shop: most lifted categories kept per scene value.")
    sc_shops_per_category: int = Field(5, ge=1, description="scene-shop: most clicked shops per kept category.")
    scs_min_clicks: int = Field(30, ge=1, description="scene-scene: values with at least this many train clicks "
                                "get a click profile (their log-lift over shop categories).")
    scs_min_similarity: float = Field(0.5, ge=-1, le=1, description="scene-scene: two values of one feature pair "
                                      "when the cosine of their click profiles is ≥ this ...")
    scs_max_per_value: int = Field(3, ge=1, description="scene-scene: ... and one is among the other's this many "
                                   "most similar.")
    user_top_k: int = Field(3, ge=0, description="Categories / shops named in a user text.")
    scene_in_user_text: bool = Field(
        True, description="Put the click's rendered scene ('weather: heavy rain; …') before the user side of "
        "user-shop pairs, so the model learns what scene words mean (on by default: it won on the demo world's "
        "valid split, see larr/llm/pairs.py).",
    )
    scene_features_per_pair: int | None = Field(
        3, ge=1, description="With scene_in_user_text: name a seeded random subset of this many scene features "
        "per pair (None = all; ten features would outgrow max_length).",
    )
    scene_only_frac: float = Field(
        0.3, ge=0, le=1, description="With scene_in_user_text: share of user-shop pairs whose user side is the "
        "scene alone (the form stage 3 encodes), chosen by seed.",
    )

    @field_validator("weights", mode="before")
    @classmethod
    def _merge_weights(cls, v: Any) -> Any:
        if isinstance(v, dict):
            unknown = sorted(set(v) - set(PAIR_WEIGHTS))
            if unknown:
                raise ValueError(f"unknown pair type {unknown[0]!r} (known: {', '.join(PAIR_WEIGHTS)})")
            return {**PAIR_WEIGHTS, **v}
        return v

    # evaluation
    heldout_frac: float = Field(0.1, ge=0, lt=1, description="Share of each pair type held out for evaluation.")
    heldout_max: int = Field(200, ge=0, description="At most this many held-out pairs per type.")
    eval_max_candidates: int = Field(
        800, ge=2, description="user-user / shop-shop retrieval corpus: all entities up to this many, else every "
        "held-out target plus a seeded sample of the others.",
    )
    evaluate: bool = Field(True, description="Run the stage-2 evaluation (4 models) at the end of `larr contrastive`.")
    eval_models: list[EvalEncoderName] = Field(
        ["untuned", "stage1", "minilm", "larr"], description="Encoders scored by the stage-2 evaluation."
    )
    eval_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Precision of the LLM encoders during evaluation; auto as cache_dtype (bf16 where "
        "native: ~2x faster, rankings match float32 closely).",
    )


class EmbedConfig(_Strict):
    """The embed stage: every distinct scene value (and new shops, whole scenes) → frozen vectors, cached."""

    batch_size: int = Field(64, ge=1, description="Texts per encoder forward pass.")
    encoders: list[EncoderName] = Field(
        ["larr", "untuned", "minilm"], description="Stores to build under RUN_DIR/embeddings/<encoder>.")
    whole_scene: list[EncoderName] = Field(
        ["larr"], description="Encoders that also encode one text per distinct whole scene (whole_text row).")
    whole_budget_s: float | None = Field(
        None, gt=0, description="Stop encoding whole-scene texts after this many seconds per encoder (what is done "
        "stays cached; a re-run continues). None = encode them all.")
    shops: Literal["none", "new", "all"] = Field(
        "new", description="Shop texts to encode: 'new' = shops never shown in train (cold start).")
    max_length: int = Field(64, ge=8, description="Token limit of the untuned backbone's texts.")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Matmul precision of the LLM encoders (larr, untuned). bfloat16: ~1.8x the texts/s on "
        "CPUs with native bf16 (AVX512-BF16/AMX) or a GPU, vectors at cosine >= 0.999 to float32. Part of the "
        "store's encoder identity, so one store never mixes precisions.")


BackboneName = Annotated[str, AfterValidator(check_backbone)]
"""A name of :data:`larr.rec.backbones.BACKBONES`."""


class RecConfig(_Strict):
    """Stage-3 hyper-parameters. The ablations of the paper are points in this space (``larr.rec.rows.ROWS``).

    Defaults were chosen on the *valid* split of the demo world (never on test), within the time
    budget of the full comparison (8 rows × 3 seeds) on 2 CPU cores.
    """

    embed_dim: int = Field(8, ge=1, description="Size of every field embedding.")
    backbone: BackboneName = Field("dcnv2", description="CTR backbone (larr.rec.backbones.BACKBONES).")
    hidden: list[int] = Field([128, 64], description="Deep (MLP) layer sizes of the backbone.")
    cross_layers: int = Field(2, ge=0, description="DCNv2 cross layers.")
    dcn_structure: Literal["parallel", "stacked"] = "parallel"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    scene_ids: bool = Field(True, description="Scene features as ID fields (OOV for unseen values).")
    impute_unseen_ids: bool = Field(
        True, description="A scene value never seen in training gets, instead of the untrained unknown-ID "
        "embedding, the mix of the seen values' ID embeddings weighted by LLM-vector similarity "
        "(larr.rec.models.UnseenIDImputer). Needs per-feature LLM vectors (transformer/meanpool scene encoders).")
    impute_temperature: float = Field(
        0.05, gt=0.0, description="τ of the imputation softmax over cosine similarities (chosen on the valid "
        "split's unseen rows: 0.05 vs 0.02/0.1/0.3).")
    impute_space: Literal["llm", "encoder"] = Field(
        "llm", description="Where the imputer measures similarity: the frozen LLM vectors, or the scene "
        "encoder's per-feature tokens (its learnt projection of them, trained by the click loss). 'encoder' "
        "helped the Transformer rows on LARR vectors on valid unseen rows (+0.003) but not MiniLM's (−0.001) or "
        "the untuned LLM's, and cost meanpool/untuned 0.008 on test unseen rows: not the default.")
    impute_prior_rows: float = Field(
        30.0, ge=0.0, description="h, the weight of the LLM prior on *seen* scene IDs, in train rows (with "
        "impute_unseen_ids, at evaluation and serving): a value seen in n train rows gets (n·e + h·prior)/(n + h), "
        "prior = the mix of its LLM neighbours' ID embeddings (what an unseen value gets: the n = 0 case). "
        "Rare values lean on their name, frequent ones keep their own. 0 = unseen values only. 30 was chosen on "
        "the valid split's rare rows, 3 world seeds × 5 seeds, every LLM row (grid 0/30/100/300/1000: 30 best "
        "for each; 300 and more hurt every slice).")
    id_drop_rows: float = Field(
        0.0, ge=0.0, description="d, rarity-proportional ID dropout (training only): a scene ID seen in n train rows "
        "is replaced by the unknown ID with probability d/(n + d), so the unknown ID learns 'a rare value' and the "
        "model reads the scene vector where IDs are weak (larr.rec.models.RareIDDropout). 0 = off: at d = 30 and 300 "
        "`larr` gained nothing on valid (3 world seeds × 5 seeds; README 'Rarity-proportional ID dropout').")
    id_drop_to: Literal["unknown", "prior"] = Field(
        "unknown", description="What a hidden ID becomes: the unknown ID, or (rows that impute unseen IDs) the "
        "value's leave-one-out LLM prior, what it would be imputed as were it never seen.")
    scene_encoder: Literal["none", "transformer", "meanpool", "whole_text"] = Field(
        "transformer", description="LARR scene module over frozen LLM vectors; 'none' = no LLM input.")
    scene_dim: int = Field(64, ge=1, description="Width d of the scene encoder tokens.")
    scene_layers: int = Field(2, ge=1)
    scene_heads: int = Field(4, ge=1)
    scene_size: int = Field(
        8, ge=1, description="Size s of the scene vector fed to the CTR model (a narrow bottleneck: at 32 the "
        "scene encoder memorised whole scenes and valid AUC fell by ~0.007).")
    llm_standardize: bool = Field(
        True, description="Centre each scene feature's LLM vectors and scale them to unit mean norm "
        "(their shared component otherwise drowns the differences; see SceneTable.standardize).")
    scene_lr_scale: float = Field(0.1, gt=0.0, description="Learning rate of the scene encoder ÷ that of the rest.")
    align_dim: int = Field(32, ge=1, description="Space in which scene and collaborative vectors are compared.")
    align_temperature: float = Field(0.1, gt=0.0)
    align_weight: float = Field(0.1, ge=0.0, description="λ in loss = BCE + λ·alignment; 0 switches alignment off.")
    align_with: Literal["user", "user_and_scene_ids", "scene_ids"] = Field(
        "user_and_scene_ids", description="Fields of the collaborative side: user fields, plus scene ID fields "
        "when the model has them; or the scene ID fields alone (the collaborative embedding of the scene).")
    align_groups: Literal["request", "scene"] = Field(
        "request", description="Alignment pairs that are not each other's negatives: those of one request, or "
        "all pairs with the same scene (larr.rec.models.alignment_groups).")
    align_stop_grad: bool = Field(
        False, description="No gradient from the alignment into the ID embeddings of the collaborative side "
        "(the scene vector moves towards the IDs, not the IDs towards the text).")
    # read by the training loop (larr/rec/train.py)
    batch_size: int = Field(1024, ge=2, description="Rows per step; batches hold whole requests (see train.py).")
    lr: float = Field(1e-2, gt=0.0, description="AdamW (peak) learning rate.")
    lr_schedule: Literal["constant", "linear"] = Field(
        "linear", description="linear: decays to 0 over `epochs` (by step), so the last epochs settle.")
    warmup: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of the steps over which the rate rises linearly from ~0 (keeps "
        "the scene encoder from collapsing to a constant at the first, bias-dominated steps).")
    weight_decay: float = Field(0.0, ge=0.0)
    epochs: int = Field(3, ge=1, description="Most epochs; early stopping may end sooner.")
    patience: int = Field(2, ge=1, description="Stop after this many epochs without a better validation AUC.")
    checkpoint_every: int = Field(1, ge=1, description="Epochs between resumable checkpoints.")
    eval_batch_size: int = Field(8192, ge=1)
    threads: int = Field(
        1, ge=0, description="torch threads per training process (0 = all cores). These models are small: one "
        "thread per process and parallel runs (experiment.workers) use cores better, and never spin-wait.")

    @property
    def uses_alignment(self) -> bool:
        return self.scene_encoder != "none" and self.align_weight > 0


class ExperimentConfig(_Strict):
    """The stage-3 comparison (`larr evaluate`): every row on the same split, seeds, epochs and sizes."""

    models: list[str] = Field(list(ROWS), description="Rows of the table (names: larr.rec.rows.ROWS).")
    seeds: list[int] = Field([0, 1, 2, 3, 4], min_length=1, description="Each row is trained once per seed; rows are "
                             "compared paired by seed (larr.rec.paired: mean Δ and a 95 % t-interval, from 2 seeds on).")
    backbone: BackboneName | None = Field(None, description="CTR backbone of every row; None = rec.backbone.")
    force_rec: dict[str, Any] = Field(
        {}, description="rec fields set on every row *over the row's own overrides* (a row fixes e.g. scene_ids or "
        "align_weight, which a plain rec.<field> cannot change): experiment.force_rec.scene_ids=false trains `larr` "
        "with the scene vector as its only scene input. Keys must be rec fields.")
    larr_encoder: EncoderName = Field(
        "larr", description=f"Store the LARR rows read ({', '.join(LARR_STORE_ROWS)}); 'minilm' or "
        "'untuned' stand in before a stage-2 model exists.")
    workers: int = Field(2, ge=1, description="(model, seed) runs trained in parallel processes (1 thread each).")
    reuse: bool = Field(True, description="Keep finished runs in RUN_DIR/stage3 whose config and data match.")
    rare_below: int = Field(
        100, ge=1, description="The rare slice: rows (without a never-seen value) whose rarest scene value has fewer "
        "than this many train rows (larr.rec.slices); every metric is reported on all / unseen / rare / frequent. "
        "A request has 10-20 rows, so 100 is a value seen in a handful of requests; at 20 the demo world's rare "
        "slice holds only ~300 test rows, too few to tell rows apart (per_value splits it by band).")

    @field_validator("force_rec")
    @classmethod
    def _rec_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - set(RecConfig.model_fields))
        if unknown:
            raise ValueError(f"not rec fields: {', '.join(unknown)}")
        return v


SweepParam = Literal["align_temperature", "align_weight", "scene_layers", "scene_size"]
SWEEP_PARAMS: dict[str, str] = {
    "align_temperature": "alignment temperature τ", "align_weight": "alignment weight λ",
    "scene_layers": "scene-encoder layers", "scene_size": "scene-vector size s"}
"""The ``rec`` fields `larr sweep` can vary, with their names in the report and plots."""


class SweepConfig(_Strict):
    """The hyper-parameter analysis (`larr sweep`, the paper's Figure 4).

    The ``larr`` row is trained with one ``rec.<param>`` set to each value of its grid while every
    other hyper-parameter keeps its config value; the config's own value is always one of the
    points (added if a grid lacks it), so each curve passes through the comparison's ``larr`` row.
    """

    align_temperature: list[Annotated[float, Field(gt=0.0)]] = Field(
        [0.05, 0.1, 0.2, 0.5], min_length=1, description="Grid of the alignment temperature τ (rec.align_temperature).")
    align_weight: list[Annotated[float, Field(ge=0.0)]] = Field(
        [0.0, 0.05, 0.1, 0.3, 1.0], min_length=1,
        description="Grid of the alignment weight λ (rec.align_weight); 0 = no alignment (the larr_noalign row).")
    scene_layers: list[Annotated[int, Field(ge=1)]] = Field(
        [1, 2, 3], min_length=1, description="Grid of the scene-encoder Transformer layers (rec.scene_layers).")
    scene_size: list[Annotated[int, Field(ge=1)]] = Field(
        [4, 8, 16, 32], min_length=1, description="Grid of the scene-vector size s (rec.scene_size).")
    params: list[SweepParam] = Field(
        list(SWEEP_PARAMS), min_length=1, description="Parameters swept when `larr sweep` names none (--param).")
    seeds: list[int] = Field([0], min_length=1, description="Each point is trained once per seed (mean ± std).")
    workers: int = Field(2, ge=1, description="Runs trained in parallel processes (1 thread each).")
    in_demo: bool = Field(
        False, description="`larr demo` runs the sweep after the comparison. Off by default: on the demo world "
        "the full grid is 11 new runs (configs/demo.yaml), each a full stage-3 training; quick.yaml turns "
        "it on with one extra value per parameter.")


class DistConfig(_Strict):
    """Runs under ``torchrun`` / ``accelerate launch`` (``larr.distributed``); ignored by a single process."""

    gather_negatives: bool = Field(
        True, description="In-batch negatives of the contrastive losses (stage 2's InfoNCE, stage 3's alignment) "
        "come from every rank's rows (all_gather with gradients), as in one process with the same global batch. "
        "False: each rank contrasts only its own rows (batch_size / N negatives; cheaper, a weaker loss).")


class StreamConfig(_Strict):
    """Stage-3 data read as a stream (``larr.rec.stream``) instead of in-memory tensors, for large data."""

    mode: Literal["auto", "memory", "stream"] = Field(
        "auto", description="auto: stream when the impressions have more than `above_rows` rows (in memory is "
        "faster while it fits); memory / stream: always that path.")
    above_rows: int = Field(5_000_000, ge=0, description="auto streams past this many impressions (all splits).")
    buffer_rows: int = Field(
        262_144, ge=1, description="Shuffle buffer: train rows whose requests are shuffled together (memory bound).")
    scan_rows: int = Field(65_536, ge=1, description="Rows per Parquet read.")
    eval_rows: int | None = Field(
        None, ge=1, description="Read at most this many valid / test rows (file order) when streaming; None = all.")
    max_steps_per_epoch: int | None = Field(
        None, ge=1, description="Cap on the streamed batches of an epoch (benchmarks); None = every full batch.")


class Config(_Strict):
    """Everything one run needs. Each stage reads its own section."""

    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    data: DataConfig = DataConfig()
    llm: LLMConfig = LLMConfig()
    corpus: CorpusConfig = CorpusConfig()
    pretrain: PretrainConfig = PretrainConfig()
    contrastive: ContrastiveConfig = ContrastiveConfig()
    embed: EmbedConfig = EmbedConfig()
    rec: RecConfig = RecConfig()
    experiment: ExperimentConfig = ExperimentConfig()
    sweep: SweepConfig = SweepConfig()
    dist: DistConfig = DistConfig()
    stream: StreamConfig = StreamConfig()

    @property
    def data_seed(self) -> int:
        return self.seed if self.data.seed is None else self.data.seed

    @property
    def stage2_max_length(self) -> int:
        """Token limit of stage-2 texts (the baselines of its evaluation see the same truncation)."""
        return self.contrastive.max_length or self.llm.max_length


class ConfigError(LarrError):
    """A config file or override is invalid (message: one line)."""


def _set_dotted(tree: dict[str, Any], dotted: str) -> None:
    if "=" not in dotted:
        raise ConfigError(f"override '{dotted}' is not of the form key=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> Config:
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    for o in overrides or []:
        _set_dotted(tree, o)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{path or 'config'}: {loc}: {err['msg']}") from None


def save_config(cfg: Config, run_dir: Path) -> Path:
    from larr.io import atomic_write_text

    from larr.layout import config_file

    out = config_file(run_dir)
    atomic_write_text(out, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return out
