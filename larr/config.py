"""Typed configuration: pydantic models, loaded from YAML, with dotted overrides.

``load_config("configs/demo.yaml", ["data.seed=7"])`` reads the file, applies each
``key=value`` override (the value is parsed as YAML, so ``7`` is an int and ``[1, 2]`` a
list), and validates the result. Unknown keys are errors, so a typo never silently does
nothing. The config actually used is saved into the run directory with :func:`save_config`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where impressions come from."""

    source: Literal["synth", "movielens"] = "synth"
    preset: Literal["quick", "demo", "large"] = Field(
        "demo", description="Size of the generated world (synth only)."
    )
    seed: int | None = Field(None, description="Generator seed; defaults to the top-level seed.")


class LLMConfig(_Strict):
    """The backbone causal LM shared by stages 1-2."""

    model: str = Field("smollm2", description="'smollm2' (the packaged default) or a Hugging Face model folder.")
    max_length: int = Field(256, description="Token limit for encoded texts.")


class CorpusConfig(_Strict):
    """Stage-1 corpus: shop (and user) documents with field tokens."""

    heldout_frac: float = Field(0.1, description="Share of shops held out for perplexity evaluation.")
    include_users: bool = True


class PretrainConfig(_Strict):
    """Stage 1: continual pretraining (next-token loss)."""

    method: Literal["lora", "full"] = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    seq_len: int = 256
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None
    warmup_ratio: float = 0.05
    checkpoint_every: int = 50
    log_every: int = 10


class ContrastiveConfig(_Strict):
    """Stage 2: contrastive fine-tuning into a text-embedding model."""

    temperature: float = 0.05
    batch_size: int = 32
    lr: float = 1e-4
    epochs: float = 1.0
    max_steps: int | None = None
    weights: dict[str, float] = {"user_user": 1.0, "shop_shop": 1.0, "user_shop": 1.0}
    head_dim: int = 256


class Config(_Strict):
    """Everything one run needs. Each stage reads its own section."""

    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    data: DataConfig = DataConfig()
    llm: LLMConfig = LLMConfig()
    corpus: CorpusConfig = CorpusConfig()
    pretrain: PretrainConfig = PretrainConfig()
    contrastive: ContrastiveConfig = ContrastiveConfig()

    @property
    def data_seed(self) -> int:
        return self.seed if self.data.seed is None else self.data.seed


class ConfigError(ValueError):
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

    out = Path(run_dir) / "config.yaml"
    atomic_write_text(out, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return out
