"""The ``e2e-voice`` command: one entry point, one subcommand per job.

Hydra apps take ``key=value`` overrides after the subcommand name, e.g.
``e2e-voice demo demo.question="Why is the sky blue?"``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

# name -> (module with a main(), one-line help). Hydra apps parse their own overrides.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("e2e_voice.assets.cli", "install, list and verify the offline model bundle"),
    "demo": ("e2e_voice.demo", "answer a question offline: LLM -> Kokoro TTS -> codecs -> Whisper WER"),
    "serve": ("e2e_voice.serve.app", "full-duplex websocket server (moshi protocol) and browser page"),
    "chat": ("e2e_voice.serve.chat", "talk to a running server with the local microphone and speakers"),
    "watermark": ("e2e_voice.safety.cli:watermark_main", "detect or embed Perth audio watermarks"),
    "voices": ("e2e_voice.safety.cli:voices_main", "register custom voices with a consent record"),
    "train-lm": (
        "train.lm",
        "train the joint speech-text model (Hydra overrides, e.g. +experiment=lm_tiny_cpu)",
    ),
    "train-codec": (
        "train.codec",
        "train a Mimi codec (Hydra; e.g. +experiment=codec_cpu_deep_qd0_floor80, codec_gpu, codec_debug)",
    ),
    "export": (
        "train.export",
        "shrink a training run into a shippable checkpoint (codec file / LM directory)",
    ),
    "codec": ("e2e_voice.codec.cli", "encode, decode or round-trip audio files with a codec checkpoint"),
    "synth-data": ("e2e_voice.data.synth_cli", "generate the synthetic two-channel dialogue corpus"),
    "converse": ("e2e_voice.converse", "play a user recording through a system (default: the cascade)"),
    "bench": ("eval.bench", "run systems through the same conversations: latency, turn-taking, WER, prosody"),
}

# Subcommands the design calls for that have not landed yet, with the issue that brings each.
PLANNED: dict[str, tuple[int, str]] = {}


def _usage() -> str:
    lines = ["usage: e2e-voice COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    if PLANNED:
        lines += ["", "planned (not available yet):"]
        lines += [f"  {name:<12} {help_} (issue #{issue})" for name, (issue, help_) in PLANNED.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="e2e-voice", add_help=False)
    parser.add_argument("command", nargs="?")
    ns, rest = parser.parse_known_args(args[:1])
    rest = args[1:]
    if ns.command in (None, "-h", "--help", "help"):
        print(_usage())
        return 0
    if ns.command in PLANNED:
        issue, help_ = PLANNED[ns.command]
        print(
            f"e2e-voice {ns.command}: not available yet ({help_}); it lands with issue #{issue}.",
            file=sys.stderr,
        )
        return 2
    if ns.command not in COMMANDS:
        print(f"e2e-voice: unknown command '{ns.command}'\n\n{_usage()}", file=sys.stderr)
        return 2
    target = COMMANDS[ns.command][0]
    module_name, _, func = target.partition(":")
    entry: Callable[[list[str]], int | None] = getattr(importlib.import_module(module_name), func or "main")
    # Hydra reads sys.argv; present the subcommand as the program name.
    sys.argv = [f"e2e-voice {ns.command}", *rest]
    code = entry(rest)
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
