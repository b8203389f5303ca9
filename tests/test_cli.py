from __future__ import annotations

import subprocess
import sys

import pytest

from e2e_voice import cli


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in [*cli.COMMANDS, *cli.PLANNED]:
        assert name in out


def test_planned_command_says_which_issue(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(cli.PLANNED, "teleport", (99, "a command that has not landed"))
    assert cli.main(["teleport"]) == 2
    assert "issue #99" in capsys.readouterr().err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_console_script_models_list() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "e2e_voice.cli", "models", "list"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "whisper-base" in proc.stdout and "path/hub only" in proc.stdout


def _hydra_help_stub(args: list[str]) -> int:
    """Stands in for a Hydra app's own help (test_..._two_examples)."""
    return 0


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from e2e_voice import __version__

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"e2e-voice {__version__}"


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_help_starts_with_a_paragraph_and_two_examples(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["e2e-voice"])
    if command in cli.HYDRA_CONFIGS and command != "converse":
        # Hydra's own help (config groups and the whole config) follows; it is Hydra's, so only ours is
        # checked here, once per command without composing every app.
        monkeypatch.setitem(cli.COMMANDS, command, ("tests.test_cli:_hydra_help_stub", "stub"))
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"e2e-voice {command}: ") and len(lines[0]) > 40, out
    examples = lines[lines.index("examples:") + 1 :][:2]
    assert len(examples) == 2 and all(e.startswith(f"  e2e-voice {command}") for e in examples), out
    assert "\n\n" in out[: out.index("examples:") + 1]  # one paragraph, then the examples


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["serve", "--port", "8990"], "use serve.port=8990;"),
        (["serve", "--port=8990"], "use serve.port=8990;"),
        (["bench", "--realtime"], "use realtime=true"),
        (["train-lm", "--steps", "5"], "use train.steps=5"),
        (["serve", "--frobnicate"], "no key named 'frobnicate' in configs/serve.yaml"),
    ],
)
def test_unknown_flag_names_the_override(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command ran despite the unknown flag")

    monkeypatch.setattr("e2e_voice.serve.app.run_server", no_run)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"e2e-voice {argv[0]}: error: unknown option {argv[1]}\n"), err
    assert hint in err and "usage:" not in err and len(err.splitlines()) == 2, err


def test_hydra_flags_and_converse_flags_are_left_alone() -> None:
    assert cli.unknown_flag("serve", ["--cfg", "job", "serve.port=1"]) is None
    assert cli.unknown_flag("converse", ["--input", "a.wav", "--output", "b.wav", "realtime=true"]) is None
    assert cli.unknown_flag("models", ["--anything"]) is None  # argparse commands explain their own flags


def test_serve_says_which_system_and_defaults_to_the_cascade(
    tmp_path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra import compose, initialize_config_dir

    from e2e_voice.constants import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        default = compose("serve")
    assert default.system._target_ == "cascade_baseline.builders.build_cascade"  # converses, never the echo

    served: list[object] = []
    monkeypatch.setattr("e2e_voice.serve.app.run_server", lambda factory, settings: served.append(factory))
    monkeypatch.setattr(sys, "argv", ["e2e-voice"])
    argv = ["serve", "system=loopback", "watermark.enabled=false", f"hydra.run.dir={tmp_path}"]
    assert cli.main(argv) == 0 and served
    out = capsys.readouterr().out
    assert "e2e-voice serve: system=loopback (e2e_voice.serve.loopback.LoopbackSystem)" in out, out
