"""Digests of a synthetic corpus's audio, and where two builds of it differ.

``synth-data`` writes, into ``synth_summary.json``, one SHA-256 over the whole corpus
(``audio_sha256``) and one per channel of every conversation (``audio_sha256_channels``: channel 0 is
the assistant, 1 the user). Two machines that built the same corpus from the same answer bank then
compare the files rather than the training runs they feed::

    python -m e2e_voice.data.digests data/generated/synthetic_shared other_machine/synth_summary.json

prints how many channels differ, by the voice that spoke them (read from the first corpus's manifests),
so a difference can be traced to a TTS engine before a training run is blamed for it. Several others may
follow the first (``data/digests/*.json``: every committed build); the exit status is 0 when the first
matches at least one of them. ``synth-data`` also records the machine that built a corpus
(:func:`machine_fingerprint`: the CPU's family, model and widest vector instructions, and the versions of the
libraries that compute the audio), and ``--save FILE`` keeps a build's digests and machine in a small file
to commit, so the next machine has something to compare with::

    python -m e2e_voice.data.digests data/generated/synthetic_shared --save data/digests/NAME.json

Digests are over the 16-bit samples, not file bytes: two FLAC encoders (or compression levels) write
the same samples as different bytes.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROLES = ("assistant", "user")  # channel order of the corpus's stereo files
# The Python packages whose arithmetic ends up in a corpus's samples: the TTS engines' runtimes (Kokoro and
# Piper run in onnxruntime), the aligner (CTranslate2), the resampler and the mixing.
AUDIO_PACKAGES = (
    "numpy",
    "torch",
    "onnxruntime",
    "ctranslate2",
    "faster-whisper",
    "soxr",
    "soundfile",
    "sphn",
)
# Widest vector instructions first: the first of these flags the CPU reports names its class. Builds on
# CPUs with and without AVX-512 were seen to differ (README, "Comparing builds across machines").
VECTOR_ISAS = (
    ("avx512f", "avx512"),
    ("avx2", "avx2"),
    ("avx", "avx"),
    ("sse4_2", "sse4.2"),
    ("asimd", "neon"),
)


def audio_digests(out_dir: Path, entries: list[dict[str, Any]]) -> tuple[str, dict[str, list[str]]]:
    """The corpus digest and each file's per-channel digests, reading every file once.

    Args:
        out_dir: the corpus directory (entries' ``audio`` paths are relative to it).
        entries: manifest entries, each with an ``audio`` path.

    Returns:
        (SHA-256 over every file's interleaved int16 samples in file-name order,
        ``{audio path: [SHA-256 of channel 0, of channel 1, ...]}``).
    """
    import numpy as np
    import soundfile as sf

    whole = hashlib.sha256()
    channels: dict[str, list[str]] = {}
    for rel in sorted(str(e["audio"]) for e in entries):
        samples, _ = sf.read(str(out_dir / rel), dtype="int16", always_2d=True)
        whole.update(samples.tobytes())
        channels[rel] = [hashlib.sha256(np.ascontiguousarray(c).tobytes()).hexdigest() for c in samples.T]
    return whole.hexdigest(), channels


def audio_digest(out_dir: Path, entries: list[dict[str, Any]]) -> str:
    """SHA-256 over the corpus's 16-bit samples, conversation by conversation in file-name order."""
    return audio_digests(out_dir, entries)[0]


def cpu_info(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` (empty off Linux or unreadable)."""
    info: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block ends at its blank line
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def _espeak_version() -> str | None:
    try:
        done = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """``{name: installed version}`` of ``names``; a package that is not installed is left out."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine_fingerprint(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """What may change a corpus's samples from one machine to the next.

    Returns:
        ``{"cpu": model name, "vendor", "family", "model", "vector_isa": "avx512" | "avx2" | ...,
        "cores", "arch", "python", "packages": {name: version}, "espeak_ng": version line}``; a value that
        cannot be read is None, a package that is not installed is left out.
    """
    info = cpu_info(cpuinfo)
    flags = set((info.get("flags") or info.get("Features") or "").split())
    packages = package_versions(AUDIO_PACKAGES)
    return {
        "cpu": info.get("model name"),
        "vendor": info.get("vendor_id"),
        "family": info.get("cpu family"),
        "model": info.get("model"),
        "vector_isa": next((isa for flag, isa in VECTOR_ISAS if flag in flags), None),
        "cores": os.cpu_count(),
        "arch": platform.machine() or None,
        "python": platform.python_version(),
        "packages": packages,
        "espeak_ng": _espeak_version(),
    }


def describe_machine(machine: Any) -> str:
    """One line for a :func:`machine_fingerprint` (or a free-text machine, as older digest files hold)."""
    if not isinstance(machine, dict):
        return str(machine) if machine else "machine not recorded"
    parts = [str(machine.get("cpu") or machine.get("arch") or "unknown CPU")]
    if machine.get("family") is not None:
        parts.append(f"family {machine['family']} model {machine.get('model')}")
    parts.append(str(machine.get("vector_isa") or "vector ISA unknown"))
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    torch_version = (machine.get("packages") or {}).get("torch")
    if torch_version:
        parts.append(f"torch {torch_version}")
    return ", ".join(parts)


def _summary(path: Path) -> tuple[dict[str, Any], Path]:
    """A build's summary (or saved digest file) and that file's path."""
    file = path / "synth_summary.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no synth_summary.json at {path}: give a corpus directory or its summary file"
        )
    summary = json.loads(file.read_text())
    if "audio_sha256_channels" not in summary:
        raise ValueError(
            f"{file} has no per-channel digests (audio_sha256_channels): it was written before 2026-12-02;"
            " rebuild the corpus with `e2e-voice synth-data` (a rebuild reuses its TTS cache)"
        )
    return summary, file


def _voices(corpus_dir: Path) -> dict[str, dict[str, str]]:
    """``{audio path: {role: voice}}`` from the corpus's manifests (empty when they are not there)."""
    voices: dict[str, dict[str, str]] = {}
    for manifest in sorted(corpus_dir.glob("*.jsonl")):
        for line in manifest.read_text().splitlines():
            entry = json.loads(line)
            if "audio" in entry and "voices" in entry:
                voices[str(entry["audio"])] = dict(entry["voices"])
    return voices


def _build_voices(summary: dict[str, Any], file: Path) -> dict[str, dict[str, str]]:
    """A build's ``{audio path: {role: voice}}``: a saved digest file carries them, a corpus's summary has
    its manifests beside it (a saved file's folder may hold unrelated manifests: they are not read)."""
    if "voices" in summary:
        return dict(summary["voices"])
    return _voices(file.parent) if file.name == "synth_summary.json" else {}


def compare(a: Path, b: Path) -> dict[str, Any]:
    """Which channels of two builds differ, by voice engine.

    Returns:
        ``{"same_corpus": bool, "channels": n, "differ": [(audio, role, voice), ...],
        "by_engine": {engine: [differing, total]}, "only_in_a": [...], "only_in_b": [...],
        "machine_b": the machine b records, or None}``.
    """
    sa, file_a = _summary(a)
    sb, _ = _summary(b)
    ca, cb = sa["audio_sha256_channels"], sb["audio_sha256_channels"]
    voices = _build_voices(sa, file_a)
    differ: list[tuple[str, str, str]] = []
    by_engine: dict[str, list[int]] = {}
    for rel in sorted(set(ca) & set(cb)):
        for i, (da, db) in enumerate(zip(ca[rel], cb[rel], strict=False)):
            role = ROLES[i] if i < len(ROLES) else f"channel {i}"
            voice = voices.get(rel, {}).get(role, "?")
            engine = voice.split(":")[0]
            counts = by_engine.setdefault(engine, [0, 0])
            counts[1] += 1
            if da != db:
                counts[0] += 1
                differ.append((rel, role, voice))
    return {
        "same_corpus": sa.get("audio_sha256") == sb.get("audio_sha256"),
        "channels": sum(v[1] for v in by_engine.values()),
        "differ": differ,
        "by_engine": by_engine,
        "only_in_a": sorted(set(ca) - set(cb)),
        "only_in_b": sorted(set(cb) - set(ca)),
        "machine_b": sb.get("machine"),
    }


def save(corpus: Path, out: Path, label: str | None = None) -> dict[str, Any]:
    """Write a build's digests, date, machine and voices to ``out`` (a small JSON file to commit and compare
    with, also as the first build: its voices count the differences by engine).

    The machine is the one ``synth-data`` recorded in the summary; a summary written before machines were
    recorded gets this machine's, marked as read when saving (it may not be the one that built the corpus).

    Returns:
        The record written.
    """
    summary, file = _summary(corpus)
    built = summary.get("built") or datetime.date.fromtimestamp(file.stat().st_mtime).isoformat()
    record: dict[str, Any] = {"corpus": label or summary.get("corpus") or str(corpus), "built": built}
    if summary.get("machine"):
        record["machine"] = summary["machine"]
    else:
        record["machine"] = machine_fingerprint()
        record["machine_read"] = "when saving: the summary did not record the machine that built the corpus"
    record["audio_sha256"] = summary["audio_sha256"]
    record["audio_sha256_channels"] = summary["audio_sha256_channels"]
    # The voices let a later comparison from this file count differences by TTS engine.
    voices = _build_voices(summary, file)
    if voices:
        record["voices"] = voices
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out)  # whole or not at all: a committed file is never left half-written
    return record


def _print_comparison(a: Path, b: Path, result: dict[str, Any], list_channels: bool) -> None:
    n_diff = len(result["differ"])
    verdict = (
        "the same audio" if result["same_corpus"] else f"{n_diff} of {result['channels']} channels differ"
    )
    print(f"{a} vs {b}: {verdict}")
    print(f"  {b}: {describe_machine(result['machine_b'])}")
    print(f"  {'engine':<10} {'differ':>6} {'of':>4}")
    for engine, (d, total) in sorted(result["by_engine"].items()):
        print(f"  {engine:<10} {d:6d} {total:4d}")
    for key in ("only_in_a", "only_in_b"):
        if result[key]:
            print(f"  {key.replace('_', ' ')}: {len(result[key])} files ({', '.join(result[key][:3])} ...)")
    if list_channels:
        for rel, role, voice in result["differ"]:
            print(f"    {rel} {role:<9} {voice}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e_voice.data.digests",
        description="Compare builds of a synthetic corpus channel by channel (their synth_summary.json),"
        " or save one build's digests to commit.",
    )
    parser.add_argument(
        "a", type=Path, help="a corpus directory or its synth_summary.json (voices read here)"
    )
    parser.add_argument(
        "b", type=Path, nargs="*", help="other builds' directories, summaries or saved digest files"
    )
    parser.add_argument("--list", action="store_true", help="print every differing channel")
    parser.add_argument("--save", type=Path, default=None, help="write A's digests and machine to this file")
    parser.add_argument("--label", default=None, help="with --save: what the corpus is (default: A's path)")
    ns = parser.parse_args(argv)
    if not ns.b and ns.save is None:
        parser.error("give another build to compare with (e.g. data/digests/*.json), or --save FILE")
    try:
        print(f"{ns.a}: {describe_machine(_summary(ns.a)[0].get('machine'))}")
        if ns.save is not None:
            record = save(ns.a, ns.save, ns.label)
            print(f"wrote {ns.save} (audio sha256 {record['audio_sha256'][:8]}…, built {record['built']})")
        matches = []
        for b in ns.b:
            result = compare(ns.a, b)
            _print_comparison(ns.a, b, result, ns.list)
            if result["same_corpus"]:
                matches.append(str(b))
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not ns.b:
        return 0
    if len(ns.b) > 1:
        print(f"same audio as: {', '.join(matches)}" if matches else "same audio as: none of them")
    return 0 if matches else 1


if __name__ == "__main__":
    raise SystemExit(main())
