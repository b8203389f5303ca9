"""Hydra entry point of ``e2e-voice synth-data`` and the one builder that reads its config.

Example: ``e2e-voice synth-data num_conversations=40 workers=2 out_dir=data/generated/synthetic``.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from e2e_voice.constants import CONFIG_DIR, repo_path
from e2e_voice.data.digests import audio_digests, describe_machine, machine_fingerprint
from e2e_voice.data.scenarios import TimingSettings
from e2e_voice.data.synth import SynthResult, SynthSettings, VoicePool, generate
from e2e_voice.data.task_corpus import TaskSettings
from e2e_voice.tts.engines import VoiceSpec


def _pair(value: Any, name: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"{name}: range [{lo}, {hi}] has its bounds reversed")
    return lo, hi


def _offset(value: Any, name: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(
            f"{name}: expected [start_s, end_s] (seconds added to word starts and ends), got {value}"
        )
    return float(value[0]), float(value[1])


def _pools(section: dict[str, Any], where: str) -> tuple[VoicePool, ...]:
    """The voice pools of a ``users``-style section (pools with weight 0 are off)."""
    pools = []
    for name, u in section.items():
        if not u or float(u.get("weight", 1.0)) <= 0:
            continue
        voices = u.get("voices") or []
        if not voices:
            raise ValueError(f"{where}.{name}: 'voices' is empty; list at least one voice or set weight: 0")
        pools.append(
            VoicePool(
                engine=u["engine"],
                voices=tuple(str(v) for v in voices),
                weight=float(u.get("weight", 1.0)),
                rate=_pair(u.get("rate", [1.0, 1.0]), f"{where}.{name}.rate"),
                pitch=None if u.get("pitch") is None else _pair(u["pitch"], f"{where}.{name}.pitch"),
                noise=None if u.get("noise") is None else _pair(u["noise"], f"{where}.{name}.noise"),
            )
        )
    if not pools:
        raise ValueError(f"no {where} voices enabled: give at least one {where}.<engine> a positive weight")
    return tuple(pools)


def _task(c: dict[str, Any]) -> TaskSettings | None:
    """The task settings when ``content.source=task`` (``corpus=task``), else None."""
    if c["content"]["source"] != "task":
        return None
    t = c.get("task")
    if not t:
        raise ValueError(
            "content.source=task needs the task settings: run `e2e-voice synth-data corpus=task`"
        )
    return TaskSettings(
        held_out_users=_pools(t["held_out_users"], "task.held_out_users"),
        weights={str(k): float(v) for k, v in t["weights"].items()},
        small_talk_prob=float(t.get("small_talk_prob", 0.3)),
        held_out_splits=tuple(str(x) for x in t.get("held_out_splits", ("valid", "test"))),
    )


def settings_from_config(cfg: DictConfig) -> SynthSettings:
    """Build :class:`SynthSettings` from the ``synth_data`` config (the only place that reads it)."""
    c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    out_dir = repo_path(c["out_dir"])
    a = c["assistant"]
    assistant = VoiceSpec(a["engine"], a["voice"], float(a.get("rate", 1.0)), a.get("pitch"), a.get("noise"))
    users = _pools(c["users"], "users")
    s = c["scenarios"]
    t = s["timing"]
    timing_kwargs: dict[str, Any] = {
        k: (_pair(v, f"scenarios.timing.{k}") if isinstance(v, list) else float(v)) for k, v in t.items()
    }
    timing = TimingSettings(**timing_kwargs)
    content = c["content"]
    return SynthSettings(
        out_dir=out_dir,
        num_conversations=int(c["num_conversations"]),
        seed=int(c["seed"]),
        workers=int(c["workers"]),
        audio_format=str(c["audio_format"]),
        exchanges=(int(c["exchanges"][0]), int(c["exchanges"][1])),
        splits={k: float(v) for k, v in c["splits"].items()},
        assistant=assistant,
        users=tuple(users),
        content_source=str(content["source"]),
        llm=dict(content["llm"]),
        answer_bank=None if content.get("answers") is None else Path(str(content["answers"])),
        follow_up_prob=float(content["follow_up_prob"]),
        history_exchanges=int(content["history_exchanges"]),
        prompt_splits=(
            None
            if content.get("prompt_splits") is None
            else {k: float(v) for k, v in content["prompt_splits"].items()}
        ),
        template_sentences=(int(content["template_sentences"][0]), int(content["template_sentences"][1])),
        alignment=str(c["alignment"]["method"]),
        aligner_model=str(c["alignment"]["model"]),
        aligner_path=c["alignment"].get("model_path"),
        align_offsets={
            k: _offset(v, f"alignment.offsets_s.{k}")
            for k, v in (c["alignment"].get("offsets_s") or {}).items()
        },
        scenario_weights={k: float(v) for k, v in s["weights"].items()},
        noise_prob=float(s["noise_prob"]),
        snr_db=_pair(s["snr_db"], "scenarios.snr_db"),
        noise_colors=tuple(str(x) for x in s["noise_colors"]),
        timing=timing,
        use_cache=bool(c["cache"]["enabled"]),
        cache_root=None if c["cache"].get("dir") is None else Path(c["cache"]["dir"]),
        watermark_assistant=bool(c.get("watermark_assistant", False)),
        resume=bool(c.get("resume", True)),
        task=_task(c),
    )


def summarize(result: SynthResult, settings: SynthSettings) -> dict[str, Any]:
    """Counts, rate and where the time went; also written to ``<out_dir>/synth_summary.json``."""
    counts: dict[str, int] = {}
    for e in result.entries:
        for tag in e["scenarios"]:
            counts[tag] = counts.get(tag, 0) + 1
    busy = sum(result.stage_seconds.values())
    summary = {
        "conversations": len(result.entries),
        "resumed": result.resumed,
        "per_split": {k: sum(e["split"] == k for e in result.entries) for k in result.manifests},
        "audio_seconds": result.audio_seconds,
        "wall_seconds": result.wall_seconds,
        "audio_seconds_per_wall_second": result.audio_seconds / max(result.wall_seconds, 1e-9),
        "hours_per_30_min": result.audio_seconds / max(result.wall_seconds, 1e-9) * 1800 / 3600,
        "workers": settings.workers,
        "stage_seconds": result.stage_seconds,
        "stage_share": {k: v / busy for k, v in result.stage_seconds.items()} if busy else {},
        "scenario_counts": counts,
        "manifests": {k: str(v) for k, v in result.manifests.items()},
    }
    # One digest over the corpus and one per channel of each file, so two machines' builds can be compared
    # file by file (`python -m e2e_voice.data.digests A B`).
    summary["audio_sha256"], summary["audio_sha256_channels"] = audio_digests(
        settings.out_dir, result.entries
    )
    # The samples depend on the CPU (builds with and without AVX-512 differ) and the libraries' versions.
    summary["built"] = datetime.date.today().isoformat()
    summary["machine"] = machine_fingerprint()
    (settings.out_dir / "synth_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """The run as a small table."""
    print(
        f"\n{summary['conversations']} conversations ({summary['per_split']}), "
        f"{summary['audio_seconds'] / 60:.1f} min of audio in {summary['wall_seconds']:.0f} s wall "
        f"with {summary['workers']} worker(s): {summary['audio_seconds_per_wall_second']:.2f}x real time "
        f"= {summary['hours_per_30_min']:.2f} h of conversation per 30 min"
        + (f" ({summary['resumed']} resumed from an earlier run)" if summary.get("resumed") else "")
    )
    print(f"\n{'stage':<8} {'seconds':>9} {'share':>6}   (render stages summed over workers)")
    for k, v in summary["stage_seconds"].items():
        print(f"{k:<8} {v:9.1f} {100 * summary['stage_share'].get(k, 0):5.1f}%")
    print(f"\nscenarios: {summary['scenario_counts']}")
    if "audio_sha256" in summary:
        print(f"audio sha256 (16-bit samples): {summary['audio_sha256']}")
    if "machine" in summary:
        print(f"built on: {describe_machine(summary['machine'])}")
    for split, path in summary["manifests"].items():
        print(f"{split:<6} {path}")


@hydra.main(config_path=str(CONFIG_DIR), config_name="synth_data", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    settings = settings_from_config(cfg)
    result = generate(settings)
    print_summary(summarize(result, settings))


def main(argv: list[str] | None = None) -> int:
    """Entry point used by ``e2e-voice synth-data`` (overrides are read from ``sys.argv``)."""
    _hydra_main()
    return 0
