"""The summary token: make a tokenizer append ``<emb>`` to every text.

To give every text the same, dedicated "summary" position, the tokenizer's post-processor
appends ``<emb>`` to every input. Because the token is appended by the tokenizer itself (saved
in ``tokenizer.json``), our encoder, ``sentence_transformers.SentenceTransformer`` and anything
else that calls the tokenizer encode identically.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

EMB_TOKEN = "<emb>"


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


def appends(tokenizer: PreTrainedTokenizerBase, token: str) -> bool:
    """Does the tokenizer already end every text with ``token``?"""
    return tokenizer("x").input_ids[-1] == tokenizer.convert_tokens_to_ids(token)


def appended_token(tokenizer: PreTrainedTokenizerBase) -> str:
    """The token the tokenizer appends to every text (read back from a saved folder)."""
    return tokenizer.convert_ids_to_tokens(tokenizer("x").input_ids[-1])


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
    """Right padding (with eos where there is no pad token) and ``max_length`` truncation."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.model_max_length = max_length
