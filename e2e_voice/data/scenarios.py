"""Lay out one conversation on a two-channel timeline: turn-taking scenarios with ground truth.

Given the utterances of a planned conversation and a ``say(role, text)`` function that returns speech
and word times, :func:`layout` places every utterance, applies the scenario of each exchange, and
returns the stereo mix ``[C=2, T]`` (0 = assistant, 1 = user) with words, turns and events.

Scenarios (one per exchange, drawn at planning time):
    ``smooth``: user turn, gap around 200 ms, assistant answer.
    ``pause``: the user turn is split in two by a silence; the assistant waits for the second part.
    ``interruption``: the next user turn starts inside the assistant's answer; the assistant channel is
        cut (fade) ``stop_delay_s`` later, always below ``max_stop_s``.
    ``backchannel``: the user says "mm-hm" in the middle of the answer; the assistant goes on.
    ``long_silence``: several seconds of silence after the answer.
Every exchange also records its ``turn_gap``; ``noise`` adds background noise at an SNR to channel 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.data.align import Timed
from e2e_voice.data.manifest import ASSISTANT, CHANNEL_OF, USER, Event, Turn, Word

SCENARIOS = ("smooth", "pause", "interruption", "backchannel", "long_silence")
SayFn = Callable[[str, str], tuple[np.ndarray, list[Timed]]]
"""(role, text) -> (24 kHz mono speech, word times relative to its start)."""


@dataclass(frozen=True)
class TimingSettings:
    """Timing distributions of the scenarios (seconds)."""

    gap_mean_s: float = 0.2
    gap_std_s: float = 0.08
    gap_range_s: tuple[float, float] = (0.05, 0.5)
    user_gap_s: tuple[float, float] = (0.4, 1.2)
    pause_s: tuple[float, float] = (0.8, 1.6)
    long_silence_s: tuple[float, float] = (3.0, 6.0)
    interrupt_at: tuple[float, float] = (0.3, 0.7)
    stop_delay_s: tuple[float, float] = (0.08, 0.24)
    max_stop_s: float = 0.3
    fade_s: float = 0.03
    lead_s: tuple[float, float] = (0.3, 0.8)
    tail_s: tuple[float, float] = (0.5, 1.0)
    level_dbfs: float = -20.0

    def __post_init__(self) -> None:
        if self.stop_delay_s[1] + self.fade_s > self.max_stop_s:
            raise ValueError(
                f"stop_delay_s upper bound {self.stop_delay_s[1]} + fade_s {self.fade_s} exceeds max_stop_s"
                f" {self.max_stop_s}: the stated bound would not hold; lower stop_delay_s or raise max_stop_s"
            )


@dataclass(frozen=True)
class Exchange:
    """One planned exchange: the user speaks, the assistant answers, under ``scenario``."""

    user_text: str
    assistant_text: str
    scenario: str = "smooth"
    backchannel: str = "mm-hm"
    stop_text: str = "Stop, I got it."  # said when the last answer is interrupted


@dataclass
class Layout:
    """The laid-out conversation."""

    audio: np.ndarray  # [C=2, T] float32
    words: list[Word] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.audio.shape[-1] / SAMPLE_RATE


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(audio**2))) if audio.size else 0.0
    return audio if rms < 1e-6 else audio * (10 ** (dbfs / 20) / rms)


def colored_noise(rng: np.random.Generator, n: int, color: str) -> np.ndarray:
    """Unit-power noise: ``white``, ``pink`` (1/f) or ``brown`` (1/f^2), shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1] if n > 1 else 1.0
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[color]
    x = np.fft.irfft(spectrum / np.maximum(f, 20.0) ** exponent, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def active_mask(turns: list[Turn], speaker: str, n: int) -> np.ndarray:
    """Boolean ``[T]`` mask of the samples inside ``speaker``'s turns."""
    mask = np.zeros(n, dtype=bool)
    for t in turns:
        if t.speaker == speaker:
            mask[round(t.start * SAMPLE_RATE) : round(t.end * SAMPLE_RATE)] = True
    return mask


def add_noise(
    audio: np.ndarray, turns: list[Turn], snr_db: float, rng: np.random.Generator, color: str
) -> np.ndarray:
    """Add noise to the user channel so that (user speech power in user turns) / (noise power) = SNR."""
    user = audio[CHANNEL_OF[USER]]
    mask = active_mask(turns, USER, user.shape[-1])
    speech_power = float(np.mean(user[mask] ** 2)) if mask.any() else 10 ** (-20 / 10)
    noise = colored_noise(rng, user.shape[-1], color) * np.sqrt(speech_power / 10 ** (snr_db / 10))
    out = audio.copy()
    out[CHANNEL_OF[USER]] = user + noise
    return out


def layout(exchanges: list[Exchange], say: SayFn, rng: np.random.Generator, timing: TimingSettings) -> Layout:
    """Place the utterances of ``exchanges`` on a two-channel timeline (see the module docstring).

    Args:
        exchanges: the planned exchanges, in order.
        say: speech and word times for (role, text).
        rng: draws the gaps, pauses and cut points.
        timing: the distributions.

    Returns:
        The mix ``[2, T]`` (each utterance levelled to ``timing.level_dbfs`` RMS) and its ground truth.
    """
    placed: dict[str, list[tuple[int, np.ndarray]]] = {ASSISTANT: [], USER: []}
    out = Layout(audio=np.zeros((2, 0), np.float32))

    def put(role: str, text: str, start: float, audio: np.ndarray, timed: list[Timed]) -> float:
        s0 = round(start * SAMPLE_RATE)
        start = s0 / SAMPLE_RATE
        placed[role].append((s0, _level(audio, timing.level_dbfs)))
        out.words.extend(Word(w, round(start + a, 3), round(start + b, 3), role) for w, a, b in timed)
        end = start + len(audio) / SAMPLE_RATE
        out.turns.append(Turn(role, round(start, 3), round(end, 3), text))
        return end

    t = _u(rng, timing.lead_s)
    barge_in: float | None = None  # the next user turn starts here (an interruption)
    for i, ex in enumerate(exchanges):
        start = barge_in if barge_in is not None else t
        barge_in = None
        words = ex.user_text.split()
        if ex.scenario == "pause" and len(words) >= 4:
            half = len(words) // 2
            first, second = " ".join(words[:half]), " ".join(words[half:])
            end1 = put(USER, first, start, *say(USER, first))
            resume = end1 + _u(rng, timing.pause_s)
            out.events.append(Event("pause", round(end1, 3), round(resume, 3)))
            user_end = put(USER, second, resume, *say(USER, second))
        else:
            user_end = put(USER, ex.user_text, start, *say(USER, ex.user_text))
        lo, hi = timing.gap_range_s
        a_start = user_end + float(np.clip(rng.normal(timing.gap_mean_s, timing.gap_std_s), lo, hi))
        a_audio, a_timed = say(ASSISTANT, ex.assistant_text)
        a_dur = len(a_audio) / SAMPLE_RATE
        a_start = round(a_start * SAMPLE_RATE) / SAMPLE_RATE
        out.events.append(Event("turn_gap", round(user_end, 3), round(a_start, 3)))
        if ex.scenario == "interruption":
            t_int = a_start + _u(rng, timing.interrupt_at) * a_dur
            t_cut = t_int + _u(rng, timing.stop_delay_s)
            keep = round((t_cut - a_start) * SAMPLE_RATE)
            fade = min(keep, round(timing.fade_s * SAMPLE_RATE))
            a_audio = a_audio[:keep].copy()
            a_audio[keep - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
            a_timed = [w for w in a_timed if w[2] <= (keep - fade) / SAMPLE_RATE]
            spoken = " ".join(w for w, _, _ in a_timed) or ex.assistant_text.split()[0]
            a_end = put(ASSISTANT, spoken, a_start, a_audio, a_timed)
            out.events.append(
                Event(
                    "interruption",
                    round(t_int, 3),
                    round(a_end, 3),
                    {"max_stop_s": timing.max_stop_s, "fade_s": timing.fade_s},
                )
            )
            if i + 1 < len(exchanges):
                barge_in = t_int
                continue
            t = put(USER, ex.stop_text, t_int, *say(USER, ex.stop_text))
            break
        a_end = put(ASSISTANT, ex.assistant_text, a_start, a_audio, a_timed)
        if ex.scenario == "backchannel" and a_dur > 2.0:
            bc_audio, bc_timed = say(USER, ex.backchannel)
            latest = a_dur - 0.6 - len(bc_audio) / SAMPLE_RATE
            if latest > 0.6:
                bc_start = a_start + float(rng.uniform(0.6, latest))
                bc_end = put(USER, ex.backchannel, bc_start, bc_audio, bc_timed)
                out.events.append(
                    Event("backchannel", round(bc_start, 3), round(bc_end, 3), {"text": ex.backchannel})
                )
        if ex.scenario == "long_silence":
            t = a_end + _u(rng, timing.long_silence_s)
            out.events.append(Event("long_silence", round(a_end, 3), round(t, 3)))
        else:
            t = a_end + _u(rng, timing.user_gap_s)
    ends = [s + len(a) for clips in placed.values() for s, a in clips]
    ends += [round(e.end * SAMPLE_RATE) for e in out.events]  # a final long silence is part of the file
    total = max(ends) + round(_u(rng, timing.tail_s) * SAMPLE_RATE)
    audio = np.zeros((2, total), np.float32)
    for role, clips in placed.items():
        for s, a in clips:
            audio[CHANNEL_OF[role], s : s + len(a)] += a
    out.audio = audio
    out.words.sort(key=lambda w: (w.start, w.speaker))
    out.turns.sort(key=lambda t: t.start)
    return out


def scenario_tags(events: list[Event], noisy: bool) -> list[str]:
    """Tags of the scenarios that actually happened (``turn_gap`` counts as ``smooth``)."""
    kinds = {"smooth" if e.kind == "turn_gap" else e.kind for e in events}
    return [s for s in SCENARIOS if s in kinds] + (["noise"] if noisy else [])
