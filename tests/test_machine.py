"""``eval/machine.py``: how busy the CPU was, the machine context every benchmark and timed evaluation
records."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from e2e_voice.constants import REPO_ROOT
from eval import machine

BENCH_DIR = REPO_ROOT / "benchmarks"


def _stat_line(user: int, idle: int, iowait: int = 0) -> str:
    """A ``/proc/stat`` first line: user nice system idle iowait irq softirq steal."""
    return f"cpu  {user} 0 0 {idle} {iowait} 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n"


def test_busy_share() -> None:
    assert machine.busy_share((100, 50), (200, 100)) == pytest.approx(0.5)
    assert machine.busy_share((100, 50), (200, 50)) == pytest.approx(1.0)
    assert machine.busy_share((100, 50), (200, 150)) == pytest.approx(0.0)
    assert machine.busy_share((100, 50), (100, 50)) == 0.0  # no time passed
    assert machine.busy_share((100, 50), (90, 40)) == 0.0  # counters went backwards: not busy


def test_cpu_busy_reads_two_samples(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(_stat_line(user=100, idle=80, iowait=20))  # total 200, idle 100
    waited: list[float] = []

    def sleep(seconds: float) -> None:  # the second sample: +300 jiffies, 60 of them idle or iowait
        waited.append(seconds)
        stat.write_text(_stat_line(user=340, idle=130, iowait=30))

    assert machine.cpu_busy(0.5, path=str(stat), sleep=sleep) == pytest.approx(0.8)
    assert waited == [0.5]


def test_cpu_busy_idle_and_real(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(_stat_line(user=100, idle=100))
    assert machine.cpu_busy(0, path=str(stat), sleep=lambda s: None) == 0.0  # unchanged: no time
    real = machine.cpu_busy(0.05)
    assert math.isnan(real) or 0.0 <= real <= 1.0


def test_cpu_busy_nan_without_stat(tmp_path: Path) -> None:
    assert math.isnan(machine.cpu_busy(0, path=str(tmp_path / "missing")))
    (tmp_path / "garbled").write_text("cpu  not numbers\n")
    assert math.isnan(machine.cpu_busy(0, path=str(tmp_path / "garbled")))


@pytest.mark.parametrize("share", [0.9, machine.BUSY + 0.01])
def test_machine_context_warns_when_busy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], share: float
) -> None:
    monkeypatch.setattr(machine, "cpu_busy", lambda seconds: share)
    ctx = machine.machine_context(3)
    assert ctx["busy"] is True and ctx["cpu_busy_before"] == round(share, 3) and ctx["threads"] == 3
    assert set(ctx) == {"cpu", "cores", "torch", "threads", "utc", "cpu_busy_before", "busy"}
    err = capsys.readouterr().err
    assert "warning" in err and f"{share:.0%}" in err
    assert "Busy" in machine.context_line(ctx)


@pytest.mark.parametrize("share", [0.0, machine.BUSY - 0.01, machine.BUSY, float("nan")])
def test_machine_context_quiet_when_idle_or_unknown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], share: float
) -> None:
    monkeypatch.setattr(machine, "cpu_busy", lambda seconds: share)
    ctx = machine.machine_context(2)
    assert ctx["busy"] is False
    assert capsys.readouterr().err == ""
    line = machine.context_line(ctx)
    assert "Busy" not in line and line.startswith("Measured ") and "2 threads" in line
    assert ("load unknown" in line) == math.isnan(share)


def test_machine_context_reads_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(machine, "cpu_busy", lambda seconds: 0.0)
    ctx = machine.machine_context()
    assert ctx["threads"] == torch.get_num_threads() and ctx["torch"] == torch.__version__


def test_context_line_wording() -> None:
    ctx = {"utc": "2025-01-01 00:00 UTC", "cpu": "x86_64", "cores": 2, "torch": "2.0", "threads": 1}
    quiet = machine.context_line({**ctx, "cpu_busy_before": 0.1, "busy": False})
    assert "10% busy with other jobs just before" in quiet and "Busy" not in quiet
    busy = machine.context_line({**ctx, "cpu_busy_before": 0.6, "busy": True})
    assert "60% busy" in busy and "**Busy:" in busy
    unknown = machine.context_line({**ctx, "cpu_busy_before": float("nan"), "busy": False})
    assert "load unknown" in unknown and "Busy" not in unknown


BENCHMARKS = sorted(BENCH_DIR.glob("bench_*.py"))
TIMED_EVALS = [REPO_ROOT / "eval/bench.py", REPO_ROOT / "eval/codec.py"]


def test_every_codec_evaluation_records_the_machine() -> None:
    """Tools that time codecs through ``evaluate_clips`` (ranking, probing) pass each call its context."""
    callers = [
        p
        for p in sorted((REPO_ROOT / "eval").glob("*.py"))
        if re.search(r"(?<!def )\bevaluate_clips\(", p.read_text())
    ]
    assert {p.stem for p in callers} >= {"codec", "codec_rank", "codec_probe"}, callers
    for path in callers:
        source = path.read_text()
        calls = re.findall(r"(?<!def )\bevaluate_clips\((.*?)\)\n", source, re.S)
        assert calls and all("machine=" in c for c in calls), f"{path.name}: evaluate_clips(..., machine=...)"


def test_benchmarks_found() -> None:
    assert len(BENCHMARKS) >= 10, BENCHMARKS


@pytest.mark.parametrize("path", BENCHMARKS + TIMED_EVALS, ids=lambda p: p.stem)
def test_every_benchmark_records_the_machine(path: Path) -> None:
    """A new benchmark must call ``machine_context(`` too (and so record how busy the CPU was)."""
    source = path.read_text()
    assert re.search(r"^\s*[^#\n]*\bmachine_context\(", source, re.M), (
        f"{path.name} does not call machine_context(): record the machine and how busy it was"
    )
    assert "context_line(" in source, f"{path.name} does not put context_line() in its report"
    assert "getloadavg" not in source and "/proc/loadavg" not in source, path.name
    assert not re.search(r'^\s*"threads":', source, re.M), f"{path.name}: threads are in its machine context"


def test_cpu_name_reads_the_model_and_falls_back_to_the_architecture(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n")
    name = machine.cpu_name(str(info))
    assert name.startswith("AMD EPYC 7B13 (") and name.endswith(")")
    assert "(" not in machine.cpu_name(str(tmp_path / "missing"))
