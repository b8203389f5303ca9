"""Training runs say which device they use: a GPU recipe without a GPU stops with the fix, not on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from e2e_voice.constants import CONFIG_DIR
from train.codec import CodecTrainer
from train.device import use_cuda
from train.lm import train


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_and_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert use_cuda("cpu") is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert use_cuda("cuda") is True
    for bad in ("gpu", "cuda:1"):  # accelerate places processes on GPUs; an index here would be ignored
        with pytest.raises(ValueError, match=f"'cpu' or 'cuda', got '{bad}'"):
            use_cuda(bad)


def test_cuda_without_a_gpu_says_how_to_go_on(no_gpu: None) -> None:
    with pytest.raises(ValueError, match=r"no CUDA device.*override device=cpu"):
        use_cuda("cuda")


def test_codec_gpu_recipe_without_a_gpu_stops_before_building(no_gpu: None, tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train_codec", overrides=["+experiment=codec_gpu", "train.wandb.mode=disabled"])
    assert cfg.device == "cuda"
    with pytest.raises(ValueError, match="device=cuda but torch sees no CUDA device"):
        CodecTrainer(cfg, tmp_path)
    assert not list(tmp_path.iterdir())


def test_lm_gpu_recipe_without_a_gpu_stops_before_building(no_gpu: None, tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train_lm",
            overrides=["+experiment=lm_smol_gpu", f"out_dir={tmp_path}"],
        )
    assert cfg.device == "cuda"
    with pytest.raises(ValueError, match="device=cuda but torch sees no CUDA device"):
        train(cfg)
