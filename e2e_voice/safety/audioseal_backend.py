"""Meta's AudioSeal as a second watermark backend (``watermark.backend=audioseal``), 16 kHz, 16-bit payload.

AudioSeal is a SEANet generator that predicts an additive watermark signal and a SEANet detector that gives,
per sample, the probability that it is watermarked (plus 16 message bits). The network code comes from the
``audioseal`` package; this module only loads the official checkpoint files (``generator_base.pth`` and
``detector_base.pth`` from https://huggingface.co/facebook/audioseal) from a local directory, and wraps
them in the :class:`~e2e_voice.safety.watermark.Watermarker` interface.

Checkpoint format (what ``audioseal.AudioSeal.load_generator``/``load_detector`` read):
``{"xp.cfg": <training config, an OmegaConf DictConfig>, "model": <state dict>}``, state dict keys in the
pre-TorchScript layout (``encoder.model.0.conv.conv.weight_g``/``weight_v``/``bias``: weight-normed convs).
The network shape comes from the package's 16-bit model cards, which win over ``xp.cfg``, as in the package.

Audio at any rate is resampled to 16 kHz for the networks; the watermark the generator predicts is resampled
back and added to the original signal, so embedding leaves the input's full band untouched apart from the
mark. Streaming uses :class:`~e2e_voice.safety.watermark.StreamingWatermarker` (bounded context, one frame of
delay), like Perth.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import typing
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2e_voice.assets.registry import CorruptModelError, ModelNotAvailableError, model_dir, resolve
from e2e_voice.audio.io import resample
from e2e_voice.safety.watermark import Detection, WindowState, _fit

log = logging.getLogger(__name__)

AUDIOSEAL_RATE = 16_000
NBITS = 16
GENERATOR_FILE = "generator_base.pth"
DETECTOR_FILE = "detector_base.pth"
GENERATOR_CARD = "audioseal_wm_16bits"
DETECTOR_CARD = "audioseal_detector_16bits"
MIN_DETECT_SAMPLES = 1_600  # 100 ms at 16 kHz: five latent frames of the detector's SEANet
DETECT_THRESHOLD = 0.5
HOW_TO_GET = (
    f"download {GENERATOR_FILE} and {DETECTOR_FILE} from https://huggingface.co/facebook/audioseal into a"
    " directory and set watermark.model_path=<that directory> (or --model-path), or set E2E_VOICE_ALLOW_HUB=1"
    " to fetch them when online"
)


class AudioSealLoadError(RuntimeError):
    """An AudioSeal checkpoint is missing, unreadable, or does not fit the 16-bit model."""


def message_bits(message: int) -> torch.Tensor:
    """The 16-bit payload ``message`` as a ``[1, 16]`` tensor of 0/1, most significant bit first."""
    if not 0 <= message < 2**NBITS:
        raise ValueError(f"watermark message must be in [0, {2**NBITS}), got {message}")
    return torch.tensor([[(message >> (NBITS - 1 - i)) & 1 for i in range(NBITS)]], dtype=torch.long)


def _safe_globals() -> list[Any]:
    # What an OmegaConf DictConfig (the checkpoints' "xp.cfg") needs to unpickle under weights_only=True.
    from omegaconf import DictConfig, ListConfig, nodes
    from omegaconf.base import ContainerMetadata, Metadata

    node_types = [nodes.AnyNode, nodes.StringNode, nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode]
    builtins = [dict, list, defaultdict, int, float, str, bool]
    return [DictConfig, ListConfig, ContainerMetadata, Metadata, *node_types, typing.Any, *builtins]


def _read_checkpoint(path: Path, allow_pickle: bool) -> dict[str, Any]:
    if not path.is_file():
        raise AudioSealLoadError(f"AudioSeal checkpoint {path} is missing: {HOW_TO_GET}")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; this is something else
            raise AudioSealLoadError(
                f"AudioSeal checkpoint {path} is unreadable (not a torch checkpoint: {str(exc)[:200]});"
                f" {HOW_TO_GET}"
            ) from exc
        if not allow_pickle:
            raise AudioSealLoadError(
                f"AudioSeal checkpoint {path} holds objects that restricted loading refuses ({exc}); if you"
                " trust the file, set watermark.audioseal.allow_pickle=true (or --allow-pickle)"
            ) from exc
        log.warning("loading %s with unrestricted unpickling (allow_pickle=true)", path)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or not a torch file at all
        raise AudioSealLoadError(
            f"AudioSeal checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); {HOW_TO_GET}"
        ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model", ckpt.get("best_state")), dict):
        raise AudioSealLoadError(
            f"{path} is not an AudioSeal checkpoint (expected a dict with a 'model' state dict); {HOW_TO_GET}"
        )
    return ckpt


def _build(card: str, ckpt: dict[str, Any], kind: str) -> torch.nn.Module:
    """Build the network from the package's model card and load the checkpoint's weights into it."""
    from audioseal.builder import (
        AudioSealDetectorConfig,
        AudioSealWMConfig,
        create_detector,
        create_generator,
    )
    from audioseal.loader import (
        AudioSeal,
        convert_state_dict_for_scriptable_model,
        load_local_model_config,
        load_state_dict,
    )
    from omegaconf import OmegaConf

    card_cfg = load_local_model_config(card)
    assert card_cfg is not None, f"audioseal package lacks its model card {card}"
    card_dict = OmegaConf.to_container(card_cfg)
    assert isinstance(card_dict, dict), card_dict
    config: dict[str, Any] = {str(k): v for k, v in card_dict.items() if k != "checkpoint"}
    xp = ckpt.get("xp.cfg")
    if xp is not None:
        xp_dict = OmegaConf.to_container(xp) if not isinstance(xp, dict) else xp
        assert isinstance(xp_dict, dict), type(xp_dict)
        config = {**{str(k): v for k, v in xp_dict.items()}, **config}
    state = ckpt["best_state"]["model"] if "best_state" in ckpt else ckpt["model"]
    state = convert_state_dict_for_scriptable_model(state)
    if kind == "generator":
        model: torch.nn.Module = create_generator(
            AudioSeal.parse_config(config, AudioSealWMConfig, nbits=NBITS)
        )
    else:
        model = create_detector(AudioSeal.parse_config(config, AudioSealDetectorConfig, nbits=NBITS))
    try:
        load_state_dict(model, state)
    except (RuntimeError, AssertionError, AttributeError, KeyError) as exc:
        raise AudioSealLoadError(
            f"AudioSeal {kind} weights do not fit the 16-bit model ({type(exc).__name__}: {str(exc)[:300]}); "
            f"{HOW_TO_GET}"
        ) from exc
    return model.eval()


def _eager() -> contextlib.AbstractContextManager[None]:
    """The package's SEANet forwards are ``torch.compile``d on first call (and again per new length):
    minutes on a small CPU for clips of every length. Run them eagerly instead."""
    from audioseal.libs.moshi.utils.compile import no_compile

    return no_compile()


def _resolve_dir(model_path: str | Path | None) -> Path:
    cached = model_dir("audioseal")
    if model_path is None and (cached / DETECTOR_FILE).is_file():
        return cached  # a copy placed in the cache by hand (it is not in the offline bundle)
    try:
        return resolve("audioseal", model_path)
    except (ModelNotAvailableError, CorruptModelError) as exc:
        raise AudioSealLoadError(f"{exc}. To use watermark.backend=audioseal: {HOW_TO_GET}") from exc


class AudioSealWatermarker:
    """Embed and detect AudioSeal watermarks in mono audio of any sample rate.

    The generator is loaded on the first :meth:`embed`, so a directory holding only the detector is enough
    for detection.

    Args:
        model_path: directory holding ``generator_base.pth`` and ``detector_base.pth`` (default: the
            registry's ``audioseal``: the hub when ``E2E_VOICE_ALLOW_HUB=1``, else an error naming how to
            get it).
        message: the 16-bit payload embedded in every mark.
        alpha: watermark strength (1.0 as trained).
        threshold: fraction of samples the detector must call watermarked for ``present``.
        allow_pickle: load checkpoints that restricted ``torch.load`` refuses (trusted files only).
    """

    name = "audioseal"

    def __init__(
        self,
        model_path: str | Path | None = None,
        message: int = 0,
        alpha: float = 1.0,
        threshold: float = DETECT_THRESHOLD,
        allow_pickle: bool = False,
    ) -> None:
        self.directory = _resolve_dir(model_path)
        if self.directory.is_file():
            raise AudioSealLoadError(
                f"watermark.model_path for AudioSeal must be a directory holding {GENERATOR_FILE} and"
                f" {DETECTOR_FILE}, got the file {self.directory}"
            )
        self.message = message_bits(message)
        self.alpha, self.threshold, self.allow_pickle = alpha, threshold, allow_pickle
        self.detector = _build(
            DETECTOR_CARD, _read_checkpoint(self.directory / DETECTOR_FILE, allow_pickle), "detector"
        )
        self._generator: torch.nn.Module | None = None

    @property
    def generator(self) -> torch.nn.Module:
        if self._generator is None:
            ckpt = _read_checkpoint(self.directory / GENERATOR_FILE, self.allow_pickle)
            self._generator = _build(GENERATOR_CARD, ckpt, "generator")
        return self._generator

    @torch.no_grad()
    def watermark_signal(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """The additive watermark for ``audio`` (``[T]``), at ``sample_rate``, already scaled by ``alpha``."""
        x = np.asarray(audio, np.float32).reshape(-1)
        y = torch.from_numpy(resample(x, sample_rate, AUDIOSEAL_RATE))[None, None]  # [1, 1, T16]
        with _eager():
            wm = self.generator.get_watermark(y, AUDIOSEAL_RATE, message=self.message)[0, 0]  # type: ignore[operator]
        return self.alpha * _fit(resample(wm.numpy(), AUDIOSEAL_RATE, sample_rate), len(x))

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Return ``audio`` (float32 ``[T]``) with a watermark, same length and rate."""
        x = np.asarray(audio, np.float32).reshape(-1)
        if x.size == 0:
            return x.copy()
        return (x + self.watermark_signal(x, sample_rate)).astype(np.float32)

    def embed_window(self, window: np.ndarray, sample_rate: int, state: WindowState) -> np.ndarray:
        """One stream window: AudioSeal keeps no state across windows (``state`` is unused)."""
        return self.embed(window, sample_rate)

    @torch.no_grad()
    def scores(self, audio: np.ndarray, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample watermark probability ``[T16]`` and the decoded message bit probabilities ``[16]``."""
        x = np.asarray(audio, np.float32).reshape(-1)
        y = resample(x, sample_rate, AUDIOSEAL_RATE)
        if y.size < MIN_DETECT_SAMPLES:
            raise ValueError(
                f"need at least {MIN_DETECT_SAMPLES / AUDIOSEAL_RATE * 1000:.0f} ms of audio to detect a"
                " watermark"
            )
        with _eager():
            probs, bits = self.detector(
                torch.from_numpy(y)[None, None], AUDIOSEAL_RATE
            )  # [1, 2, T16], [1, 16]
        return probs[0, 1], bits[0]

    def confidence(self, audio: np.ndarray, sample_rate: int) -> float:
        """Fraction of samples the detector calls watermarked (``AudioSealDetector.detect_watermark``)."""
        p, _ = self.scores(audio, sample_rate)
        return float((p > 0.5).float().mean())

    def detect(self, audio: np.ndarray, sample_rate: int) -> Detection:
        c = self.confidence(audio, sample_rate)
        return Detection(confidence=c, present=c >= self.threshold)
