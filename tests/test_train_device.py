"""Training runs say which device they use: a GPU recipe without a GPU stops with the fix, not on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from e2e_voice.constants import CONFIG_DIR
from e2e_voice.devices import check_device
from e2e_voice.engine import load_engine
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
    with pytest.raises(ValueError, match=r"no CUDA device.*set device=cpu \(and a CPU-sized batch"):
        use_cuda("cuda")


def test_engine_device_is_checked_before_loading(no_gpu: None, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="device=cuda but torch sees no CUDA device"):
        load_engine(tmp_path / "nowhere", device="cuda")  # the device, not the missing checkpoint, first
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N', got 'gpu0'"):
        check_device("gpu0")
    assert check_device("cpu") == torch.device("cpu")


def test_cuda_index_beyond_the_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="cuda:3 but torch sees 1 CUDA device"):
        check_device("cuda:3")


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
