"""The cascade baseline (VAD -> STT -> LLM -> TTS) behind the same full-duplex system interface.

Built from the library's components (``e2e_voice.stt``, ``e2e_voice.text``, ``e2e_voice.tts``); the
library never imports this package, config selects it with Hydra's ``_target_``.
"""
