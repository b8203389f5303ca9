"""The ``e2e-voice`` command: one entry point, one subcommand per job.

Hydra apps take ``key=value`` overrides after the subcommand name, e.g.
``e2e-voice demo demo.question="Why is the sky blue?"``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import takewhile

from e2e_voice.cli_help import header

# name -> (module with a main(), one-line help). Hydra apps parse their own overrides.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("e2e_voice.assets.cli", "install, list and verify the offline model bundle"),
    "demo": ("eval.demo", "answer a question offline: LLM -> Kokoro TTS -> codecs -> Whisper WER"),
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

# Commands configured by Hydra overrides (key=value): their config, and the --flags they do take. Any
# other --flag gets the override to use instead of Hydra's page of usage.
HYDRA_CONFIGS: dict[str, tuple[str, frozenset[str]]] = {
    "demo": ("demo", frozenset()),
    "serve": ("serve", frozenset()),
    "train-lm": ("train_lm", frozenset()),
    "train-codec": ("train_codec", frozenset()),
    "synth-data": ("synth_data", frozenset()),
    "bench": ("bench", frozenset()),
    "converse": ("converse", frozenset({"--input", "--output"})),
}
# Hydra's own flags (with or without a value), left to Hydra.
HYDRA_FLAGS = frozenset(
    [
        "-h",
        "--help",
        "--hydra-help",
        "--version",
        "-c",
        "--cfg",
        "--resolve",
        "-p",
        "--package",
        "--run",
        "-m",
        "--multirun",
        "-sc",
        "--shell-completion",
        "-cp",
        "--config-path",
        "-cn",
        "--config-name",
        "-cd",
        "--config-dir",
        "--experimental-rerun",
        "-i",
        "--info",
    ]
)


def _usage() -> str:
    lines = ["usage: e2e-voice COMMAND [ARGS...]   (e2e-voice COMMAND --help: what it does, examples)"]
    lines += ["       e2e-voice --version", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    if PLANNED:
        lines += ["", "planned (not available yet):"]
        lines += [f"  {name:<12} {help_} (issue #{issue})" for name, (issue, help_) in PLANNED.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--version"], ["-V"], ["version"]):  # argparse reads a leading --flag as no command
        from e2e_voice import __version__

        print(f"e2e-voice {__version__}")
        return 0
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
    if rest[:1] and rest[0] in ("-h", "--help"):
        print(header(ns.command))  # then the command's own help: its options, or Hydra's config groups
    else:
        flag_error = unknown_flag(ns.command, rest)
        if flag_error:
            print(flag_error, file=sys.stderr)
            return 2
    target = COMMANDS[ns.command][0]
    module_name, _, func = target.partition(":")
    entry: Callable[[list[str]], int | None] = getattr(importlib.import_module(module_name), func or "main")
    # Hydra reads sys.argv; present the subcommand as the program name.
    sys.argv = [f"e2e-voice {ns.command}", *rest]
    if rest[:1] and rest[0] in ("-h", "--help"):
        try:
            return int(entry(rest) or 0)
        except SystemExit as done:  # argparse's help exits
            return int(done.code or 0)
    if os.environ.get("HYDRA_FULL_ERROR"):  # the user asked for tracebacks
        return int(entry(rest) or 0)
    try:
        with _hydra_raises():
            code = entry(rest)
    except Exception as exc:
        report = _explain(ns.command, exc)
        if report is None:
            raise
        print(report, file=sys.stderr)
        return 2
    return int(code or 0)


def unknown_flag(command: str, args: list[str]) -> str | None:
    """For a Hydra-configured command, an error naming the override that replaces an unknown ``--flag``
    (``--port 8990`` -> ``serve.port=8990``); None when every flag is one the command takes.

    Hydra would print a page of its own usage and ``unrecognized arguments``, which says nothing about
    the key the user wanted.
    """
    if command not in HYDRA_CONFIGS:
        return None
    config, own = HYDRA_CONFIGS[command]
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if not name.startswith("--") or name in own or name in HYDRA_FLAGS:
            continue
        if not eq and i + 1 < len(args) and not args[i + 1].startswith("-") and "=" not in args[i + 1]:
            value = args[i + 1]
        key = name[2:].replace("-", "_")
        keys = _config_keys(config, key)
        shown = value or "true"
        if keys:
            hint = "use " + " or ".join(f"{k}={shown}" for k in keys[:3])
        else:
            hint = f"settings are key=value overrides (no key named '{key}' in configs/{config}.yaml)"
        return (
            f"e2e-voice {command}: error: unknown option {arg}\nhint: {hint};"
            f" `e2e-voice {command} --help` lists the keys"
        )
    return None


def _config_keys(config: str, leaf: str) -> list[str]:
    """The dotted keys of a composed config whose last part is ``leaf`` (shallowest first)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig, ListConfig

    from e2e_voice.constants import CONFIG_DIR

    try:
        if GlobalHydra.instance().is_initialized():
            cfg = compose(config)
        else:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                cfg = compose(config)
    except Exception:  # a config that does not compose alone: fall back to the general hint
        return []
    found: list[str] = []

    def walk(node: DictConfig, prefix: str) -> None:
        for k in list(node):
            path = f"{prefix}{k}"
            if str(k) == leaf:
                found.append(path)
            child = node._get_node(k)
            if isinstance(child, DictConfig) and not isinstance(child, ListConfig):
                walk(child, f"{path}.")

    walk(cfg, "")
    return sorted(found, key=lambda k: k.count("."))


@contextmanager
def _hydra_raises() -> Iterator[None]:
    """Make Hydra re-raise a failed job's exception (instead of printing a traceback and exiting 1), so
    that :func:`_explain` can turn bad input into one line and a hint."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def _explain(command: str, exc: Exception) -> str | None:
    """One error line and a hint for bad input (a config override, a setting, a path, a file); None for
    anything else, which is a bug and keeps its traceback."""
    from hydra.errors import HydraException, InstantiationException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    from e2e_voice.assets.registry import ModelNotAvailableError
    from e2e_voice.safety.consent import ConsentError

    if isinstance(exc, InstantiationException) and isinstance(exc.__cause__, Exception):
        return _explain(command, exc.__cause__)  # building a configured object raised: say why
    raw = str(exc).splitlines()
    lines = [line.strip() for line in raw if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if isinstance(exc, MissingConfigException):
        listed = next((i for i, line in enumerate(raw) if line.startswith("Available options")), len(raw))
        options = [line.strip() for line in takewhile(lambda x: x.startswith("\t"), raw[listed + 1 :])]
        hint = f"choose one of: {', '.join(options)}" if options else "check the config group and name"
    elif isinstance(exc, (HydraException, OmegaConfBaseException)):
        cause = exc.__cause__
        if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
            first = f"{first.rstrip('.')}: {str(cause).strip().splitlines()[0]}"
        append = [line for line in lines[1:] if line.startswith("To append")]
        hint = append[0] if append else "overrides are key=value, and +key=value adds a key"
        hint += f"; `e2e-voice {command} --help` or configs/ shows the keys"
    elif isinstance(exc, (ValueError, OSError, ConsentError, ModelNotAvailableError)):
        first = "\n".join(lines) or first  # the program's own message, whole
        hint = "fix the input named above (HYDRA_FULL_ERROR=1 shows the traceback)"
    else:
        return None
    return f"e2e-voice {command}: error: {first}\nhint: {hint}"


if __name__ == "__main__":
    raise SystemExit(main())
