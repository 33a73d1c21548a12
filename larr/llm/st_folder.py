"""The sentence-transformers folder layout of a stage-2 model (read and written without the library).

::

    DIR/  config.json model.safetensors tokenizer.json ...   base model (AutoModel) + tokenizer
          sentence_bert_config.json  modules.json  config_sentence_transformers.json
          1_Pooling/  (lasttoken)   2_Dense/ (h→h, activation)   3_Dense/ (h→d)   4_Normalize/

Legacy type names ("sentence_transformers.models.X") and pooling keys are what every
sentence-transformers release from 2.x to 6.x understands; 6.x maps them to its new classes.
The base model and tokenizer files are written by their own ``save_pretrained``; this module
writes and reads everything around them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# A head activation's short name (``contrastive`` config, :class:`EmbeddingModel`) → its torch class path.
TORCH_NAMES = {"gelu": "torch.nn.modules.activation.GELU", "tanh": "torch.nn.modules.activation.Tanh",
               "identity": "torch.nn.modules.linear.Identity"}


@dataclass
class Folder:
    """What :func:`read_folder` found: the base model's folder and the pooling → head pipeline."""

    root: Path  # the Transformer module's folder (base model + tokenizer)
    max_length: int
    head_dim: int | None  # None: no Dense modules (raw, normalised last-token state)
    activation: str
    dense: list[dict[str, torch.Tensor]]  # per Dense module: {"weight", "bias"} (empty without a head)


def write_folder(folder: Path, max_length: int, hidden: int, head: list[tuple[nn.Linear, str]]) -> None:
    """Everything but the base model and tokenizer: ``head`` is [(h→h, activation), (h→d, "identity")] or []."""
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    _write_json(folder / "config_sentence_transformers.json", _st_config())
    modules = [_module(0, "", "Transformer"), _module(1, "1_Pooling", "Pooling")]
    _write_json(folder / "1_Pooling" / "config.json", _pooling_config(hidden))
    for layer, activation in head:
        idx = len(modules)
        modules.append(_module(idx, f"{idx}_Dense", "Dense"))
        _save_dense(layer, activation, folder / modules[-1]["path"])
    modules.append(_module(len(modules), f"{len(modules)}_Normalize", "Normalize"))
    _write_json(folder / modules[-1]["path"] / "config.json", {})
    _write_json(folder / "modules.json", modules)


def read_folder(path: Path) -> Folder:
    """Parse a folder written by :func:`write_folder`; raise ``ValueError`` if it is not one."""
    from safetensors.torch import load_file

    modules = _read_modules(path)
    root = path / modules["Transformer"]["path"]
    max_length = _read_json(root / "sentence_bert_config.json").get("max_seq_length", 256)
    pooling = _read_json(path / modules["Pooling"]["path"] / "config.json")
    if not (pooling.get("pooling_mode_lasttoken") or pooling.get("pooling_mode") == "lasttoken"):
        raise ValueError(f"{path}: pooling is not last-token; not a larr embedding model")
    configs = [_read_json(path / m["path"] / "config.json") for m in modules["Dense"]]
    dense = []
    for m in modules["Dense"]:
        state = load_file(path / m["path"] / "model.safetensors")
        dense.append({"weight": state["linear.weight"], "bias": state["linear.bias"]})
    return Folder(root=root, max_length=max_length, head_dim=configs[-1]["out_features"] if configs else None,
                  activation=_activation_name(configs[0]["activation_function"]) if configs else "gelu",
                  dense=dense)


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


def _save_dense(layer: nn.Linear, activation: str, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "config.json", {
        "in_features": layer.in_features, "out_features": layer.out_features, "bias": True,
        "activation_function": TORCH_NAMES[activation],
    })
    save_file({"linear.weight": layer.weight.detach().cpu().contiguous(),
               "linear.bias": layer.bias.detach().cpu().contiguous()}, str(folder / "model.safetensors"))


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


def _activation_name(torch_name: str) -> str:
    for short, full in TORCH_NAMES.items():
        if full == torch_name and short != "identity":
            return short
    raise ValueError(f"unsupported head activation {torch_name}")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
