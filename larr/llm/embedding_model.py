"""Stage-2 embedding model: last-token pooling over the LLM + an MLP head.

A text is encoded as the final hidden state at its last token (the ``<emb>`` token the tokenizer
appends, :mod:`larr.llm.tokens`), passed through a small MLP head and L2-normalised (cosine =
dot product). The model is saved in the sentence-transformers layout (:mod:`larr.llm.st_folder`),
so it is usable outside larr; :class:`larr.llm.encode.Encoder` is the fast inference path.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from larr.device import resolve_device
from larr.llm import st_folder
from larr.llm.backbone import add_special_tokens
from larr.llm.tokens import (
    EMB_TOKEN,
    appended_token,
    appends,
    prepare_tokenizer,
    set_append_token,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Activation = Literal["gelu", "tanh"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "tanh": nn.Tanh}

# Encoder-only families: their tokens see the whole sequence, so padding must always be masked.
_BIDIRECTIONAL = {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "deberta", "deberta-v2", "electra",
                  "modernbert", "albert", "camembert"}


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row (works for right and left padding)."""
    seq_len = attention_mask.shape[1]
    return seq_len - 1 - attention_mask.flip(1).to(torch.int32).argmax(dim=1)


def last_token_hidden(
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
        prepare_tokenizer(tokenizer, max_length)

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
        :func:`last_token_hidden`), ignored for bidirectional backbones."""
        pooled = last_token_hidden(self.base, input_ids, attention_mask, use_mask=use_mask or not self.is_causal)
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
        if not appends(tokenizer, append_token):
            set_append_token(tokenizer, append_token)
        model = cls(base, tokenizer, head_dim=head_dim, activation=activation, max_length=max_length,
                    append_token=append_token)
        return model.to(resolve_device(device))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> EmbeddingModel:
        """Load a folder written by :meth:`save_pretrained` (sentence-transformers layout)."""
        from transformers import AutoModel, AutoTokenizer

        folder = st_folder.read_folder(Path(path))
        tokenizer = AutoTokenizer.from_pretrained(folder.root)
        base = AutoModel.from_pretrained(folder.root, dtype=torch.float32)
        model = cls(base, tokenizer, head_dim=folder.head_dim, activation=folder.activation,  # type: ignore[arg-type]
                    max_length=folder.max_length, append_token=appended_token(tokenizer))
        if folder.dense:
            for layer, state in zip((model.head[0], model.head[2]), folder.dense, strict=True):
                layer.load_state_dict(state)
        return model.to(resolve_device(device))

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the sentence-transformers folder atomically (safetensors only)."""
        from larr.io import atomic_dir

        if self.head is not None and len(self.head) != 3:
            raise ValueError("only the Linear → activation → Linear head can be saved")
        head = [] if self.head is None else [(self.head[0], self.activation), (self.head[2], "identity")]
        path = Path(path)
        with atomic_dir(path) as tmp:
            self.base.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            st_folder.write_folder(tmp, self.max_length, self.base.config.hidden_size, head)
        return path
