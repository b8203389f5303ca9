"""Per-turn timing of the cascade: one :class:`TurnMetrics` per user turn.

Wall-clock times are seconds since the system's ``reset()`` (``time.perf_counter``); stream times are
seconds of conversation audio (frame index x 80 ms). In real-time mode the two clocks run together; in
offline-clock mode ``step`` waits for the workers, so stream times are deterministic while the stage
durations are still real wall-clock measurements.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

# Stage boundaries in pipeline order: each stage's duration is the gap to the previous boundary.
STAGES = ("silence_onset", "vad_end", "stt_final", "llm_first_token", "first_sentence", "tts_first_audio")


@dataclass
class TurnMetrics:
    """What happened in one user turn and when.

    Attributes:
        index: turn number from 0.
        user_start: stream time (s) the user's speech began.
        user_end: stream time (s) the user's silence began.
        silence_onset: wall time (s) of ``user_end`` (frame arrival time minus the rest of that frame).
        vad_end: wall time the VAD declared the end of speech (after ``min_silence_ms``).
        stt_final: wall time the final transcript was ready.
        llm_first_token: wall time of the first non-empty LLM text piece.
        first_sentence: wall time the aggregator released the first phrase/sentence to TTS.
        tts_first_audio: wall time the first phrase's audio was synthesized.
        first_audio_out: wall time ``step`` returned the first frame holding assistant audio.
        first_audio_stream: stream time (s) of the first assistant sample in the output.
        stopped_stream: stream time (s) the assistant's audio stopped early (barge-in), else None.
        user_text: the transcript.
        assistant_text: everything the LLM generated (as far as it got).
        spoken_text: the part of ``assistant_text`` actually played (what the history records).
        interrupted: the user barged in during this turn's answer.
        failed: a stage raised; ``error`` says which and why.
        error: ``"stage: message"`` when failed.
        realtime: which clock mode produced these numbers.
    """

    index: int
    user_start: float
    user_end: float
    silence_onset: float
    vad_end: float
    stt_final: float | None = None
    llm_first_token: float | None = None
    first_sentence: float | None = None
    tts_first_audio: float | None = None
    first_audio_out: float | None = None
    first_audio_stream: float | None = None
    stopped_stream: float | None = None
    user_text: str = ""
    assistant_text: str = ""
    spoken_text: str = ""
    interrupted: bool = False
    failed: bool = False
    error: str = ""
    realtime: bool = True

    def stage_seconds(self) -> dict[str, float | None]:
        """Duration of each stage (s): endpoint, stt, llm_ttft, first_sentence, tts_first_audio, playout.

        ``voice_to_voice`` is ``first_audio_out - silence_onset``, meaningful in real-time mode (None when
        a barge-in cut the turn before any audio played); ``first_audio_ready`` (``tts_first_audio -
        silence_onset``) exists for every turn whose first phrase was synthesized, cut or not; in
        offline-clock mode ``compute_to_first_audio`` (``tts_first_audio - vad_end``) is the comparable
        pipeline cost.
        """
        names = ("endpoint", "stt", "llm_ttft", "first_sentence", "tts_first_audio")
        out: dict[str, float | None] = {}
        for name, (a, b) in zip(names, pairwise(STAGES)):
            ta, tb = getattr(self, a), getattr(self, b)
            out[name] = None if ta is None or tb is None else tb - ta
        out["playout"] = _gap(self.tts_first_audio, self.first_audio_out)
        out["voice_to_voice"] = _gap(self.silence_onset, self.first_audio_out)
        out["first_audio_ready"] = _gap(self.silence_onset, self.tts_first_audio)
        out["compute_to_first_audio"] = _gap(self.vad_end, self.tts_first_audio)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON: the fields plus ``stages`` (seconds)."""
        return {**asdict(self), "stages": self.stage_seconds()}


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a
