"""The one place that turns the ``cascade`` config group into a :class:`CascadeSystem`."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cascade_baseline.shared import LockedLLM, LockedSTT, LockedTTS, SharedModels
from cascade_baseline.system import CascadeSystem
from cascade_baseline.vad import load_session
from e2e_voice.safety.consent import ConsentRegistry

log = logging.getLogger(__name__)

# Loaded models per cascade configuration (the JSON of its stt/llm/tts/vad settings), for the process.
_SHARED: dict[str, SharedModels] = {}
_SHARED_LOCK = threading.Lock()


def build_cascade(
    cascade: DictConfig, realtime: bool = True, share_models: bool = False, **overrides: Any
) -> CascadeSystem:
    """Build the cascade from a ``configs/cascade/*.yaml`` node.

    Args:
        cascade: the composed ``cascade`` group (``stt``, ``llm``, ``tts`` with ``_target_``, plus
            ``vad``, ``turn``, ``aggregation``, ``barge_in`` and ``history_turns``).
        realtime: True for a live call (the server), False for the deterministic offline clock.
        share_models: take the STT, LLM, TTS and VAD session from :func:`shared_models` (loaded by the
            first call with this configuration, behind locks) instead of loading them for this system.
            The server builds one system per connection, so only the first connection pays the load.
        overrides: keyword arguments of :class:`CascadeSystem` that win over the config.

    Returns:
        The system, with its worker threads running (call ``close()`` when done).
    """
    # Read (and so validate) the consent file whatever the voice, before loading any model: a damaged
    # file stops start-up with its path and problem, as the README says, not only with a custom voice.
    ConsentRegistry()
    vad, agg, barge = cascade.vad, cascade.aggregation, cascade.barge_in
    warmup = bool(cascade.warmup)
    stages: dict[str, Any]
    if share_models:
        models = shared_models(cascade)
        stages = dict(stt=models.stt, llm=models.llm, tts=models.tts, vad_session=models.vad_session)
        with models.lock:  # warming the shared models up once is enough
            warmup = warmup and not models.warmed
            models.warmed = models.warmed or warmup
    else:
        stages = dict(stt=_stage(cascade, "stt"), llm=_stage(cascade, "llm"), tts=_stage(cascade, "tts"))
    kwargs: dict[str, Any] = dict(
        **stages,
        vad_model_path=vad.get("model_path"),
        vad_threshold=float(vad.threshold),
        min_speech_ms=float(vad.min_speech_ms),
        min_silence_ms=float(vad.min_silence_ms),
        turn_detector=instantiate(cascade.turn) if cascade.get("turn") else None,
        aggregation=str(agg.mode),
        min_phrase_chars=int(agg.min_phrase_chars),
        barge_in=bool(barge.enabled),
        barge_in_min_ms=float(barge.min_duration_ms),
        history_turns=int(cascade.history_turns),
        turn_timeout_s=float(cascade.turn_timeout_s),
        warmup=warmup,
        first_audio_priority=bool(cascade.get("first_audio_priority", True)),
        realtime=realtime,
    )
    kwargs.update(overrides)
    return CascadeSystem(**kwargs)


def shared_models(cascade: DictConfig) -> SharedModels:
    """The process-wide loaded stages for this cascade configuration (loaded on first use).

    Two configurations that differ only in per-conversation settings (VAD thresholds, aggregation,
    barge-in, history) share one set of models.
    """
    key = json.dumps(
        {
            **{n: OmegaConf.to_container(cascade[n], resolve=True) for n in ("stt", "llm", "tts")},
            "vad_model_path": cascade.vad.get("model_path"),
        },
        sort_keys=True,
        default=str,
    )
    with _SHARED_LOCK:  # held while loading: a second connection waits for the first load, not a second
        if key not in _SHARED:
            t = time.perf_counter()
            _SHARED[key] = SharedModels(
                stt=LockedSTT(_stage(cascade, "stt")),
                llm=LockedLLM(_stage(cascade, "llm")),
                tts=LockedTTS(_stage(cascade, "tts")),
                vad_session=load_session(cascade.vad.get("model_path")),
            )
            log.info(
                "cascade models loaded in %.1f s (shared by every conversation)", time.perf_counter() - t
            )
        return _SHARED[key]


def _stage(cascade: DictConfig, name: str) -> Any:
    """Instantiate ``cascade.<name>``; a failure says which setting to change."""
    node = cascade[name]
    try:
        return instantiate(node)
    except Exception as e:
        cause = e.__cause__ or e  # Hydra wraps the constructor's error
        raise RuntimeError(
            f"cannot build cascade.{name} ({node.get('_target_')}): {type(cause).__name__}: {cause}\n"
            f"fix cascade.{name}.model_path / cascade.{name}.model, or pick another backend with"
            f" cascade/{name}=... (options in configs/cascade/{name}/)"
        ) from e
