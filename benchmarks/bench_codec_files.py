"""Long clips through ``e2e-voice codec``: the whole-clip pass against frame-by-frame streaming.

The whole-clip pass attends over the entire clip (memory grows with the square of its length); streaming
holds one attention window. For each length and each pass this runs encode and decode of the committed
codec in a fresh process (2 threads) and reports wall time, real-time factor and peak RSS (the process's
own high-water mark, codec and audio included; `rss_loaded_gb` is the mark before the pass), and how many
codes the two passes give differently (float rounding flips a code where two codewords are nearly tied).
The audio is the fixture conversations' speech, tiled. Writes runs/bench/codec_files.json and .md.

    python benchmarks/bench_codec_files.py [--lengths 60 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2e_voice.constants import REPO_ROOT
from eval.machine import context_line, machine_context

CODEC = REPO_ROOT / "checkpoints/codec_cpu/codec.safetensors"

# One measurement in a fresh process, so each peak RSS is its own. argv: op mode seconds threads dir
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np, torch
op, mode = sys.argv[1], sys.argv[2]
seconds, threads, d = float(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
torch.set_num_threads(threads)
from e2e_voice.audio.io import load_audio
from e2e_voice.codec import load_codec
from e2e_voice.codec.files import decode_codes, encode_audio
codec = load_codec(sys.argv[6])
limit = 1e12 if mode == "whole" else 0.0
audio = load_audio(d / f"clip{seconds:g}.wav")
rss_kb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if op == "encode":
    loaded = rss_kb(); t = time.perf_counter()
    codes = encode_audio(codec, audio, max_whole_seconds=limit)
    wall = time.perf_counter() - t
    np.save(d / f"codes{seconds:g}_{mode}.npy", codes.numpy())
else:
    codes = torch.from_numpy(np.load(d / f"codes{seconds:g}_whole.npy"))
    loaded = rss_kb(); t = time.perf_counter()
    out = decode_codes(codec, codes, audio.shape[-1], max_whole_seconds=limit)
    wall = time.perf_counter() - t
    np.save(d / f"audio{seconds:g}_{mode}.npy", out)
print(json.dumps({"wall_s": wall, "rss_loaded_gb": loaded / 2**20, "rss_peak_gb": rss_kb() / 2**20}))
"""


def _clip(seconds: float, path: Path) -> None:
    from e2e_voice.audio.io import load_audio, save_audio

    speech = np.concatenate(
        [load_audio(f)[0] for f in sorted((REPO_ROOT / "tests/fixtures/dialogues/audio").glob("*.flac"))]
    )
    n = int(seconds * 24_000)
    save_audio(path, np.tile(speech, n // speech.size + 1)[:n], 24_000, subtype="FLOAT")


def _measure(op: str, mode: str, seconds: float, threads: int, d: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, op, mode, f"{seconds:g}", str(threads), str(d), str(CODEC)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{op} {mode} {seconds:g} s failed:\n{proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(op=op, mode=mode, seconds=seconds, rtf=row["wall_s"] / seconds)
    return row


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Long clips: whole-clip pass vs streaming (committed codec, `e2e_voice.codec.files`)",
        "",
        context_line(result["machine"]),
        "",
        "| clip s | op | pass | wall s | RTF | peak RSS GB | RSS before the pass GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['seconds']:g} | {r['op']} | {r['mode']} | {r['wall_s']:.2f} | {r['rtf']:.3f}"
            f" | {r['rss_peak_gb']:.2f} | {r['rss_loaded_gb']:.2f} |"
        )
    lines += ["", "| clip s | codes differing (whole vs streamed) | max audio difference |", "|---|---|---|"]
    for s in result["agreement"]:
        lines.append(
            f"| {s['seconds']:g} | {s['codes_differing']} of {s['codes']} | {s['audio_max_abs']:.2e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", nargs="+", type=float, default=[60.0, 300.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)  # the children set the same; this records torch's version too
    machine = machine_context(args.threads)
    rows, agreement = [], []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for seconds in args.lengths:
            _clip(seconds, d / f"clip{seconds:g}.wav")
            for op in ("encode", "decode"):
                for mode in ("whole", "stream"):
                    rows.append(_measure(op, mode, seconds, args.threads, d))
                    r = rows[-1]
                    print(f"{seconds:g} s {op} {mode}: {r['wall_s']:.2f} s, peak {r['rss_peak_gb']:.2f} GB")
            whole, stream = (np.load(d / f"codes{seconds:g}_{m}.npy") for m in ("whole", "stream"))
            a, b = (np.load(d / f"audio{seconds:g}_{m}.npy") for m in ("whole", "stream"))
            agreement.append(
                {
                    "seconds": seconds,
                    "codes": int(whole.size),
                    "codes_differing": int((whole != stream).sum()),
                    "audio_max_abs": float(np.abs(a - b).max()),
                }
            )
    result = {"machine": machine, "rows": rows, "agreement": agreement}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codec_files.json").write_text(json.dumps(result, indent=2))
    (out / "codec_files.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
