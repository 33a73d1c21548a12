from __future__ import annotations

import yaml
import pytest

from larr.config import ConfigError, load_config, save_config


def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\ndata:\n  preset: quick\n")
    cfg = load_config(f, ["data.seed=7", "pretrain.target_modules=[q_proj, v_proj]", "device=cpu"])
    assert cfg.seed == 3 and cfg.data.preset == "quick" and cfg.data_seed == 7
    assert cfg.pretrain.target_modules == ["q_proj", "v_proj"] and cfg.device == "cpu"
    assert load_config(f).data_seed == 3  # data seed falls back to the global seed


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["contrastive.temperature=0.1"])
    path = save_config(cfg, tmp_path / "run")
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["contrastive"]["temperature"] == 0.1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.preset=huge"], "data.preset"),
        (["data.sede=1"], "data.sede"),
        (["seed"], "not of the form key=value"),
        (["pretrain.lr=fast"], "pretrain.lr"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(None, overrides)
    assert "\n" not in str(exc.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_pair_weights_override_one_type_and_reject_unknown_ones(tmp_path):
    w = load_config(None, ["contrastive.weights.user_user=0"]).contrastive.weights
    assert w == {"user_user": 0.0, "shop_shop": 1.0, "user_shop": 1.0, "scene_shop": 0.0, "scene_scene": 0.0}
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"contrastive": {"weights": {"scene_shop": 0.5}}}))
    assert load_config(f).contrastive.weights["scene_shop"] == 0.5 and load_config(f).contrastive.weights["user_user"] == 1
    with pytest.raises(ConfigError, match="unknown pair type 'shop_user'"):
        load_config(None, ["contrastive.weights.shop_user=1"])
