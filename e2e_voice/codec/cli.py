"""``e2e-voice codec``: audio files to codes files and back, with any codec checkpoint.

    e2e-voice codec encode speech.wav                 # -> speech.codes.safetensors
    e2e-voice codec decode speech.codes.safetensors   # -> speech.decoded.wav (24 kHz)
    e2e-voice codec roundtrip clips/ -o recon/        # -> recon/<name>.recon.wav, and a table
    e2e-voice codec info speech.codes.safetensors     # or a codec file: rates, levels, size, SHA-256

Inputs are files, globs or folders (every wav/flac/ogg/mp3 inside). A file that fails (corrupt, empty,
NaN samples, codes from another codec) is reported and skipped; the others go on, and the exit code is
1. Outputs are written atomically and never overwrite an existing file unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path
from typing import Any

from e2e_voice.audio.io import AudioError, load_audio, resample, save_audio

DEFAULT_CODEC = "checkpoints/codec_cpu/codec.safetensors"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class _Skip(Exception):
    """One input that cannot be processed; the message says why and what to do."""


def _expand(inputs: list[str], suffixes: tuple[str, ...]) -> list[Path]:
    """Files, globs and folders (searched recursively for ``suffixes``), in order, without repeats."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.name.lower().endswith(suffixes))
            if not found:
                print(f"warning: no {'/'.join(suffixes)} files under {p}", file=sys.stderr)
            out += found
        elif any(ch in item for ch in "*?["):
            matched = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matched:
                print(f"warning: {item!r} matches no file", file=sys.stderr)
            out += matched
        else:
            out.append(p)  # a missing file is reported when it is read
    return list(dict.fromkeys(out))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".codes.safetensors", *AUDIO_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _target(src: Path, out: str | None, n_inputs: int, suffix: str) -> Path:
    """Where ``src``'s output goes: next to it, into the folder ``out``, or to the file ``out``."""
    if out is None:
        return src.with_name(_stem(src) + suffix)
    o = Path(out)
    if n_inputs == 1 and not o.is_dir() and o.suffix:
        return o
    return o / (_stem(src) + suffix)


def _check_free(path: Path, overwrite: bool, src: Path | None = None) -> None:
    if src is not None and path.resolve() == src.resolve():
        raise _Skip(f"{path} is the input itself; pass -o to write elsewhere")
    if path.exists() and not overwrite:
        raise _Skip(f"{path} exists; pass --overwrite to replace it, or -o to write elsewhere")


