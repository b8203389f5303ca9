"""Mimi codec (24 kHz audio <-> 12.5 Hz discrete codes) built on the moshi package's model classes."""

from e2e_voice.codec.mimi import build_mimi

__all__ = ["build_mimi"]
