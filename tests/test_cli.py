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
