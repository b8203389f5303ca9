"""Digests of a synthetic corpus's audio, and where two builds of it differ.

``synth-data`` writes, into ``synth_summary.json``, one SHA-256 over the whole corpus
(``audio_sha256``) and one per channel of every conversation (``audio_sha256_channels``: channel 0 is
the assistant, 1 the user). Two machines that built the same corpus from the same answer bank then
compare the files rather than the training runs they feed::

    python -m e2e_voice.data.digests data/generated/synthetic_shared other_machine/synth_summary.json

prints how many channels differ, by the voice that spoke them (read from the first corpus's manifests),
so a difference can be traced to a TTS engine before a training run is blamed for it.

Digests are over the 16-bit samples, not file bytes: two FLAC encoders (or compression levels) write
the same samples as different bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROLES = ("assistant", "user")  # channel order of the corpus's stereo files


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


def _summary(path: Path) -> tuple[dict[str, Any], Path]:
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
    return summary, file.parent


def _voices(corpus_dir: Path) -> dict[str, dict[str, str]]:
    """``{audio path: {role: voice}}`` from the corpus's manifests (empty when they are not there)."""
    voices: dict[str, dict[str, str]] = {}
    for manifest in sorted(corpus_dir.glob("*.jsonl")):
        for line in manifest.read_text().splitlines():
            entry = json.loads(line)
            if "audio" in entry and "voices" in entry:
                voices[str(entry["audio"])] = dict(entry["voices"])
    return voices


def compare(a: Path, b: Path) -> dict[str, Any]:
    """Which channels of two builds differ, by voice engine.

    Returns:
        ``{"same_corpus": bool, "channels": n, "differ": [(audio, role, voice), ...],
        "by_engine": {engine: [differing, total]}, "only_in_a": [...], "only_in_b": [...]}``.
    """
    sa, dir_a = _summary(a)
    sb, _ = _summary(b)
    ca, cb = sa["audio_sha256_channels"], sb["audio_sha256_channels"]
    voices = _voices(dir_a)
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
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e_voice.data.digests",
        description="Compare two builds of a synthetic corpus channel by channel (their synth_summary.json).",
    )
    parser.add_argument(
        "a", type=Path, help="a corpus directory or its synth_summary.json (voices read here)"
    )
    parser.add_argument("b", type=Path, help="the other build's directory or synth_summary.json")
    parser.add_argument("--list", action="store_true", help="print every differing channel")
    ns = parser.parse_args(argv)
    try:
        result = compare(ns.a, ns.b)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_diff = len(result["differ"])
    verdict = (
        "the same audio" if result["same_corpus"] else f"{n_diff} of {result['channels']} channels differ"
    )
    print(f"{ns.a} vs {ns.b}: {verdict}")
    print(f"{'engine':<10} {'differ':>6} {'of':>4}")
    for engine, (d, total) in sorted(result["by_engine"].items()):
        print(f"{engine:<10} {d:6d} {total:4d}")
    for key in ("only_in_a", "only_in_b"):
        if result[key]:
            print(f"{key.replace('_', ' ')}: {len(result[key])} files ({', '.join(result[key][:3])} ...)")
    if ns.list:
        for rel, role, voice in result["differ"]:
            print(f"  {rel} {role:<9} {voice}")
    return 0 if result["same_corpus"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