def _write(path: Path, save: Any, *args: Any) -> None:
    """``save(path, *args)``, with a failed write (no such folder, read-only, /proc, disk full) reported
    as this input's error rather than a traceback; the writers are atomic, so nothing is left behind."""
    from safetensors import SafetensorError

    try:
        save(path, *args)
    except (OSError, SafetensorError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise _Skip(f"cannot write {path} ({first}); pass -o with a writable folder") from exc


class _CodecCache:
    """Loads the codec once per checkpoint and hashes its file once."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads
        self._loaded: dict[str, tuple[Any, str, Path]] = {}

    def get(self, name: str) -> tuple[Any, str, Path]:
        if name not in self._loaded:
            import torch

            from e2e_voice.assets.registry import sha256_file
            from e2e_voice.codec.codec import _resolve_checkpoint, load_codec

            if self.threads:
                torch.set_num_threads(self.threads)
            path = _resolve_checkpoint(name)
            try:
                codec = load_codec(path)
            except Exception as exc:  # a wav, a torn download, a training checkpoint: not a codec file
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ValueError(
                    f"cannot load {path} as a codec ({first}); pass --checkpoint with a codec"
                    f" .safetensors file (e.g. {DEFAULT_CODEC}) or 'mimi-kyutai'"
                ) from exc
            self._loaded[name] = (codec, sha256_file(path), path)
        return self._loaded[name]


def _encode_one(src: Path, args: argparse.Namespace, cache: _CodecCache) -> tuple[Any, dict[str, Any]]:
    from e2e_voice.codec.files import Codes, encode_audio

    codec, sha, _ = cache.get(args.checkpoint)
    if args.num_codebooks:
        codec.set_num_codebooks(args.num_codebooks)
    try:
        import soundfile as sf

        audio = load_audio(src, sample_rate=codec.sample_rate, mono=args.channels == "mix")
        source_sr = int(sf.info(str(src)).samplerate)
    except AudioError as exc:
        raise _Skip(str(exc)) from exc
    t0 = time.perf_counter()
    try:
        codes = encode_audio(codec, audio, max_whole_seconds=args.max_whole_seconds, progress=args.progress)
    except ValueError as exc:
        raise _Skip(str(exc)) from exc
    seconds = audio.shape[-1] / codec.sample_rate
    result = Codes(
        codes=codes,
        num_samples=int(audio.shape[-1]),
        sample_rate=codec.sample_rate,
        frame_rate=codec.frame_rate,
        cardinality=codec.cardinality,
        codec_sha256=sha,
        codec=str(args.checkpoint),
        source=src.name,
        source_sample_rate=source_sr,
        channels=args.channels,
    )
    row = {"file": str(src), "seconds": seconds, "encode_rtf": (time.perf_counter() - t0) / seconds}
    return result, row


def _decode_one(codes: Any, args: argparse.Namespace, cache: _CodecCache) -> tuple[Any, int, dict[str, Any]]:
    from e2e_voice.codec.files import decode_codes

    name = args.checkpoint or codes.codec or DEFAULT_CODEC
    try:
        codec, sha, path = cache.get(name)
    except FileNotFoundError as exc:
        raise _Skip(f"{exc}; the codes name codec {codes.codec!r}: pass --checkpoint PATH") from exc
    if sha != codes.codec_sha256 and not args.ignore_codec_mismatch:
        raise _Skip(
            f"the codes were made by a codec with SHA-256 {codes.codec_sha256[:12]}…"
            f" ({codes.codec or 'unnamed'}), not {path} ({sha[:12]}…):"
            " codes only mean something to their own codec. Pass --checkpoint with that file,"
            " or --ignore-codec-mismatch to decode anyway"
        )
    if codes.cardinality != codec.cardinality or codes.num_codebooks > codec.total_codebooks:
        raise _Skip(
            f"the codes have {codes.num_codebooks} levels of {codes.cardinality} entries; {path} has"
            f" {codec.total_codebooks} of {codec.cardinality}"
        )
    t0 = time.perf_counter()
    audio = decode_codes(codec, codes.codes, codes.num_samples, args.max_whole_seconds, args.progress)
    row = {"decode_rtf": (time.perf_counter() - t0) / max(codes.seconds, 1e-9)}
    sr = codec.sample_rate
    if args.sample_rate == "source" and codes.source_sample_rate:
        audio, sr = resample(audio, sr, codes.source_sample_rate), codes.source_sample_rate
    elif args.sample_rate not in ("source", None):
        audio, sr = resample(audio, sr, int(args.sample_rate)), int(args.sample_rate)
    return audio, sr, row


def _info_one(src: Path, cache: _CodecCache) -> dict[str, Any]:
    """A codes file's summary, or a codec checkpoint's (a file, or a registry name)."""
    from e2e_voice.assets.specs import MODELS
    from e2e_voice.codec.files import codec_info, codes_info, is_codec_checkpoint, load_codes

    if str(src) in MODELS or is_codec_checkpoint(src):
        codec, sha, path = cache.get(str(src))
        return {"file": str(path), **codec_info(codec, path, sha)}
    return {"file": str(src), "kind": "codes", **codes_info(load_codes(src))}


def _run(args: argparse.Namespace) -> int:
    from e2e_voice.codec.files import CODES_SUFFIX, CodesFileError, load_codes, save_codes

    cache = _CodecCache(args.threads)
    suffixes = (CODES_SUFFIX,) if args.action in ("decode", "info") else AUDIO_SUFFIXES
    inputs = _expand(args.inputs, suffixes)
    if not inputs:
        print("error: no input files", file=sys.stderr)
        return 2
    failed = 0
    rows: list[dict[str, Any]] = []
    for src in inputs:
        try:
            if args.action == "info":
                print(json.dumps(_info_one(src, cache), indent=2))
                continue
            if args.action == "encode":
                dst = _target(src, args.out, len(inputs), CODES_SUFFIX)
                _check_free(dst, args.overwrite, src)
                codes, row = _encode_one(src, args, cache)
                _write(dst, save_codes, codes)
                row.update(out=str(dst), kbps=codes.bitrate * codes.codes.shape[0] / 1000)
            elif args.action == "decode":
                dst = _target(src, args.out, len(inputs), ".decoded.wav")
                _check_free(dst, args.overwrite, src)
                codes = load_codes(src)
                audio, sr, row = _decode_one(codes, args, cache)
                _write(dst, save_audio, audio, sr)
                row.update(file=str(src), seconds=codes.seconds, out=str(dst))
            else:  # roundtrip
                dst = _target(src, args.out, len(inputs), ".recon.wav")
                _check_free(dst, args.overwrite, src)
                codes, row = _encode_one(src, args, cache)
                audio, sr, decoded = _decode_one(codes, args, cache)
                _write(dst, save_audio, audio, sr)
                row.update(decoded, out=str(dst), kbps=codes.bitrate * codes.codes.shape[0] / 1000)
            rows.append(row)
            print(f"wrote {row['out']}", file=sys.stderr)
        except (_Skip, CodesFileError, AudioError) as exc:
            failed += 1
            print(f"error: {src}: {exc}", file=sys.stderr)
    if rows:
        print(_table(rows))
    if failed:
        print(f"{failed} of {len(inputs)} inputs failed (see above)", file=sys.stderr)
    return 1 if failed else 0


def _table(rows: list[dict[str, Any]]) -> str:
    cols = [c for c in ("file", "seconds", "kbps", "encode_rtf", "decode_rtf", "out") if c in rows[0]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e-voice codec",
        description="Encode audio files to codes files, decode them, or both (round trip). Outputs go next"
        " to each input unless -o names a file (one input) or a folder.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("inputs", nargs="+", help="files, globs or folders")
    common.add_argument("-o", "--out", default=None, help="output file (one input) or folder")
    common.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    common.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    common.add_argument(
        "--max-whole-seconds",
        type=float,
        default=None,
        help="clips up to this long take the whole-clip pass (memory grows with the square of the"
        " length: ~1.2 GB at 300 s), longer ones stream frame by frame (constant memory, ~5x slower;"
        " the same codes up to float rounding); default 300",
    )
    common.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    enc = argparse.ArgumentParser(add_help=False)
    enc.add_argument(
        "--checkpoint", default=DEFAULT_CODEC, help=f"codec file or 'mimi-kyutai' ({DEFAULT_CODEC})"
    )
    enc.add_argument(
        "--num-codebooks", type=int, default=None, help="RVQ levels to keep (default: the codec's)"
    )
    enc.add_argument(
        "--channels",
        choices=["mix", "keep"],
        default="mix",
        help="mix: average the channels into one; keep: code each channel (decodes to as many)",
    )
    dec = argparse.ArgumentParser(add_help=False)
    dec.add_argument(
        "--sample-rate",
        default=None,
        help="output rate in Hz, or 'source' for the encoded file's rate (default: the codec's, 24000)",
    )
    dec.add_argument(
        "--ignore-codec-mismatch",
        action="store_true",
        help="decode codes with a codec other than the one that made them",
    )
    sub.add_parser("encode", parents=[common, enc], help="audio files -> NAME.codes.safetensors")
    p_dec = sub.add_parser("decode", parents=[common, dec], help="codes files -> NAME.decoded.wav")
    p_dec.add_argument(
        "--checkpoint", default=None, help="codec file (default: the one the codes name, if it exists)"
    )
    sub.add_parser("roundtrip", parents=[common, enc, dec], help="audio files -> codes -> NAME.recon.wav")
    p_info = sub.add_parser(
        "info", help="what a codes file holds, or a codec checkpoint's rates, levels and size (JSON)"
    )
    p_info.add_argument("inputs", nargs="+", help="codes files, codec files or 'mimi-kyutai'")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from e2e_voice.assets.registry import ModelNotAvailableError
    from e2e_voice.codec.files import MAX_WHOLE_SECONDS

    if args.action == "info":
        args.out, args.overwrite, args.threads = None, False, None
    elif args.max_whole_seconds is None:
        args.max_whole_seconds = MAX_WHOLE_SECONDS
    elif args.max_whole_seconds < 0:
        parser.error("--max-whole-seconds must be >= 0")
    rate = getattr(args, "sample_rate", None)
    if rate not in (None, "source") and (not str(rate).isdigit() or int(rate) <= 0):
        parser.error(f"--sample-rate must be a positive number of Hz or 'source', got {rate!r}")
    if getattr(args, "num_codebooks", None) is not None and args.num_codebooks < 1:
        parser.error("--num-codebooks must be >= 1")
    try:
        return _run(args)
    except (FileNotFoundError, ValueError, ModelNotAvailableError) as exc:  # the codec cannot be loaded
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
