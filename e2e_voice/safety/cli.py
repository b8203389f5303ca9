"""``e2e-voice watermark`` and ``e2e-voice voices``: detect/embed watermarks, register consented voices."""

from __future__ import annotations

import argparse
import sys

from e2e_voice.audio.io import AudioError, load_audio, save_audio


def watermark_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="e2e-voice watermark", description="audio watermarks (Perth by default, or AudioSeal)"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=["perth", "audioseal"], default="perth")
    common.add_argument(
        "--model-path",
        default=None,
        help="local checkpoint: Perth's .pth.tar, or AudioSeal's directory (generator/detector_base.pth)",
    )
    common.add_argument("--message", type=int, default=None, help="AudioSeal: 16-bit payload to embed")
    common.add_argument(
        "--allow-pickle",
        action="store_true",
        help="AudioSeal: load a trusted checkpoint restricted loading refuses",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p_detect = sub.add_parser(
        "detect", parents=[common], help="say, per file, whether a watermark is present"
    )
    p_detect.add_argument("files", nargs="+")
    p_detect.add_argument("--threshold", type=float, default=0.5)
    p_embed = sub.add_parser("embed", parents=[common], help="write a watermarked copy of a file")
    p_embed.add_argument("input")
    p_embed.add_argument("output")
    args = parser.parse_args(argv)

    from e2e_voice.safety.watermark import load_watermarker

    options: dict[str, object] = {"threshold": getattr(args, "threshold", 0.5)}
    if args.backend == "audioseal":
        options["allow_pickle"] = args.allow_pickle
        if args.message is not None:
            options["message"] = args.message
    elif args.message is not None or args.allow_pickle:
        parser.error("--message and --allow-pickle apply to --backend audioseal only")
    try:
        wm = load_watermarker(args.backend, args.model_path, **options)
    except (RuntimeError, ValueError) as exc:  # a missing or corrupt checkpoint: say how to get it
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "embed":
        return _embed(wm, args.input, args.output)
    unreadable = 0
    print(f"{'file':<48} {'watermark':>9} {'confidence':>10}")
    import soundfile as sf

    for path in args.files:
        try:
            audio = load_audio(path, sample_rate=None, mono=False)  # [C, T]
            sr = sf.info(path).samplerate
            # Each channel on its own: a conversation file holds the assistant (marked) beside the user.
            found = [(c, wm.detect(audio[c], sr)) for c in range(audio.shape[0])]
        except (AudioError, ValueError, RuntimeError) as exc:
            unreadable += 1
            print(f"{path:<48} {'error':>9}  {exc}", file=sys.stderr)
            continue
        for c, det in found:
            name = path if len(found) == 1 else f"{path} [ch{c}]"
            print(f"{name:<48} {'yes' if det.present else 'no':>9} {det.confidence:10.3f}")
    return 2 if unreadable else 0


def _embed(wm: object, src: str, dst: str) -> int:
    """Write a watermarked copy of ``src`` to ``dst``; bad input (unreadable, too short, ``dst`` being
    ``src``, an unwritable ``dst``) is one error line and exit code 2, and never touches ``src``."""
    from pathlib import Path

    import soundfile as sf

    if Path(dst).resolve() == Path(src).resolve():
        print(
            f"error: the output {dst} is the input; name another file for the watermarked copy",
            file=sys.stderr,
        )
        return 2
    try:
        audio = load_audio(src, sample_rate=None)
        sr = sf.info(src).samplerate
        marked = wm.embed(audio[0], sr)  # type: ignore[attr-defined]
    except (AudioError, ValueError, RuntimeError) as exc:
        print(f"error: cannot watermark {src}: {exc}", file=sys.stderr)
        return 2
    try:
        save_audio(dst, marked, sr)
    except (AudioError, OSError, RuntimeError) as exc:
        print(f"error: cannot write {dst} ({exc}); name a writable .wav/.flac/.ogg path", file=sys.stderr)
        return 2
    print(f"wrote {dst} (watermarked)")
    return 0


def voices_main(argv: list[str] | None = None) -> int:
    from e2e_voice.safety.consent import ConsentError, ConsentRegistry

    parser = argparse.ArgumentParser(prog="e2e-voice voices", description="consent records for custom voices")
    sub = parser.add_subparsers(dest="action", required=True)
    p_reg = sub.add_parser("register", help="record consent for a voice file (reference audio or voice pack)")
    p_reg.add_argument("file")
    p_reg.add_argument("--name", required=True)
    p_reg.add_argument("--who", required=True, help="the person whose voice it is")
    p_reg.add_argument("--statement", required=True, help="their consent statement")
    sub.add_parser("list", help="list registered voices")
    args = parser.parse_args(argv)
    try:
        registry = ConsentRegistry()
        if args.action == "register":
            r = registry.register(args.file, args.name, args.who, args.statement)
            print(f"registered '{r.name}' ({r.sha256[:12]}…) for {r.who} at {r.when} in {registry.path}")
        else:
            print(f"consent file: {registry.path}")
            for r in registry.records.values():
                print(f"  {r.name:<20} {r.who:<24} {r.when}  {r.sha256[:12]}…  {r.statement[:40]}")
    except ConsentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
