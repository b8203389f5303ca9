"""Where a codec's mel error lies by loudness: per level band of the original's log-mel, how many bins,
what share of the L1 error, and whether the reconstruction is too loud or too quiet there.

    python -m eval.codec_levels --set data/generated/codec_eval --groups assistant \\
        --checkpoint v9=checkpoints/codec_cpu/codec.safetensors --out runs/codec_levels

The mel scales are the training loss's (``n_fft`` 256 / 512 / 1024 / 2048 with 32 / 64 / 80 / 128 bands, the
metric's 1e-5 floor). Each bin of the original's log10 mel falls in one band of ``--edges`` (default -4,
-3, -2, 0: on the corpus's speech the loudest bands sit near 0). Per checkpoint, scale and band it reports:

- ``bins``: the share of all bins in the band;
- ``error``: the band's share of the summed L1 error (what the mel loss measures);
- ``mean``: the mean absolute error of a bin there;
- ``bias``: the mean of reconstruction minus original (below 0: too quiet).

An L1 loss on logs pulls every bin with the same force whatever its level, so ``bins`` is also the share of
the mel loss's gradient each band gets. This is the measurement behind ``loss.mel_floor`` (the recipe
``codec_cpu_deep_qd0_floor60``). Writes ``OUT/levels.md``, ``levels.json`` and ``levels.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from e2e_voice.codec import MimiCodec
from e2e_voice.codec.spectral import log_mel
from e2e_voice.constants import SAMPLE_RATE
from eval.codec import Clip, load_eval_codec, select_groups, set_clips
from eval.codec_rank import name_levels, parse_checkpoints

SCALES = ((256, 32), (512, 64), (1024, 80), (2048, 128))
EDGES = (-4.0, -3.0, -2.0, 0.0)


def band_names(edges: tuple[float, ...]) -> list[str]:
    """``[-inf, e0)``, ``[e0, e1)``, ..., ``[e_last, inf)`` as short labels."""
    bounds = [-np.inf, *edges, np.inf]
    return [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(bounds)]


def accumulate(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    sums: np.ndarray,
    edges: tuple[float, ...] = EDGES,
    scales: tuple[tuple[int, int], ...] = SCALES,
) -> None:
    """Add one clip's per-band counts to ``sums`` ``[scales, bands, 3]`` (bins, |error|, error).

    Args:
        reference: the original ``[B, 1, T]``.
        estimate: the reconstruction, same shape.
        sums: running totals, updated in place.
        edges: band edges in log10 mel of the reference.
        scales: ``(n_fft, n_mels)`` per scale.
    """
    if reference.shape != estimate.shape:
        raise ValueError(f"reference {tuple(reference.shape)} and estimate {tuple(estimate.shape)} differ")
    for s, (n_fft, mels) in enumerate(scales):
        a = log_mel(reference, SAMPLE_RATE, n_fft, mels).flatten()
        diff = log_mel(estimate, SAMPLE_RATE, n_fft, mels).flatten() - a
        band = torch.bucketize(a, torch.tensor(edges, dtype=a.dtype), right=True)
        for b in range(len(edges) + 1):
            sel = band == b
            sums[s, b] += (float(sel.sum()), float(diff[sel].abs().sum()), float(diff[sel].sum()))


def summarize(
    sums: np.ndarray, edges: tuple[float, ...] = EDGES, scales: tuple[tuple[int, int], ...] = SCALES
) -> list[dict[str, Any]]:
    """Per scale and band: the shares of bins and of error, the mean error and the bias."""
    rows = []
    for s, (n_fft, mels) in enumerate(scales):
        bins, err = sums[s, :, 0].sum(), sums[s, :, 1].sum()
        for b, name in enumerate(band_names(edges)):
            n, e, d = sums[s, b]
            rows.append(
                {
                    "n_fft": n_fft,
                    "n_mels": mels,
                    "band": name,
                    "bins": n / bins if bins else 0.0,
                    "error": e / err if err else 0.0,
                    "mean": e / n if n else 0.0,
                    "bias": d / n if n else 0.0,
                }
            )
    return rows


@torch.no_grad()
def measure(codec: MimiCodec, clips: list[Clip], edges: tuple[float, ...] = EDGES) -> list[dict[str, Any]]:
    """Encode and decode every clip whole and summarize where its mel error lies."""
    codec.eval()
    sums = np.zeros((len(SCALES), len(edges) + 1, 3))
    for clip in tqdm(clips, desc="codec levels"):
        x = torch.from_numpy(np.asarray(clip.audio, np.float32).reshape(-1))[None, None]
        y = codec.decode(codec.encode(x), length=x.shape[-1])
        accumulate(x, y.float(), sums, edges)
    return summarize(sums, edges)


def to_markdown(results: dict[str, list[dict[str, Any]]]) -> str:
    names = list(results)
    head = "| n_fft | band (log10 mel) | bins | " + " | ".join(
        f"{n}: error share | {n}: mean | {n}: bias" for n in names
    )
    lines = [head + " |", "|" + "---|" * (3 + 3 * len(names))]
    first = results[names[0]]
    for i, row in enumerate(first):
        cells = [str(row["n_fft"]), row["band"], f"{row['bins']:.2f}"]
        for n in names:
            r = results[n][i]
            cells += [f"{r['error']:.2f}", f"{r['mean']:.3f}", f"{r['bias']:+.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = sorted({r["n_fft"] for r in next(iter(results.values()))})
    fig, axes = plt.subplots(1, len(scales), figsize=(3.2 * len(scales), 3.2), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, n_fft in zip(axes, scales, strict=True):
        bands = [r["band"] for r in next(iter(results.values())) if r["n_fft"] == n_fft]
        width = 0.8 / (len(results) + 1)
        xs = np.arange(len(bands))
        base = [r["bins"] for r in next(iter(results.values())) if r["n_fft"] == n_fft]
        ax.bar(xs - 0.4 + width / 2, base, width, label="bins", color="0.75")
        for k, (name, rows) in enumerate(results.items(), start=1):
            share = [r["error"] for r in rows if r["n_fft"] == n_fft]
            ax.bar(xs - 0.4 + width * (k + 0.5), share, width, label=f"{name}: error")
        ax.set_xticks(xs, bands, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"n_fft {n_fft}", fontsize=9)
    axes[0].set_ylabel("share")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.codec_levels", description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, help="an evaluation set folder (python -m eval.codec_set)")
    parser.add_argument("--checkpoint", nargs="+", required=True, help="NAME=PATH (NAME@N: N levels)")
    parser.add_argument("--groups", nargs="*", default=None, help="keep only these groups of the set")
    parser.add_argument("--edges", type=float, nargs="+", default=list(EDGES), help="band edges, log10 mel")
    parser.add_argument("--out", default="runs/codec_levels")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    edges = tuple(args.edges)
    if list(edges) != sorted(set(edges)):
        parser.error(f"--edges must increase strictly, got {list(edges)}")
    torch.set_num_threads(args.threads)
    try:
        clips = select_groups(set_clips(args.set), args.groups)
    except ValueError as err:
        parser.error(str(err))
    results = {
        name: measure(load_eval_codec(str(path), num_codebooks=name_levels(name)), clips, edges)
        for name, path in parse_checkpoints(args.checkpoint).items()
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "levels.json").write_text(json.dumps({"edges": edges, "clips": len(clips), "results": results}))
    text = to_markdown(results)
    (out / "levels.md").write_text(text)
    plot(results, out / "levels.png")
    print(text)
    print(f"wrote {out}/levels.md, levels.json and levels.png ({len(clips)} clips)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
