"""Frozen teachers for the codec's semantic distillation, computed without gradients.

A teacher maps audio ``[B, 1, T]`` at 24 kHz to features ``[B, T_t, D]`` and says its width ``dim``.
Mimi distilled WavLM; offline we default to the Whisper base encoder from the model bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from e2e_voice.audio.io import resample
from e2e_voice.constants import SAMPLE_RATE

TEACHER_RATE = 16_000


class Teacher(Protocol):
    dim: int

    def __call__(self, audio: torch.Tensor) -> torch.Tensor: ...


class WhisperEncoderTeacher:
    """Whisper's encoder (CTranslate2, from ``resolve("whisper-base")``) as a frozen teacher.

    Whisper is trained on 30 s windows; we feed the crop's own length instead (CTranslate2 accepts
    shorter inputs), which is ~6x cheaper for 2 s crops. Outputs are at 50 Hz.

    Args:
        model: registry name of the CTranslate2 Whisper model.
        model_path: explicit local directory, wins over ``model``.
        compute_type: CTranslate2 compute type (int8 on CPU).
        device: ``cpu`` or ``cuda``.
    """

    def __init__(
        self,
        model: str = "whisper-base",
        model_path: str | None = None,
        compute_type: str = "int8",
        device: str = "cpu",
    ) -> None:
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        from e2e_voice.assets import resolve

        path = resolve(model, model_path)
        self._model = ctranslate2.models.Whisper(str(path), device=device, compute_type=compute_type)
        n_mels = int(getattr(self._model, "n_mels", 80))
        self._features = FeatureExtractor(feature_size=n_mels)
        self._storage = ctranslate2.StorageView
        self.dim = int(self._encode(np.zeros((1, n_mels, 200), np.float32)).shape[-1])

    def _encode(self, feats: np.ndarray) -> np.ndarray:
        return np.array(self._model.encode(self._storage.from_array(np.ascontiguousarray(feats))))

    @torch.no_grad()
    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio`` [B, 1, T] at 24 kHz -> encoder states [B, T_t, D] (50 Hz)."""
        x = audio[:, 0].detach().float().cpu().numpy()
        x16 = resample(x, SAMPLE_RATE, TEACHER_RATE)  # [B, T16]
        mels = np.stack([self._features(row)[:, :-1] for row in x16])  # drop the trailing pad frame
        if mels.shape[-1] % 2:  # the encoder's stride-2 conv wants an even frame count
            mels = mels[..., :-1]
        return torch.from_numpy(self._encode(mels.astype(np.float32))).to(audio.device)


class HFTeacher:
    """A transformers speech encoder (WavLM, HuBERT, wav2vec2) from a local checkpoint directory.

    Args:
        path: local directory of a transformers checkpoint (no hub access here).
        layer: hidden-state index to distill (Mimi used an inner WavLM layer).
        device: torch device.
    """

    def __init__(self, path: str, layer: int = -1, device: str = "cpu") -> None:
        from transformers import AutoModel

        if not Path(path).is_dir():
            raise FileNotFoundError(
                f"teacher checkpoint directory {path} not found; download e.g. microsoft/wavlm-base-plus"
                " there, or use the offline default teacher=whisper"
            )
        self._model = AutoModel.from_pretrained(path).to(device).eval()
        self.layer = layer
        self.dim = int(self._model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        x = resample(audio[:, 0].detach().float().cpu().numpy(), SAMPLE_RATE, TEACHER_RATE)
        x = (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-7)
        dev = next(self._model.parameters()).device
        out = self._model(torch.from_numpy(x).to(dev), output_hidden_states=True)
        return out.hidden_states[self.layer].to(audio.device)


TEACHER_FRAME_RATE = 50  # Whisper's encoder and WavLM/HuBERT both give 50 features per second


class TeacherCache:
    """A teacher's features of whole clips, computed once, then cut to each batch's crops.

    Running the teacher on every batch cost as much as the codec's own training step on CPU. Features
    of a whole clip (in windows of ``window_s``) also see more context than a 1-2 s crop would, closer to
    Mimi's long-context WavLM targets. Features are kept in float16 (~50 KB per second of audio for
    Whisper base's 512 dimensions).

    Args:
        teacher: the frozen teacher.
        clips: the sampler's clips, mono 24 kHz ``[T]``.
        window_s: longest piece given to the teacher at once (Whisper takes at most 30 s).
    """

    def __init__(self, teacher: Teacher, clips: list[torch.Tensor], window_s: float = 20.0) -> None:
        self.hop = SAMPLE_RATE // TEACHER_FRAME_RATE  # 480 samples per feature
        self.dim = teacher.dim
        window = max(int(window_s * SAMPLE_RATE) // self.hop, 1) * self.hop
        min_piece = SAMPLE_RATE // 2  # shorter pieces are zero-padded: tiny inputs break conv front ends
        self.features: list[torch.Tensor] = []
        for clip in tqdm(clips, desc="teacher features"):
            parts = []
            for start in range(0, clip.numel(), window):
                piece = clip[start : start + window]
                n = piece.numel() // self.hop
                if n == 0:
                    break
                padded = torch.nn.functional.pad(piece, (0, max(min_piece - piece.numel(), 0)))
                feats = teacher(padded[None, None].float())[0]  # [T_t, D]
                parts.append(_fit_frames(feats, n))
            empty = torch.zeros(0, self.dim)
            self.features.append(torch.cat(parts).half() if parts else empty.half())

    def crops(self, origins: list[tuple[int, int]], crop_samples: int) -> torch.Tensor:
        """Features ``[B, crop_samples / hop, D]`` of the crops drawn at ``origins`` (clip index, start)."""
        n = crop_samples // self.hop
        out = torch.zeros(len(origins), n, self.dim)
        for b, (i, start) in enumerate(origins):
            f = self.features[i][start // self.hop : start // self.hop + n].float()
            out[b, : f.shape[0]] = f
        return out


def _fit_frames(feats: torch.Tensor, n: int) -> torch.Tensor:
    """Trim or repeat-pad ``[T, D]`` features to exactly ``n`` frames (teachers round lengths)."""
    if feats.shape[0] >= n:
        return feats[:n]
    pad = feats[-1:].expand(n - feats.shape[0], -1)
    return torch.cat([feats, pad])
