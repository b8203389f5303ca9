"""``kill -9`` and resume, for ``train-lm``, ``train-codec`` and ``synth-data`` (issue #45).

Each trainer case runs the command once uninterrupted, and once killed with SIGKILL (at a random time
mid-training, or inside a checkpoint write: the save writes half its temporary file and kills itself),
then reruns the same command, which resumes from the run directory's checkpoint. It checks that the
resumed run ends bit for bit where the uninterrupted one did (weights, step; the logged losses of every
step), that ``metrics.jsonl`` holds each step once, and that no ``checkpoint.pt.<pid>.tmp`` is left.
The ``synth-data`` case kills the main process mid-render and counts its workers still alive 5 s later
(they used to live on under PID 1 and keep writing), then reruns it to the end.

    python benchmarks/bench_kill_resume.py            # -> runs/bench/bench_kill_resume.{json,md}
    python benchmarks/bench_kill_resume.py --trials 1 --no-synth

``tests/test_kill_resume.py`` is the short version (one timed kill of a tiny train-lm run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.machine import context_line, machine_context  # noqa: E402

# The tiny LM of tests/test_lm_train.py (on the bench's own random streams file).
LM_TINY = [
    "lm.n_q=2", "lm.card=32", "lm.text_card=64", "lm.dim=32", "lm.num_layers=2", "lm.num_heads=4",
    "lm.ff_hidden=64", "lm.depformer_dim=16", "lm.depformer_num_layers=1", "lm.depformer_num_heads=2",
    "lm.depformer_ff_hidden=32", "lm_data.seq_len=16", "lm_data.smoke_conversations=0", "train.batch_size=2",
    "train.wandb.mode=disabled", "train.lr=3e-3", "train.warmup_steps=1", "train.log_every=1",
    "lm_train.num_threads=1",
]  # fmt: skip
CODEC_TINY = [
    "+experiment=codec_debug", "train.wandb.mode=disabled", "loss.weights.distill_cos=0", "threads=1",
    "train.log_every=1",
]  # fmt: skip
# Run as `python -c CHILD MODE KILL_AT_SAVE ARGS...`: the trainer in this process, its KILL_AT_SAVE-th
# checkpoint write (0: none) torn in half and the process SIGKILLed there.
CHILD = """
import os, signal, sys
from pathlib import Path
mode, kill_at, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if kill_at:
    import train.checkpoint as ck
    real, calls = ck.save_checkpoint, []
    def torn(path, state):
        calls.append(path)
        if len(calls) < kill_at:
            return real(path, state)
        path = Path(path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        real(tmp, state)
        tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    import train.lm, train.codec
    train.lm.save_checkpoint = train.codec.save_checkpoint = torn
from e2e_voice.cli import main
sys.exit(main([mode, *args]))
"""


def make_streams(root: Path) -> Path:
    """The fixture corpus of tests/test_lm_train.py: inner-monologue text over random audio codes."""
    from e2e_voice.lm.streams import Word, build_text_stream
    from tests.lm_testing import FIXTURE_TEXT, fixture_tokenizer
    from train.lm_data import save_streams

    root.mkdir(parents=True, exist_ok=True)
    tok = fixture_tokenizer(root, vocab_size=64)
    g = torch.Generator().manual_seed(0)
    streams = []
    for i, sentence in enumerate(FIXTURE_TEXT):
        T = 30 + 3 * i
        words = [Word(w, 0.3 + 0.35 * j, 0.6 + 0.35 * j) for j, w in enumerate(sentence.split())]
        text = build_text_stream(words, T, tok).tokens
        streams.append(torch.cat([text[None], torch.randint(0, 32, (4, T), generator=g)]))
    return save_streams(root / "streams.pt", streams, {"n_q": 2, "tokenizer": str(tok.path)})


def start(mode: str, args: list[str], kill_at_save: int = 0) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_TORCH_COMPILE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", CHILD, mode, str(kill_at_save), *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], timeout: float = 600) -> int:
    _, err = proc.communicate(timeout=timeout)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"run failed ({proc.returncode}): {err.decode()[-2000:]}")
    return int(proc.returncode)


def rows(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def kill_when_logged(proc: subprocess.Popen[bytes], run: Path, step: int, timeout: float = 300) -> bool:
    """SIGKILL ``proc`` once ``metrics.jsonl`` has a row at ``step`` or later; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(r.get("step", 0) >= step for r in rows(run)):
                proc.send_signal(signal.SIGKILL)
                return True
        except (ValueError, OSError):
            pass  # a row being written
        time.sleep(0.01)
    return False


def weights(run: Path, key: str) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)[key]


def compare(straight: Path, resumed: Path, key: str) -> dict[str, Any]:
    """Weights and logged losses of two runs of the same config, bit for bit; each step logged once."""
    a, b = weights(straight, key), weights(resumed, key)
    same_weights = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [{k: v for k, v in r.items() if "loss" in k or k in ("step", "rec/mel")} for r in rows(straight)]
    again = [{k: v for k, v in r.items() if "loss" in k or k in ("step", "rec/mel")} for r in rows(resumed)]
    return {
        "bit_identical": bool(same_weights),
        "same_logged_losses": losses == again,
        "extra_rows": len(rows(resumed)) - len(rows(straight)),  # a replayed step logged twice
        "tmp_left": len(list(resumed.glob("checkpoint.pt.*.tmp"))),
    }


