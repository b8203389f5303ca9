"""Audio I/O and signal helpers (sphn / soundfile / soxr; torchaudio does not import on CPU here)."""

from e2e_voice.audio.io import AudioError, load_audio, resample, save_audio

__all__ = ["AudioError", "load_audio", "resample", "save_audio"]
