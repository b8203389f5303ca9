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
    "converse": ("e2e_voice.converse", "play a user recording through a system (default: the cascade)"),
}

# Subcommands the design calls for that have not landed yet, with the issue that brings each.
PLANNED: dict[str, tuple[int, str]] = {
    "synth-data": (3, "generate the synthetic two-channel dialogue corpus"),
    "train-codec": (4, "train a Mimi codec"),
    "train-lm": (5, "train the joint speech-text model"),
    "serve": (6, "full-duplex websocket server and browser page"),
    "chat": (6, "talk to a system with the local microphone"),
    "bench": (8, "benchmark the end-to-end model against the cascade"),
    "watermark": (9, "embed and detect audio watermarks"),
}


def _usage() -> str:
    lines = ["usage: e2e-voice COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
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
    module = importlib.import_module(COMMANDS[ns.command][0])
    entry: Callable[[list[str]], int | None] = module.main
    # Hydra reads sys.argv; present the subcommand as the program name.
    sys.argv = [f"e2e-voice {ns.command}", *rest]
    code = entry(rest)
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
