"""``e2e-voice bench``: drive systems through the same conversations and measure them side by side.

Each conversation of a manifest (the synthetic corpus's test split, the committed fixture, or any
two-channel corpus in the same format) gives its user channel to every system through ``converse`` on the
offline clock. The system's own channel is then measured against the scenario's ground truth:

- latency: the gap between the end of each user turn (``turn_gap`` events) and the system's first speech;
- turn-taking (Full-Duplex-Bench v1): takeover rate during user pauses (lower is better), smooth
  turn-taking rate at turn ends, stop latency after a user interruption, and whether the system keeps
  talking through a backchannel;
- WER of the system's speech against the text it meant to say (its own text events), Whisper judge, and
  the missed-word rate (meant words not heard, in order), which hallucinated insertions cannot inflate;
- prosody of the system's speech (F0 in semitones, range, intensity, rate, pauses);
- real-time factor of the run, and the cascade's per-stage timings when the system reports them;
- with ``codec_metrics=true``, the codec's own metrics (``eval/codec.py``: bitrate, mel distance, SI-SDR,
  STOI, PESQ, WER of the resynthesis, RTF) on the conversations' user and/or assistant channels.

Suites (``configs/suite/``) fix what a run covers: ``small`` (the default, a few minutes), ``full``
(``make bench``), and ``task`` / ``task_seen``: the closed-domain task (issue #41), whose report adds
answer accuracy (``eval/task_accuracy.py``). Writes ``runs/bench/<time>/results.json``, ``report.md`` and
plots, and prints the table.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from e2e_voice.audio.io import load_audio
from e2e_voice.constants import CONFIG_DIR, SAMPLE_RATE
from e2e_voice.converse import ConversationEvent, converse
from e2e_voice.data.manifest import CHANNEL_OF, USER, DialogueEntry, read_manifest
from e2e_voice.engine import check_checkpoints
from e2e_voice.stt.whisper import WhisperSTT
from eval import metrics as m
from eval.codec import (
    JUDGE_COMPUTE_TYPES,
    Clip,
    build_judge,
    code_clips,
    judge_factory,
    load_eval_codec,
    score_clips,
)
from eval.machine import context_line, machine_context
from eval.task_accuracy import (
    ExchangeScore,
    interrupted_count,
    join_text,
    score_exchanges,
    summarize_task,
    task_report,
)

log = logging.getLogger(__name__)
BACKCHANNEL_CONTINUE_S = 0.5  # the system "keeps talking" through a backchannel if it speaks this long after


@dataclass
class ConversationScore:
    """Everything measured on one system's side of one conversation."""

    id: str
    scenarios: list[str]
    seconds: float
    run_seconds: float
    processed_seconds: float = 0.0  # input + the silent tail fed until the assistant went quiet
    latencies: list[float] = field(default_factory=list)
    smooth_takeovers: list[bool] = field(default_factory=list)
    pause_takeovers: list[bool] = field(default_factory=list)
    stop_latencies: list[float | None] = field(default_factory=list)
    backchannel_continues: list[bool] = field(default_factory=list)
    intended_text: str = ""
    heard_text: str = ""
    prosody: dict[str, Any] | None = None
    stages: dict[str, list[float]] = field(default_factory=dict)
    task: list[ExchangeScore] = field(default_factory=list)  # the task's exchanges (eval/task_accuracy.py)
    errors: list[str] = field(default_factory=list)  # failed turns (e.g. a remote server that dropped)


def _next_user_start(entry: DialogueEntry, after: float) -> float:
    starts = [t.start for t in entry.turns if t.speaker == USER and t.start > after + 1e-3]
    return min(starts) if starts else entry.duration


