"""Hydra configs compose, and the objects they name can be built."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from e2e_voice.constants import CONFIG_DIR

GROUPS = ["codec", "lm", "data", "train", "eval", "cascade", "serve", "experiment"]


def test_every_group_exists() -> None:
    for group in GROUPS:
        assert list((CONFIG_DIR / group).glob("*.yaml")), f"configs/{group}/ has no options"


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_experiments_compose(experiment: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={experiment}"])
    assert cfg.train.wandb.mode == "offline"
    OmegaConf.to_container(cfg.train, resolve=True)


def test_tiny_experiment_overrides() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        base = compose("config")
        tiny = compose("config", overrides=["+experiment=tiny"])
    assert base.train.steps > tiny.train.steps
    assert tiny.codec.dimension < base.codec.dimension
    assert tiny.run_name == "tiny"


@pytest.mark.parametrize("codec", sorted(p.stem for p in (CONFIG_DIR / "codec").glob("*.yaml")))
def test_codec_configs_build(codec: str) -> None:
    import torch

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"codec={codec}"])
    model = instantiate(cfg.codec, _convert_="all")
    with torch.no_grad():
        codes = model.encode(torch.zeros(1, 1, 1920 * 2))  # [B, K, T]
    assert tuple(codes.shape) == (1, cfg.codec.num_codebooks, 2)


def test_demo_config_composes() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("demo", overrides=["codec=tiny"])
    assert cfg.cascade.stt.model == "whisper-base"
    assert cfg.codec.n_filters == 16


def test_wandb_offline_everywhere() -> None:
    for path in Path(CONFIG_DIR, "train").glob("*.yaml"):
        assert OmegaConf.load(path).wandb.mode == "offline", path
