"""Codec speed: encode+decode real-time factor per variant, streamed per frame and as a whole clip.

RTF = compute seconds / audio seconds (below 1 is faster than real time). Random weights (speed does
not depend on them). Writes runs/bench/codec.json and codec.md, with the machine and how busy its CPU
was just before (``machine.py``).

    python benchmarks/bench_codec.py [--seconds 4] [--threads 2] [--variants tiny small cpu_spectral kyutai]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from e2e_voice.codec import MimiCodec, randomize_codebooks
from e2e_voice.constants import CONFIG_DIR, REPO_ROOT, SAMPLE_RATE
from eval.machine import context_line, machine_context

# variant name -> config overrides
VARIANTS: dict[str, list[str]] = {
    "tiny": ["codec=tiny"],
    "tiny_25hz": ["codec=tiny", "+codec.frame_rate=25.0"],
    "small": ["codec=small"],
    "cpu_spectral": ["codec=cpu", "codec.checkpoint=null"],  # the committed architecture (v10, as v6-v9)
    "cpu_spectral_v5": ["codec=cpu", "codec.checkpoint=null", "codec.transformer_layers=2"],  # v5: 2 layers
    "kyutai": ["codec=kyutai"],
}


def _codec(name: str) -> MimiCodec:
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=VARIANTS[name])
    codec: MimiCodec = instantiate(cfg.codec, _convert_="all")
    randomize_codebooks(codec.model)
    return codec.eval()


@torch.no_grad()
def bench_variant(name: str, seconds: float, repeats: int) -> dict[str, Any]:
    codec = _codec(name)
    fs = codec.frame_size
    n_frames = max(1, round(seconds * codec.frame_rate))
    x = 0.1 * torch.randn(1, 1, n_frames * fs)
    audio_s = x.shape[-1] / SAMPLE_RATE
    codec.decode(codec.encode(x))  # warm-up
    whole_enc, whole_dec, frame_ms = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        codes = codec.encode(x)
        t1 = time.perf_counter()
        codec.decode(codes)
        whole_enc.append(t1 - t)
        whole_dec.append(time.perf_counter() - t1)
        with codec.streaming(1):
            codec.step(x[..., :fs])  # warm-up frame
            codec.reset()
            for i in range(n_frames):
                t = time.perf_counter()
                codec.step(x[..., i * fs : (i + 1) * fs])
                frame_ms.append(1000 * (time.perf_counter() - t))
    frame_s = fs / SAMPLE_RATE
    med_frame = statistics.median(frame_ms)
    return {
        "variant": name,
        "params_M": sum(p.numel() for p in codec.parameters()) / 1e6,
        "frame_ms": 1000 * frame_s,
        "num_codebooks": codec.num_codebooks,
        "bitrate_kbps": codec.bitrate / 1000,
        "whole_encode_rtf": statistics.median(whole_enc) / audio_s,
        "whole_decode_rtf": statistics.median(whole_dec) / audio_s,
        "whole_rtf": (statistics.median(whole_enc) + statistics.median(whole_dec)) / audio_s,
        "stream_ms_per_frame_median": med_frame,
        "stream_ms_per_frame_p90": sorted(frame_ms)[int(0.9 * (len(frame_ms) - 1))],
        "stream_rtf": med_frame / (1000 * frame_s),
    }


def to_markdown(result: dict[str, Any]) -> str:
    ctx = result["context"]
    lines = [
        "# Codec speed (encode + decode, batch 1, random weights)",
        "",
        context_line(result["machine"]),
        "",
        f"{ctx['seconds']:.2f} s clip, {ctx['repeats']} repeats.",
        "",
        "| variant | params M | frame ms | kbps | stream ms/frame (p50) | p90 | stream RTF"
        " | whole-clip RTF |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["variants"]:
        lines.append(
            f"| {r['variant']} | {r['params_M']:.1f} | {r['frame_ms']:.0f} | {r['bitrate_kbps']:.2f}"
            f" | {r['stream_ms_per_frame_median']:.1f} | {r['stream_ms_per_frame_p90']:.1f}"
            f" | {r['stream_rtf']:.2f} | {r['whole_rtf']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    context = {"seconds": args.seconds, "repeats": args.repeats}
    machine = machine_context(args.threads)
    variants = []
    for name in args.variants:
        r = bench_variant(name, args.seconds, args.repeats)
        print(
            f"{name}: stream {r['stream_ms_per_frame_median']:.1f} ms/frame,"
            f" whole-clip RTF {r['whole_rtf']:.2f}"
        )
        variants.append(r)
    result = {"machine": machine, "context": context, "variants": variants}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codec.json").write_text(json.dumps(result, indent=2))
    (out / "codec.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