def trainer_case(mode: str, args: list[str], run_key: str, kill: str, kill_step: int, tmp: Path) -> dict:
    """One kill of ``mode`` (timed at ``kill_step``, or inside its 2nd checkpoint write), then a resume."""
    where = (lambda run: [f"out_dir={run}"]) if mode == "train-lm" else (lambda run: [f"hydra.run.dir={run}"])
    straight, killed = tmp / "straight", tmp / f"killed_{kill}_{kill_step}"
    if not (straight / "checkpoint.pt").is_file():
        finish(start(mode, [*args, *where(straight)]))
    t0 = time.perf_counter()
    proc = start(mode, [*args, *where(killed)], kill_at_save=2 if kill == "mid-write" else 0)
    hit = kill_when_logged(proc, killed, kill_step) if kill == "timed" else True
    code = finish(proc)
    tmp_before = len(list(killed.glob("checkpoint.pt.*.tmp")))
    ckpt_step = (
        int(torch.load(killed / "checkpoint.pt", weights_only=False)["step"])
        if (killed / "checkpoint.pt").is_file()
        else 0
    )
    logged = max((r.get("step", 0) for r in rows(killed)), default=0)
    finish(start(mode, [*args, *where(killed)]))  # the same command again: resumes
    return {
        "command": mode,
        "kill": kill,
        "killed": code == -signal.SIGKILL and hit,
        "checkpoint_step": ckpt_step,
        "logged_past_checkpoint": logged - ckpt_step,
        "tmp_after_kill": tmp_before,
        **compare(straight, killed, run_key),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def synth_case(tmp: Path) -> dict[str, Any]:
    """Kill -9 synth-data's main process while its 2 workers render; count the workers alive 5 s later."""
    out = tmp / "corpus"
    args = [
        "synth-data",
        "num_conversations=4",
        "workers=2",
        "assistant.engine=piper",
        "assistant.voice=piper-en-us-joe",
        "content.source=templates",
        "alignment.method=concat",
        f"out_dir={out}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2e_voice.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
        workers = children(proc.pid)
        time.sleep(0.2)
    time.sleep(3.0)  # let them render
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(5.0)
    alive = [p for p in workers if alive_pid(p)]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    t0 = time.perf_counter()
    rerun = subprocess.run(
        [sys.executable, "-m", "e2e_voice.cli", *args], cwd=REPO, env=env, capture_output=True
    )
    manifests = (
        sum(1 for line in (out / "train.jsonl").read_text().splitlines()) if rerun.returncode == 0 else 0
    )
    return {
        "command": "synth-data",
        "kill": "timed",
        "workers_seen": len(workers),
        "workers_alive_5s_after": len(alive),
        "rerun_ok": rerun.returncode == 0,
        "train_rows": manifests,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def children(pid: int) -> list[int]:
    """Direct children that are python processes (the pool's workers and resource tracker)."""
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    cmdlines = {int(p): _cmdline(int(p)) for p in found}
    return [p for p, cmd in cmdlines.items() if "multiprocessing" in cmd and "resource_tracker" not in cmd]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def alive_pid(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=3, help="timed kills per trainer, at random steps")
    parser.add_argument("--no-synth", action="store_true", help="skip the synth-data case")
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args()
    rng = random.Random(0)
    machine = machine_context()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        streams = make_streams(tmp / "corpus_lm")
        lm = [*LM_TINY, f"lm_data.streams={streams}", "train.steps=120", "train.save_every=20"]
        codec = [
            *CODEC_TINY,
            f"data.files=[{REPO}/tests/fixtures/dialogues/audio/*.flac]",
            "train.steps=12",
            "train.save_every=3",
        ]
        for kill in ["mid-write", *["timed"] * args.trials]:
            results.append(trainer_case("train-lm", lm, "model", kill, rng.randint(25, 110), tmp / "lm"))
            print(json.dumps(results[-1]), flush=True)
            results.append(
                trainer_case("train-codec", codec, "codec", kill, rng.randint(4, 11), tmp / "codec")
            )
            print(json.dumps(results[-1]), flush=True)
        if not args.no_synth:
            results.append(synth_case(tmp))
            print(json.dumps(results[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_kill_resume.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2)
    )
    cols = [
        "command",
        "kill",
        "killed",
        "checkpoint_step",
        "logged_past_checkpoint",
        "tmp_after_kill",
        "bit_identical",
        "same_logged_losses",
        "extra_rows",
        "tmp_left",
        "workers_alive_5s_after",
        "rerun_ok",
        "seconds",
    ]
    lines = [context_line(machine), "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in results]
    (out / "bench_kill_resume.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
