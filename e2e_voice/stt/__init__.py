"""Speech recognition: faster-whisper models from the bundle, and WER with text normalisation."""

from e2e_voice.stt.whisper import WhisperSTT, normalize_text, word_error_rate, word_hits

__all__ = ["WhisperSTT", "normalize_text", "word_error_rate", "word_hits"]
