"""Stage-2 text embeddings: last-token pooling over the LLM + an MLP head, and a fast batched encoder.

A text is encoded as the final hidden state at its last token, passed through a small MLP head
and L2-normalised (cosine = dot product). To give every text the same, dedicated "summary"
position, the tokenizer's post-processor appends ``<emb>`` to every input. Because the token is
appended by the tokenizer itself (saved in ``tokenizer.json``), our :class:`Encoder`,
``sentence_transformers.SentenceTransformer`` and anything else that calls the tokenizer encode
identically.

The saved folder uses the sentence-transformers layout, so it is usable outside larr::

    DIR/  config.json model.safetensors tokenizer.json ...   base model (AutoModel) + tokenizer
          sentence_bert_config.json  modules.json  config_sentence_transformers.json
          1_Pooling/  (lasttoken)   2_Dense/ (h→h, activation)   3_Dense/ (h→d)   4_Normalize/

:class:`Encoder` is the inference path used by later stages: length bucketing (sort by token
length so each batch carries almost no padding), ``torch.inference_mode`` and, for causal
models, no attention mask at all (see :func:`_last_token_hidden`).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from larr.llm.backbone import add_special_tokens, resolve_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMB_TOKEN = "<emb>"
Activation = Literal["gelu", "tanh"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "tanh": nn.Tanh}
_TORCH_NAMES = {"gelu": "torch.nn.modules.activation.GELU", "tanh": "torch.nn.modules.activation.Tanh",
                "identity": "torch.nn.modules.linear.Identity"}


# ---------------------------------------------------------------------------- tokenizer


def set_append_token(tokenizer: PreTrainedTokenizerBase, token: str) -> None:
    """Make the fast tokenizer append ``token`` to every text (and to each side of a pair).

    Done with a ``TemplateProcessing`` post-processor, so it is stored in ``tokenizer.json`` and
    honoured by every caller, and truncation keeps room for it (it is a "special token to add").
    An existing post-processor (e.g. one that prepends BOS) runs first.
    """
    from tokenizers import processors

    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"{token!r} is not in the vocabulary; add it first")
    template = processors.TemplateProcessing(
        single=f"$A:0 {token}:0", pair=f"$A:0 {token}:0 $B:1 {token}:1", special_tokens=[(token, token_id)]
    )
    backend = tokenizer.backend_tokenizer
    current = json.loads(backend.to_str()).get("post_processor")
    if current is None or current.get("type") == "ByteLevel" or _is_noop_template(current):
        backend.post_processor = template
    else:
        backend.post_processor = processors.Sequence([backend.post_processor, template])
    if tokenizer("x").input_ids[-1] != token_id:  # some tokenizer classes rebuild their processor
        raise ValueError(f"could not make {type(tokenizer).__name__} append {token!r}")


def _is_noop_template(proc: dict) -> bool:
    """SmolLM2's GGUF tokenizer carries a TemplateProcessing that adds nothing; replace it outright."""
    return proc.get("type") == "TemplateProcessing" and not proc.get("special_tokens") and all(
        "Sequence" in piece for piece in proc.get("single", [])
    )


def _appends(tokenizer: PreTrainedTokenizerBase, token: str) -> bool:
    return tokenizer("x").input_ids[-1] == tokenizer.convert_tokens_to_ids(token)


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.model_max_length = max_length


