"""Rate of ``e2e-voice synth-data``: conversation seconds per wall second and per CPU second, cold cache.

Runs the generator in-process on a fresh cache (every LLM answer, TTS clip and alignment computed) with
the ``synth_data`` config plus overrides (default ``num_conversations=2 workers=1``), and prints
one JSON line: audio seconds, wall and CPU seconds
(this process and its threads; worker processes are not counted, so keep ``workers=1`` when comparing
CPU), the seconds per stage, and the machine with how busy its CPU was just before (``machine.py``).
CPU seconds are the steadier measure on a shared machine. Writes ``runs/bench/synth.{json,md}``.

To compare two versions of the code side by side, alternate runs with each tree on the import path:

    for tree in /path/to/old /path/to/new /path/to/old /path/to/new; do
        PYTHONPATH=$tree python benchmarks/bench_synth.py num_conversations=3 workers=1
    done
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from eval.machine import context_line, machine_context


def main() -> None:
    from hydra import compose, initialize_config_dir

    import e2e_voice
    from e2e_voice.constants import CONFIG_DIR, REPO_ROOT
    from e2e_voice.data.synth import generate
    from e2e_voice.data.synth_cli import settings_from_config

    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "num_conversations=2",
            "workers=1",
            f"out_dir={tmp}/out",
            f"cache.dir={tmp}/cache",
            *sys.argv[1:],
        ]
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            settings = settings_from_config(compose("synth_data", overrides=overrides))
        machine = machine_context()
        wall, cpu = time.perf_counter(), time.process_time()
        result = generate(settings)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        row = {
            "code": str(Path(e2e_voice.__file__).parent.parent),
            "overrides": sys.argv[1:],
            "conversations": len(result.entries),
            "audio_s": round(result.audio_seconds, 1),
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "x_real_time_wall": round(result.audio_seconds / wall, 3),
            "x_real_time_cpu": round(result.audio_seconds / cpu, 3),
            "stage_s": {k: round(v, 1) for k, v in result.stage_seconds.items()},
        }
    print(json.dumps(row), flush=True)
    out = REPO_ROOT / "runs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "synth.json").write_text(json.dumps({**row, "machine": machine}, indent=2))
    lines = ["# synth-data rate, cold cache", "", context_line(machine), ""]
    lines += ["| measure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in row.items()]
    (out / "synth.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
