"""The one place that turns the ``cascade`` config group into a :class:`CascadeSystem`."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from cascade_baseline.system import CascadeSystem


def build_cascade(cascade: DictConfig, realtime: bool = True, **overrides: Any) -> CascadeSystem:
    """Build the cascade from a ``configs/cascade/*.yaml`` node.

    Args:
        cascade: the composed ``cascade`` group (``stt``, ``llm``, ``tts`` with ``_target_``, plus
            ``vad``, ``turn``, ``aggregation``, ``barge_in`` and ``history_turns``).
        realtime: True for a live call (the server), False for the deterministic offline clock.
        overrides: keyword arguments of :class:`CascadeSystem` that win over the config.

    Returns:
        The system, with its worker threads running (call ``close()`` when done).
    """
    vad, agg, barge = cascade.vad, cascade.aggregation, cascade.barge_in
    kwargs: dict[str, Any] = dict(
        stt=_stage(cascade, "stt"),
        llm=_stage(cascade, "llm"),
        tts=_stage(cascade, "tts"),
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
        warmup=bool(cascade.warmup),
        first_audio_priority=bool(cascade.get("first_audio_priority", True)),
        realtime=realtime,
    )
    kwargs.update(overrides)
    return CascadeSystem(**kwargs)


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