# ---------------------------------------------------------------------------- model


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row (works for right and left padding)."""
    seq_len = attention_mask.shape[1]
    return seq_len - 1 - attention_mask.flip(1).to(torch.int32).argmax(dim=1)


def _last_token_hidden(
    base: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_mask: bool = True
) -> torch.Tensor:
    """Final hidden state at each row's last real token, shape (B, h).

    ``use_mask=False`` is an exact shortcut for causal models with right padding: a real token
    only attends to earlier positions, which are all real, so the padding after it can never
    change its state; without a mask, SDPA takes its fast causal path.
    """
    out = base(input_ids=input_ids, attention_mask=attention_mask if use_mask else None, use_cache=False)
    hidden = out.last_hidden_state
    idx = last_token_index(attention_mask).to(hidden.device)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


# Encoder-only families: their tokens see the whole sequence, so padding must always be masked.
_BIDIRECTIONAL = {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "deberta", "deberta-v2", "electra",
                  "modernbert", "albert", "camembert"}


class EmbeddingModel(nn.Module):
    """Base LM (no LM head) → last-token hidden state → MLP head → L2-normalised embedding.

    ``head_dim=None`` means no head: the raw, normalised last-token state (baselines).
    """

    def __init__(
        self,
        base: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        head_dim: int | None = 256,
        activation: Activation = "gelu",
        max_length: int = 256,
        append_token: str = EMB_TOKEN,
    ) -> None:
        super().__init__()
        self.base = base
        self.tokenizer = tokenizer
        self.activation = activation
        self.max_length = max_length
        self.append_token = append_token
        h = base.config.hidden_size
        self.head = None if head_dim is None else nn.Sequential(
            nn.Linear(h, h), _ACTIVATIONS[activation](), nn.Linear(h, head_dim)
        )
        _prepare_tokenizer(tokenizer, max_length)

    @property
    def dim(self) -> int:
        return self.base.config.hidden_size if self.head is None else self.head[-1].out_features

    @property
    def is_causal(self) -> bool:
        """Decoder-only backbones (every causal LM's base model) never let a token see the future."""
        return not getattr(self.base.config, "is_encoder_decoder", False) and getattr(
            self.base.config, "model_type", "") not in _BIDIRECTIONAL

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_mask: bool = True) -> torch.Tensor:
        """Training/inference forward; ``use_mask=False`` takes the exact causal shortcut (see
        :func:`_last_token_hidden`), ignored for bidirectional backbones."""
        pooled = _last_token_hidden(self.base, input_ids, attention_mask, use_mask=use_mask or not self.is_causal)
        return self.project(pooled)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled hidden state (B, h) → head → unit vectors (B, dim)."""
        return F.normalize(pooled if self.head is None else self.head(pooled), dim=-1)

    def tokenize(self, texts: list[str], padding: bool = True) -> dict[str, torch.Tensor]:
        """Tokenize with truncation to ``max_length``; the post-processor appends the summary token."""
        return self.tokenizer(texts, padding=padding, truncation=True, max_length=self.max_length,
                              return_tensors="pt" if padding else None)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_causal_lm_folder(
        cls,
        path: str | Path,
        head_dim: int | None = 256,
        activation: Activation = "gelu",
        max_length: int = 256,
        append_token: str | None = EMB_TOKEN,
        device: str | torch.device = "cpu",
    ) -> EmbeddingModel:
        """Start stage 2 from a causal LM folder (the untuned backbone or the stage-1 model).

        ``append_token``: ``<emb>`` (added to the vocabulary if absent; its embedding starts at the
        mean row) — or ``None`` to append the tokenizer's own eos token instead, which an untuned
        model has actually been trained on (used for the raw last-token baselines).
        """
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        base = AutoModel.from_pretrained(path, dtype=torch.float32)
        if append_token is None:
            append_token = tokenizer.eos_token
        else:
            add_special_tokens(base, tokenizer, [append_token])
        if not _appends(tokenizer, append_token):
            set_append_token(tokenizer, append_token)
        model = cls(base, tokenizer, head_dim=head_dim, activation=activation, max_length=max_length,
                    append_token=append_token)
        return model.to(_device(device))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> EmbeddingModel:
        """Load a folder written by :meth:`save_pretrained` (sentence-transformers layout)."""
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        modules = _read_modules(path)
        root = path / modules["Transformer"]["path"]
        max_length = _read_json(root / "sentence_bert_config.json").get("max_seq_length", 256)
        tokenizer = AutoTokenizer.from_pretrained(root)
        base = AutoModel.from_pretrained(root, dtype=torch.float32)
        pooling = _read_json(path / modules["Pooling"]["path"] / "config.json")
        if not (pooling.get("pooling_mode_lasttoken") or pooling.get("pooling_mode") == "lasttoken"):
            raise ValueError(f"{path}: pooling is not last-token; not a larr embedding model")
        dense = [_read_json(path / m["path"] / "config.json") for m in modules["Dense"]]
        head_dim = dense[-1]["out_features"] if dense else None
        activation = _activation_name(dense[0]["activation_function"]) if dense else "gelu"
        appended = tokenizer.convert_ids_to_tokens(tokenizer("x").input_ids[-1])
        model = cls(base, tokenizer, head_dim=head_dim, activation=activation, max_length=max_length,
                    append_token=appended)
        if dense:
            for layer, m in zip((model.head[0], model.head[2]), modules["Dense"], strict=True):
                state = load_file(path / m["path"] / "model.safetensors")
                layer.load_state_dict({"weight": state["linear.weight"], "bias": state["linear.bias"]})
        return model.to(_device(device))

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the sentence-transformers folder atomically (safetensors only)."""
        from larr.io import atomic_dir

        if self.head is not None and len(self.head) != 3:
            raise ValueError("only the Linear → activation → Linear head can be saved")
        path = Path(path)
        with atomic_dir(path) as tmp:
            self.base.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            _write_json(tmp / "sentence_bert_config.json", {"max_seq_length": self.max_length, "do_lower_case": False})
            _write_json(tmp / "config_sentence_transformers.json", _st_config())
            modules = [_module(0, "", "Transformer"), _module(1, "1_Pooling", "Pooling")]
            _write_json(tmp / "1_Pooling" / "config.json", _pooling_config(self.base.config.hidden_size))
            if self.head is not None:
                modules += [_module(2, "2_Dense", "Dense"), _module(3, "3_Dense", "Dense")]
                self._save_dense(self.head[0], self.activation, tmp / "2_Dense")
                self._save_dense(self.head[2], "identity", tmp / "3_Dense")
            modules.append(_module(len(modules), f"{len(modules)}_Normalize", "Normalize"))
            _write_json(tmp / modules[-1]["path"] / "config.json", {})
            _write_json(tmp / "modules.json", modules)
        return path

    @staticmethod
    def _save_dense(layer: nn.Linear, activation: str, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "config.json", {
            "in_features": layer.in_features, "out_features": layer.out_features, "bias": True,
            "activation_function": _TORCH_NAMES[activation],
        })
        save_file({"linear.weight": layer.weight.detach().cpu().contiguous(),
                   "linear.bias": layer.bias.detach().cpu().contiguous()}, str(folder / "model.safetensors"))


