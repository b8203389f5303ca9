"""Mimi codec (24 kHz audio <-> 12.5 Hz discrete codes) built on the moshi package's model classes.

Shapes: audio ``[B, C, T]``, codes ``[B, K, T']``. Build from config with ``build_codec`` (the Hydra
``_target_``), from a checkpoint alone with ``load_codec``; write checkpoints with ``save_codec``.
Codes on disk and clips of any length: :mod:`e2e_voice.codec.files` (the ``e2e-voice codec`` command).
"""

from e2e_voice.codec.codec import CodecOutput, MimiCodec, build_codec, load_codec, save_codec
from e2e_voice.codec.mimi import build_mimi, mimi_config, randomize_codebooks

__all__ = [
    "CodecOutput",
    "MimiCodec",
    "build_codec",
    "build_mimi",
    "load_codec",
    "mimi_config",
    "randomize_codebooks",
    "save_codec",
]