def score_conversation(
    entry: DialogueEntry,
    assistant: np.ndarray,
    intended: str,
    heard: str,
    run_seconds: float,
    stages: dict[str, list[float]],
) -> ConversationScore:
    """Measure one system channel (``[T]`` at 24 kHz) against the entry's scenario ground truth."""
    segs = m.speech_segments(assistant, SAMPLE_RATE)
    end = len(assistant) / SAMPLE_RATE
    score = ConversationScore(
        entry.id,
        list(entry.scenarios),
        entry.duration,
        run_seconds,
        processed_seconds=end,
        intended_text=intended,
        heard_text=heard,
        stages=stages,
    )
    for e in entry.events_of("turn_gap"):
        latency = m.response_latency(segs, e.start)
        nxt = _next_user_start(entry, e.start)
        if latency is not None and e.start + latency < nxt:
            score.latencies.append(latency)
        score.smooth_takeovers.append(m.takes_turn(segs, e.start, nxt))
    for e in entry.events_of("pause"):
        score.pause_takeovers.append(m.takes_turn(segs, e.start, e.end))
    for e in entry.events_of("interruption"):
        if any(a <= e.start < b for a, b in segs):  # only meaningful when the system was speaking
            score.stop_latencies.append(m.stop_latency(segs, e.start, end))
    for e in entry.events_of("backchannel"):
        if any(a <= e.start < b for a, b in segs):
            score.backchannel_continues.append(
                m.speech_seconds(segs, e.end, e.end + 2.0) >= BACKCHANNEL_CONTINUE_S
            )
    words = len(intended.split())
    try:
        score.prosody = m.prosody(assistant, SAMPLE_RATE, words=words or None).as_dict()
    except ValueError:
        score.prosody = None  # the system never spoke (no voiced frame)
    return score


