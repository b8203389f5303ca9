"""``e2e-voice converse``: play a user recording through any :class:`DuplexSystem`, frame by frame.

The system is chosen by config (``configs/system/*.yaml``, built with Hydra's ``instantiate``), so the
library never imports a particular system::

    e2e-voice converse --input user.wav --output out.wav                 # cascade, offline clock
    e2e-voice converse --input user.wav --output out.wav realtime=true   # paced at 80 ms per frame
    e2e-voice converse --input user.wav --output out.wav cascade/tts=piper

Writes a two-channel wav (channel 0 assistant, channel 1 user) and ``out.json`` with timestamped text
events and the system's per-turn metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from e2e_voice.audio.io import AudioError, load_audio, save_audio
from e2e_voice.constants import CONFIG_DIR, FRAME_SIZE, SAMPLE_RATE
from e2e_voice.safety.watermark import backend_options, watermark_system
from e2e_voice.system import DuplexSystem


@dataclass
class ConversationEvent:
    """Something that happened at a stream time.

    Attributes:
        time: seconds from the start of the conversation audio.
        kind: ``assistant_text``, ``user_text``, or a system event name (``user_end``, ``barge_in``...).
        text: the text for text events ("" otherwise).
    """

    time: float
    kind: str
    text: str = ""


@dataclass
class ConversationResult:
    """A whole conversation.

    Attributes:
        audio: ``[C=2, T]`` float32 at ``sample_rate``: channel 0 assistant, channel 1 user.
        sample_rate: 24 kHz.
        events: text and timing events in time order.
        metrics: the system's per-turn metrics (``DuplexSystem.metrics()``).
        realtime: whether steps were paced at 80 ms of wall time.
        late_frames: real-time mode only: steps that returned after their 80 ms deadline.
    """

    audio: np.ndarray
    sample_rate: int = SAMPLE_RATE
    events: list[ConversationEvent] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    realtime: bool = False
    late_frames: int = 0

    def to_json(self) -> dict[str, Any]:
        """Everything but the audio, for a ``.json`` beside the wav."""
        return {
            "sample_rate": self.sample_rate,
            "seconds": self.audio.shape[-1] / self.sample_rate,
            "channels": ["assistant", "user"],
            "realtime": self.realtime,
            "late_frames": self.late_frames,
            "events": [asdict(e) for e in self.events],
            "turns": self.metrics,
        }


def converse(
    system: DuplexSystem,
    user_audio: np.ndarray,
    realtime: bool = False,
    max_tail_s: float = 30.0,
    quiet_s: float = 0.5,
    progress: bool = True,
) -> ConversationResult:
    """Feed ``user_audio`` (mono 24 kHz, ``[T]`` or ``[1, T]``) to ``system`` one 80 ms frame at a time.

    After the input ends, silence is fed until the system is no longer busy and has been quiet for
    ``quiet_s`` (at most ``max_tail_s``), so the last answer is heard to the end.

    Args:
        system: any DuplexSystem; it is ``reset()`` first.
        user_audio: the user's side of the call.
        realtime: pace steps at 80 ms of wall time (a live call); else step as fast as the system allows.
        max_tail_s: longest silence fed after the input.
        quiet_s: assistant silence that ends the tail.
        progress: show a tqdm bar.

    Returns:
        The two-channel audio, events and per-turn metrics.
    """
    user = np.asarray(user_audio, dtype=np.float32)
    if user.ndim == 2:
        if user.shape[0] != 1:
            raise ValueError(f"expected mono user audio [1, T], got {user.shape}: mix it down first")
        user = user[0]
    if user.ndim != 1 or user.size == 0:
        raise ValueError(f"expected non-empty mono user audio [T], got shape {user.shape}")
    n_in = -(-len(user) // FRAME_SIZE)
    user = np.pad(user, (0, n_in * FRAME_SIZE - len(user)))
    max_frames = n_in + int(max_tail_s * SAMPLE_RATE / FRAME_SIZE)
    quiet_frames = max(1, round(quiet_s * SAMPLE_RATE / FRAME_SIZE))

    system.reset()
    out_frames, in_frames, events = [], [], []
    late, quiet, k = 0, 0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=n_in, unit="frame", desc="converse", disable=not progress, leave=False)
    while k < max_frames:
        frame = user[k * FRAME_SIZE : (k + 1) * FRAME_SIZE] if k < n_in else np.zeros(FRAME_SIZE, np.float32)
        out = system.step(frame)
        out_frames.append(np.asarray(out.audio, dtype=np.float32).reshape(FRAME_SIZE))
        in_frames.append(frame)
        if out.text:
            events.append(ConversationEvent(k * FRAME_SIZE / SAMPLE_RATE, "assistant_text", out.text))
        events += [ConversationEvent(float(v), name) for name, v in out.events.items() if not _is_index(name)]
        k += 1
        bar.update(1)
        quiet = quiet + 1 if not np.any(out_frames[-1]) else 0
        if k >= n_in and not system.busy() and quiet >= quiet_frames:
            break
        if realtime:
            delay = t0 + k * FRAME_SIZE / SAMPLE_RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                late += 1
    bar.close()
    metrics = system.metrics()
    for turn in metrics:
        if turn.get("user_text"):
            events.append(ConversationEvent(float(turn["user_end"]), "user_text", str(turn["user_text"])))
    events.sort(key=lambda e: e.time)
    audio = np.stack([np.concatenate(out_frames), np.concatenate(in_frames)])  # [C=2, T]
    return ConversationResult(audio, SAMPLE_RATE, events, metrics, realtime, late)


def _is_index(name: str) -> bool:
    # turn_done / turn_failed carry a turn index, not a time; they are in the per-turn metrics.
    return name in ("turn_done", "turn_failed")


def _print_turns(result: ConversationResult) -> None:
    print(
        f"{'turn':>4} {'user end':>8} {'v2v':>6} {'stt':>6} {'ttft':>6} {'tts':>6}  status  user -> assistant"
    )
    for m in result.metrics:
        st = m.get("stages", {})

        def ms(key: str, st: dict[str, Any] = st) -> str:
            v = st.get(key)
            return f"{1000 * v:5.0f}" if v is not None else "    -"

        status = "FAILED" if m.get("failed") else "cut" if m.get("interrupted") else "ok"
        text = f"{m.get('user_text', '')!r} -> {m.get('spoken_text', '')!r}"
        print(
            f"{m['index']:>4} {m['user_end']:7.2f}s {ms('voice_to_voice')} {ms('stt')} {ms('llm_ttft')}"
            f" {ms('tts_first_audio')}  {status:<6}  {text[:90]}"
        )
        if m.get("error"):
            print(f"       error: {m['error']}")
    print("(times in ms; v2v = first assistant audio out - onset of user silence, real-time mode)")


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def output_paths(input_: str | Path, output: str | Path) -> tuple[Path, Path]:
    """The conversation's audio file and its report beside it (``NAME.json``), checked before any work.

    ``--output out.json`` used to write the audio there and then overwrite it with the report: an output
    that is not an audio file, or whose audio or report path is the input, is a ValueError saying what to
    pass instead, so no file is lost.
    """
    out = Path(output)
    if out.suffix.lower() not in AUDIO_SUFFIXES:
        raise ValueError(
            f"--output {output}: name the audio file, ending in {', '.join(AUDIO_SUFFIXES)}; the JSON report"
            f" is written beside it ({out.with_suffix('.json').name} for --output {out.with_suffix('.wav')})"
        )
    report = out.with_suffix(".json")
    src = Path(input_).resolve()
    for path in (out, report):
        if path.resolve() == src:
            what = "audio" if path == out else f"JSON report {path.name}"
            raise ValueError(f"--output {output} would overwrite the input {input_} with its {what}")
    return out, report


def main(argv: list[str] | None = None) -> int:
    """``e2e-voice converse --input user.wav --output out.wav [system=cascade] [realtime=true] ...``."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    parser = argparse.ArgumentParser(
        prog="e2e-voice converse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="user recording (any rate; mixed to mono 24 kHz)")
    parser.add_argument("--output", required=True, help="two-channel wav to write (json beside it)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. realtime=true cascade/tts=piper")
    args = parser.parse_args(argv)
    try:
        out, report = output_paths(args.input, args.output)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("converse", overrides=args.overrides)
    import torch

    torch.set_num_threads(int(cfg.threads))
    try:
        user = load_audio(args.input, SAMPLE_RATE, mono=True)
    except AudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Systems that distinguish a live call from the offline clock take `realtime`; others ignore it.
    extra = {"realtime": bool(cfg.realtime)} if "realtime" in cfg.system else {}
    system = watermark_system(
        instantiate(cfg.system, **extra),
        enabled=bool(cfg.watermark.enabled),
        model_path=cfg.watermark.model_path,
        backend=str(cfg.watermark.get("backend", "perth")),
        **backend_options(cfg.watermark),
    )
    try:
        result = converse(system, user, realtime=bool(cfg.realtime), max_tail_s=float(cfg.max_tail_s))
    finally:
        system.close()
    save_audio(out, result.audio, result.sample_rate)
    report.write_text(json.dumps(result.to_json(), indent=2))
    _print_turns(result)
    print(f"wrote {out} (ch0 assistant, ch1 user) and {report}")
    return 0