def _device(device: str | torch.device) -> torch.device:
    return resolve_device(device) if isinstance(device, str) else device


# ---------------------------------------------------------------------------- sentence-transformers layout
# Legacy type names ("sentence_transformers.models.X") and pooling keys are what every
# sentence-transformers release from 2.x to 6.x understands; 6.x maps them to its new classes.


def _module(idx: int, path: str, kind: str) -> dict:
    return {"idx": idx, "name": str(idx), "path": path, "type": f"sentence_transformers.models.{kind}"}


def _pooling_config(hidden: int) -> dict:
    modes = ["cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken"]
    return {"word_embedding_dimension": hidden, **{f"pooling_mode_{m}": m == "lasttoken" for m in modes},
            "include_prompt": True}


def _st_config() -> dict:
    import sentence_transformers
    import transformers

    return {"__version__": {"sentence_transformers": sentence_transformers.__version__,
                            "transformers": transformers.__version__, "pytorch": torch.__version__},
            "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}


def _read_modules(path: Path) -> dict:
    """modules.json → {"Transformer": entry, "Pooling": entry, "Dense": [entries], "Normalize": entry}."""
    if not (path / "modules.json").is_file():
        raise ValueError(f"{path}: no modules.json; not a saved embedding model")
    out: dict = {"Dense": []}
    for m in sorted(_read_json(path / "modules.json"), key=lambda m: m["idx"]):
        kind = m["type"].rsplit(".", 1)[-1]
        if kind == "Dense":
            out["Dense"].append(m)
        elif kind in ("Transformer", "Pooling", "Normalize"):
            out[kind] = m
        else:
            raise ValueError(f"{path}: unsupported module {m['type']}")
    if "Transformer" not in out or "Pooling" not in out or len(out["Dense"]) not in (0, 2):
        raise ValueError(f"{path}: expected Transformer, Pooling, 0 or 2 Dense and Normalize modules")
    return out


def _activation_name(torch_name: str) -> Activation:
    for short, full in _TORCH_NAMES.items():
        if full == torch_name and short in _ACTIVATIONS:
            return short  # type: ignore[return-value]
    raise ValueError(f"unsupported head activation {torch_name}")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------------------- inference


class Encoder:
    """Frozen, batched text → vector encoding with length bucketing.

    Texts are tokenized once, sorted by token length and cut into batches of neighbours, so a
    batch is padded only to its own (nearly uniform) length: a batch is cut early rather than
    carry more than ~10% padding (see :func:`length_buckets`), and it respects a token budget,
    so a batch of long texts is made smaller rather than blowing up memory.
    """

    def __init__(
        self,
        model: EmbeddingModel,
        device: str | torch.device = "auto",
        max_batch_tokens: int = 16384,
        compile: bool = False,
    ):
        """``compile=True`` runs the base model through ``torch.compile(dynamic=True)``: it fuses the
        element-wise work (norms, rotary embeddings, SiLU) between the matmuls, about 1.2-2× faster
        on CPU, but the first call compiles for minutes, so it only pays off for large jobs."""
        self.device = _device(device)
        self.model = model.to(self.device).eval()
        self.max_batch_tokens = max_batch_tokens
        self._base = torch.compile(self.model.base, dynamic=True) if compile else self.model.base

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "auto") -> Encoder:
        """A stage-2 folder (written by :meth:`EmbeddingModel.save_pretrained`)."""
        return cls(EmbeddingModel.from_pretrained(path), device=device)

    @classmethod
    def from_causal_lm(cls, path: str | Path, device: str | torch.device = "auto", max_length: int = 256) -> Encoder:
        """Raw last-token mode for baselines: the untuned backbone or the stage-1 model, no head.

        The tokenizer's eos token is appended as the pooled position (what an untuned model knows).
        """
        model = EmbeddingModel.from_causal_lm_folder(path, head_dim=None, append_token=None, max_length=max_length)
        return cls(model, device=device)

    @property
    def dim(self) -> int:
        return self.model.dim

    def buckets(self, lengths: list[int], batch_size: int) -> list[np.ndarray]:
        """The batches :meth:`encode` runs (GPUs want bigger matmuls before padding is worth cutting)."""
        min_tokens = 4096 if self.device.type == "cuda" else 512
        return list(length_buckets(lengths, batch_size, self.max_batch_tokens, min_batch_tokens=min_tokens))

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Encode ``texts`` → float32 array (len(texts), dim) of unit rows, in input order."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.model.tokenize(list(texts), padding=False)["input_ids"]
        batches = list(self.buckets([len(x) for x in ids], batch_size))
        bar = _progress(len(texts), progress)
        with torch.inference_mode():
            for rows in batches:
                input_ids, mask = _pad([ids[i] for i in rows], self.model.tokenizer.pad_token_id, self.device)
                pooled = _last_token_hidden(self._base, input_ids, mask, use_mask=not self.model.is_causal)
                vecs = self.model.project(pooled)
                out[rows] = vecs.float().cpu().numpy()
                bar.update(len(rows))
        bar.close()
        return out