def _mean(xs: list[Any]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def summarize(scores: list[ConversationScore], skipped: int = 0) -> dict[str, Any]:
    """Aggregate one system's conversation scores into the report's numbers (``skipped``: the task's
    interrupted exchanges, which are not scored)."""
    lat = [x for s in scores for x in s.latencies]
    stops = [x for s in scores for x in s.stop_latencies]
    p50, p90 = m.p50_p90(lat)
    refs = [s.intended_text for s in scores if s.intended_text.strip()]
    hyps = [s.heard_text for s in scores if s.intended_text.strip()]
    prosody_keys = (
        "f0_mean_st",
        "f0_std_st",
        "f0_range_st",
        "intensity_std_db",
        "speaking_rate_wps",
        "pause_count",
        "pause_mean_s",
    )
    stages: dict[str, list[float]] = {}
    for s in scores:
        for k, v in s.stages.items():
            stages.setdefault(k, []).extend(v)
    return {
        "conversations": len(scores),
        "failed_conversations": sum(bool(s.errors) for s in scores),
        "failures": [f"{s.id}: {e}" for s in scores for e in s.errors],
        "latency_p50_s": p50,
        "latency_p90_s": p90,
        "responses": len(lat),
        "smooth_turn_taking_rate": _mean([x for s in scores for x in s.smooth_takeovers]),
        "pause_takeover_rate": _mean([x for s in scores for x in s.pause_takeovers]),
        "interruption_stop_latency_p50_s": m.p50_p90([x for x in stops if x is not None])[0],
        "interruption_never_stopped": sum(x is None for x in stops),
        "interruptions_while_speaking": len(stops),
        "backchannel_continue_rate": _mean([x for s in scores for x in s.backchannel_continues]),
        "wer": m.wer(refs, hyps) if refs else None,
        "missed_words": m.missed_words(refs, hyps) if refs else None,
        # Compute time per second of audio the system processed (the input and the silent tail
        # `converse` feeds until the assistant is quiet), not per second of input.
        "real_time_factor": sum(s.run_seconds for s in scores)
        / max(1e-9, sum(s.processed_seconds or s.seconds for s in scores)),
        "prosody": {k: _mean([s.prosody.get(k) for s in scores if s.prosody]) for k in prosody_keys},
        "stages_p50_s": {k: m.p50_p90(v)[0] for k, v in sorted(stages.items())},
        # Answer accuracy on the closed-domain task; None for corpora without qa.
        "task": summarize_task([s.task for s in scores], skipped),
    }


def _stages(turns: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for t in turns:
        for k, v in (t.get("stages") or {}).items():
            if isinstance(v, (int, float)):
                out.setdefault(k, []).append(float(v))
    return out


def _compose(config: str, overrides: list[str]) -> DictConfig:
    # Inside `e2e-voice bench` Hydra is already initialised on configs/; from Python (tests) it is not.
    if GlobalHydra.instance().is_initialized():
        return compose(config, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config, overrides=overrides)


def system_config(name: str, overrides: list[str]) -> DictConfig:
    """The ``system`` node of ``configs/system/<name>.yaml`` with the bench's overrides for it."""
    return _compose("converse", [f"system={name}", *overrides]).system


def check_system(name: str, overrides: list[str]) -> None:
    """Fail before any conversation runs when a system's checkpoints are missing (say how to get them)."""
    system = system_config(name, overrides)
    if system.get("_target_") == "e2e_voice.engine.open_slot":
        check_checkpoints(system.get("lm_checkpoint"), system.get("codec_checkpoint"))
    if system.get("_target_") == "e2e_voice.serve.remote.RemoteSystem":
        remote = instantiate(system)  # a wrong url or token fails now: one conversation opened and closed
        try:
            remote.reset()
        finally:
            remote.close()


def resolve_manifest(cfg: DictConfig) -> Path:
    """``cfg.manifest``, or ``cfg.manifest_fallback`` (logged) when the corpus has not been generated."""
    path = Path(cfg.manifest)
    if path.is_file():
        return path
    fallback = cfg.get("manifest_fallback")
    if fallback:
        log.warning(
            "manifest %s does not exist; using %s (generate it: `e2e-voice synth-data`)", path, fallback
        )
        return Path(fallback)
    build = cfg.get("manifest_build") or "e2e-voice synth-data"
    raise FileNotFoundError(
        f"manifest {path} does not exist: generate the corpus with `{build}`, or pass manifest=PATH"
    )


def bench_codec(cfg: DictConfig) -> tuple[Any, str]:
    """The codec ``codec_metrics`` measures, and where it came from.

    ``codec_eval.checkpoint`` wins, then ``codec_eval.config`` (random weights, to test the wiring), then
    the ``e2e`` system's ``codec_checkpoint`` when ``e2e`` is among the systems.
    """
    c = cfg.codec_eval
    n = c.get("num_codebooks")
    if c.get("checkpoint"):
        return load_eval_codec(checkpoint=str(c.checkpoint), num_codebooks=n), str(c.checkpoint)
    if c.get("config"):
        return load_eval_codec(
            config=str(c.config), num_codebooks=n
        ), f"configs/codec/{c.config} (random weights)"
    if "e2e" in cfg.systems:
        path = system_config("e2e", list(cfg.system_overrides.get("e2e", []) or [])).get("codec_checkpoint")
        if path:
            return load_eval_codec(checkpoint=str(path), num_codebooks=n), str(path)
    raise ValueError(
        "codec_metrics=true needs a codec: set codec_eval.checkpoint=PATH (a codec .safetensors),"
        " codec_eval.config=NAME (configs/codec, random weights) or include the e2e system with a"
        " system.codec_checkpoint"
    )


def codec_metrics(
    codec: Any, entries: list[DialogueEntry], channels: list[str], judge: Any | None, out: Path, plots: int
) -> tuple[dict[str, Any], Any | None]:
    """``eval/codec.py``'s metrics for ``codec`` on each channel of the conversations' own audio.

    Each channel's reference transcript is its speaker's turns; results and plots go to
    ``out/codec_<channel>/``. ``judge`` is as in ``evaluate_clips``; a factory is called once, after the
    codec was timed on every channel, so no timing runs next to a live judge and the judge loads once.

    Returns:
        The results per channel, and the judge that scored them (to reuse), or None.
    """
    clips: dict[str, list[Clip]] = {}
    for channel in channels:
        if channel not in CHANNEL_OF:
            raise ValueError(f"codec_eval.channels: unknown channel '{channel}'; use {sorted(CHANNEL_OF)}")
        clips[channel] = [
            Clip(
                f"{e.id} ({channel})",
                load_audio(e.audio, SAMPLE_RATE, mono=False)[CHANNEL_OF[channel]],
                " ".join(t.text for t in e.turns if t.speaker == channel) or None,
            )
            for e in entries
        ]
    coded = {ch: code_clips(codec, cl, out / f"codec_{ch}", plots) for ch, cl in clips.items()}
    judge = build_judge(judge)
    results = {ch: score_clips(codec, cl, coded[ch], out / f"codec_{ch}", judge) for ch, cl in clips.items()}
    return results, judge


@dataclass
class SystemOutput:
    """What one conversation through a system produced, before the judge listens to it."""

    entry: DialogueEntry
    assistant: np.ndarray  # [T] the system's speech, 24 kHz
    intended: str  # the text it meant to say (its own text events)
    run_seconds: float
    stages: dict[str, Any]
    text_events: list[ConversationEvent] = field(default_factory=list)  # timed `assistant_text` events
    errors: list[str] = field(default_factory=list)  # the system's failed turns, reported per conversation


def run_system(
    name: str,
    overrides: list[str],
    entries: list[DialogueEntry],
    realtime: bool = False,
    seed: int | None = None,
) -> list[SystemOutput]:
    """Run every conversation through one system (built from ``configs/system/<name>.yaml``).

    ``seed`` goes to a system that samples (its config has a ``seed`` key left null): each conversation
    then starts its own stream from it, so a run repeats and no conversation depends on the ones before.

    No judge is alive meanwhile: a CTranslate2 model in the process slows torch on CPU (see
    ``WhisperSTT``), which would charge the judge's cost to the system's speed.
    """
    cfg = _compose("converse", [f"system={name}", *overrides])
    extra: dict[str, Any] = {"realtime": realtime} if "realtime" in cfg.system else {}
    if seed is not None and "seed" in cfg.system and cfg.system.seed is None:
        extra["seed"] = seed
    system = instantiate(cfg.system, **extra)
    outputs = []
    try:
        for entry in tqdm(entries, desc=f"bench {name}", unit="conv"):
            user = load_audio(entry.audio, SAMPLE_RATE, mono=False)[1]
            t0 = time.perf_counter()
            result = converse(system, user, realtime=realtime, progress=False)
            run_seconds = time.perf_counter() - t0
            texts = [e for e in result.events if e.kind == "assistant_text"]
            # The e2e engine's pieces carry their own spaces (" Par", "is"): joined, not spaced apart.
            intended = join_text([e.text for e in texts])
            # A failed turn (a remote server that dropped the call) is reported for this conversation; the
            # system's next reset() starts the next one afresh.
            errors = [str(t.get("error") or "failed turn") for t in result.metrics if t.get("failed")]
            for error in errors:
                log.warning("%s, conversation %s: %s", name, entry.id, error)
            outputs.append(
                SystemOutput(
                    entry, result.audio[0], intended, run_seconds, _stages(result.metrics), texts, errors
                )
            )
    finally:
        system.close()
    return outputs


def judge_outputs(outputs: list[SystemOutput], judge: WhisperSTT) -> list[ConversationScore]:
    """Score each conversation's output; the judge transcribes the assistant's speech (whole, and cut to
    each task exchange's answer window when the entry has qa)."""
    scores = []
    for out in outputs:
        heard = judge.transcribe(out.assistant, SAMPLE_RATE) if np.abs(out.assistant).max() > 1e-4 else ""
        score = score_conversation(out.entry, out.assistant, out.intended, heard, out.run_seconds, out.stages)
        score.errors = list(out.errors)
        score.task = score_exchanges(
            out.entry,
            out.text_events,
            out.assistant,
            SAMPLE_RATE,
            lambda clip: judge.transcribe(clip, SAMPLE_RATE),
        )
        scores.append(score)
    return scores


def _jsonable(obj: Any) -> Any:
    # Nested dataclasses (the task's exchange scores) as objects; anything else as its string.
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}" if isinstance(v, float) else str(v)


ROWS = [
    ("latency p50 (s)", "latency_p50_s", False),
    ("latency p90 (s)", "latency_p90_s", False),
    ("responses measured", "responses", False),
    ("smooth turn-taking rate", "smooth_turn_taking_rate", True),
    ("pause takeover rate (lower is better)", "pause_takeover_rate", True),
    ("interruption stop latency p50 (s)", "interruption_stop_latency_p50_s", False),
    ("interruptions while speaking / never stopped", None, False),
    ("backchannel: keeps talking", "backchannel_continue_rate", True),
    ("WER (own speech)", "wer", True),
    ("missed words (own speech; insertions not counted)", "missed_words", True),
    ("real-time factor", "real_time_factor", False),
    ("conversations with a failed turn", "failed_conversations", False),
]


CODEC_ROWS = [
    ("mel distance", "mel_distance", False),
    ("SI-SDR (dB)", "si_sdr", False),
    ("STOI", "stoi", False),
    ("PESQ wb", "pesq", False),
    ("WER original", "wer_original", True),
    ("WER resynthesis", "wer_reconstruction", True),
    ("WER resynthesis vs original transcript", "wer_vs_original_transcript", True),
    ("RTF encode", "rtf_encode", False),
    ("RTF decode", "rtf_decode", False),
]


def codec_report(codec: dict[str, Any]) -> list[str]:
    """The codec section of the report: one column per channel."""
    channels = codec["channels"]
    first = next(iter(channels.values()))["codec"]
    lines = [
        "",
        f"## Codec: `{codec['source']}`",
        "",
        f"{first['bitrate_bps'] / 1000:.2f} kbps = {first['num_codebooks']} codebooks x"
        f" log2({first['cardinality']}) bits x {first['frame_rate']:g} Hz; resynthesis of the"
        " conversations' own channels (references: each speaker's turns; per-clip tables in"
        " `codec_<channel>/codec_metrics.md`).",
        "",
        "| metric | " + " | ".join(channels) + " |",
        "| --- |" + " --- |" * len(channels),
        "| clips / seconds | "
        + " | ".join(f"{c['clips']} / {c['audio_seconds']:.1f}" for c in channels.values())
        + " |",
        "| bitrate (kbps) | "
        + " | ".join(f"{c['codec']['bitrate_bps'] / 1000:.2f}" for c in channels.values())
        + " |",
    ]
    for label, key, pct in CODEC_ROWS:
        lines.append(
            f"| {label} | " + " | ".join(_fmt(c["mean"][key], pct) for c in channels.values()) + " |"
        )
    return lines


def report(
    summary: dict[str, dict[str, Any]], meta: dict[str, Any], codec: dict[str, Any] | None = None
) -> str:
    """The markdown report: one column per system, then the codec's metrics when measured."""
    names = list(summary)
    lines = [
        f"# Benchmark: {', '.join(names)}",
        "",
        (f"Suite `{meta['suite']}`. " if meta.get("suite") else "")
        + f"Manifest `{meta['manifest']}`, {meta['conversations']} conversations, {meta['clock']}, "
        f"judge {meta['judge']} ({meta.get('judge_compute_type', 'int8')}), {meta['machine']}"
        + (f", sampling seed {meta['seed']}." if meta.get("seed") is not None else ", unseeded sampling."),
        "",
        "On the offline clock a system's compute time does not delay its audio, so latencies are the"
        " algorithmic part (endpointing, acoustic delay); compute latency is in the stage rows and in a"
        " `realtime=true` run. WER compares the system's speech with its own text events (for the"
        " cascade these include words cut off by a barge-in, which count as deletions).",
        "",
        *([context_line(meta["machine_context"]), ""] if meta.get("machine_context") else []),
        "| metric | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for label, key, pct in ROWS:
        if key is None:
            vals = [
                f"{s['interruptions_while_speaking']} / {s['interruption_never_stopped']}"
                for s in summary.values()
            ]
        else:
            vals = [_fmt(s.get(key), pct) for s in summary.values()]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    for k in next(iter(summary.values()))["prosody"]:
        lines.append(
            f"| prosody: {k} | " + " | ".join(_fmt(s["prosody"][k]) for s in summary.values()) + " |"
        )
    stage_keys = sorted({k for s in summary.values() for k in s["stages_p50_s"]})
    for k in stage_keys:
        lines.append(
            f"| stage p50 (s): {k} | "
            + " | ".join(_fmt(s["stages_p50_s"].get(k)) for s in summary.values())
            + " |"
        )
    failures = [f"- {name}, {f}" for name, s in summary.items() for f in s.get("failures", [])]
    if failures:
        lines += ["", "## Failed turns", "", *failures]
    lines += task_report(summary)
    if codec:
        lines += codec_report(codec)
    return "\n".join(lines) + "\n"


def plot(scores: dict[str, list[ConversationScore]], out: Path) -> list[Path]:
    """Latency distribution per system, and F0 statistics side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    data = [[x for s in sc for x in s.latencies] for sc in scores.values()]
    ax.boxplot([d if d else [np.nan] for d in data], tick_labels=list(scores))
    ax.set_ylabel("response latency (s)")
    ax.set_title("End of user turn -> first system speech")
    fig.tight_layout()
    paths.append(out / "latency.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    keys = ("f0_std_st", "f0_range_st", "intensity_std_db")
    width = 0.8 / max(1, len(scores))
    for i, (name, sc) in enumerate(scores.items()):
        vals = [_mean([s.prosody.get(k) for s in sc if s.prosody]) or 0.0 for k in keys]
        ax.bar(np.arange(len(keys)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(keys)) + width * (len(scores) - 1) / 2, keys)
    ax.legend()
    ax.set_title("Prosody of each system's speech")
    fig.tight_layout()
    paths.append(out / "prosody.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def run(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Run the configured suite; returns the results written to ``out/results.json``."""
    judge_type = str(cfg.get("judge_compute_type") or JUDGE_COMPUTE_TYPES[0])
    make_judge = judge_factory(judge_type)  # a bad value fails now, not after the systems ran
    manifest = resolve_manifest(cfg)
    entries = read_manifest(manifest).entries
    if cfg.split:
        kept = [e for e in entries if e.split == cfg.split]
        if not kept:
            log.warning("no '%s' conversations in %s; using all %d", cfg.split, manifest, len(entries))
        entries = kept or entries
    if cfg.limit:
        entries = entries[: int(cfg.limit)]
    if not entries:
        raise ValueError(f"no conversations in {manifest}")
    overrides = {name: list(cfg.system_overrides.get(name, []) or []) for name in cfg.systems}
    for name in cfg.systems:  # a missing checkpoint fails now, not after the other systems ran
        check_system(name, overrides[name])
    codec = bench_codec(cfg) if cfg.get("codec_metrics") else None
    # Systems first, then the codec's timing pass, then the judge: nothing torch runs is timed next to a
    # live CTranslate2 model (see WhisperSTT).
    seed = cfg.get("seed")
    machine = machine_context()  # the latencies' and real-time factors' context: how busy the CPU was
    outputs = {
        name: run_system(name, overrides[name], entries, bool(cfg.realtime), seed) for name in cfg.systems
    }
    codec_results = None
    judge = None
    if codec is not None:
        c = cfg.codec_eval
        factory = functools.partial(make_judge, cfg.judge) if c.wer else None
        channels, judge = codec_metrics(codec[0], entries, list(c.channels), factory, out, int(c.plots))
        codec_results = {"source": codec[1], "channels": channels}
    # The codec metrics' judge when they had one: loaded once.
    judge = judge or make_judge(cfg.judge)
    scores = {name: judge_outputs(outs, judge) for name, outs in outputs.items()}
    summary = {name: summarize(sc, interrupted_count(entries)) for name, sc in scores.items()}
    meta = {
        "suite": cfg.get("suite_name"),
        "clock": "real time" if cfg.realtime else "offline clock",
        "seed": seed,
        "manifest": str(manifest),
        "conversations": len(entries),
        "judge": cfg.judge,
        "judge_compute_type": judge_type,
        "machine": cfg.machine,
        "machine_context": machine,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "meta": meta,
        "summary": summary,
        "conversations": {n: [s.__dict__ for s in sc] for n, sc in scores.items()},
    }
    if codec_results is not None:
        results["codec"] = codec_results
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable))
    text = report(summary, meta, codec_results)
    (out / "report.md").write_text(text)
    plot(scores, out)
    print(text)
    print(f"wrote {out}/results.json, report.md, latency.png, prosody.png")
    return results


@hydra.main(config_path=str(CONFIG_DIR), config_name="bench", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


def main(argv: list[str] | None = None) -> int:
    _hydra_main()
    return 0