def length_buckets(
    lengths: list[int],
    batch_size: int,
    max_batch_tokens: int | None = None,
    max_waste: float = 0.1,
    min_batch_tokens: int = 512,
) -> Iterator[np.ndarray]:
    """Yield index arrays over texts sorted longest first, cut so that padding stays small.

    A batch ends when it holds ``batch_size`` texts, when one more text would pass
    ``max_batch_tokens`` padded tokens, or when adding it would make more than ``max_waste`` of
    the batch padding — unless the batch is still under ``min_batch_tokens`` (tiny matmuls
    are slower per token than a little padding). Longest first, so an out-of-memory error
    shows at once rather than at the end.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batch: list[int] = []
    longest = real = 0
    for i in order:
        length = int(lengths[i])
        if batch:
            n = len(batch) + 1
            full = n > batch_size or (max_batch_tokens is not None and n * longest > max_batch_tokens)
            wasteful = 1 - (real + length) / (n * longest) > max_waste and len(batch) * longest >= min_batch_tokens
            if full or wasteful:
                yield np.asarray(batch)
                batch = []
        if not batch:
            longest, real = max(length, 1), 0
        batch.append(int(i))
        real += length
    if batch:
        yield np.asarray(batch)


def _pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a list of id lists into (input_ids, attention_mask) tensors."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return input_ids.to(device), mask.to(device)


class _NoBar:
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encode", unit="text")
