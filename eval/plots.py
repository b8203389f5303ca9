"""Figures for the notebooks and reports (matplotlib; callers pick the backend).

Notebooks call these and only display the result, so every figure a notebook shows can be rebuilt
from Python and is covered by the test that executes the notebooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from e2e_voice.constants import FRAME_RATE, SAMPLE_RATE


def _spectrogram_db(x: np.ndarray, n_fft: int = 1024, hop: int = 240) -> np.ndarray:
    import torch

    spec = torch.stft(
        torch.from_numpy(np.asarray(x, np.float32)),
        n_fft,
        hop,
        window=torch.hann_window(n_fft),
        return_complex=True,
    ).abs()
    return (20 * torch.log10(spec.clamp(min=1e-5))).numpy()


def codec_tour(original: np.ndarray, recon: np.ndarray, codes: np.ndarray, title: str = "") -> Any:
    """Waveforms, spectrograms and the code matrix ``[K, T]`` of one clip and its reconstruction."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(10, 9), constrained_layout=True)
    t = np.arange(len(original)) / SAMPLE_RATE
    axes[0].plot(t, original, lw=0.5, label="original")
    axes[0].plot(t[: len(recon)], recon[: len(original)], lw=0.5, alpha=0.7, label="reconstruction")
    axes[0].set_xlim(0, t[-1])
    axes[0].legend(loc="upper right")
    axes[0].set_title(title or "waveform")
    for ax, sig, name in ((axes[1], original, "original"), (axes[2], recon, "reconstruction")):
        ax.imshow(
            _spectrogram_db(sig),
            origin="lower",
            aspect="auto",
            vmin=-80,
            vmax=20,
            extent=(0, len(sig) / SAMPLE_RATE, 0, SAMPLE_RATE / 2000),
        )
        ax.set_ylabel("kHz")
        ax.set_title(f"{name} spectrogram")
    axes[3].imshow(
        codes,
        aspect="auto",
        interpolation="nearest",
        cmap="tab20",
        extent=(0, codes.shape[1] / FRAME_RATE, codes.shape[0] - 0.5, -0.5),
    )
    axes[3].set_ylabel("codebook (0 = semantic)")
    axes[3].set_xlabel("seconds (one column per 80 ms frame)")
    axes[3].set_title(f"codes [K={codes.shape[0]}, T={codes.shape[1]}]")
    return fig


def inner_monologue(
    audio: np.ndarray,
    tokens: np.ndarray,
    pieces: Sequence[str],
    words: Sequence[tuple[str, float, float]],
    pad_ids: Sequence[int],
    title: str = "",
) -> Any:
    """The assistant's waveform with its word times, and the text stream placed under it frame by frame.

    Args:
        audio: ``[T]`` assistant audio at 24 kHz.
        tokens: ``[T']`` text stream at 12.5 Hz.
        pieces: the string of every token id (``pieces[i]`` for id ``i``).
        words: ``(word, start, end)`` in seconds.
        pad_ids: ids drawn as padding (not labelled).
    """
    import matplotlib.pyplot as plt

    fig, (ax_w, ax_t) = plt.subplots(2, 1, figsize=(12, 5), sharex=True, constrained_layout=True)
    t = np.arange(len(audio)) / SAMPLE_RATE
    ax_w.plot(t, audio, lw=0.4, color="0.3")
    for w, a, b in words:
        ax_w.axvspan(a, b, color="tab:blue", alpha=0.12)
        ax_w.text(a, ax_w.get_ylim()[1] * 0.8, w, fontsize=7, rotation=45)
    ax_w.set_title(title or "assistant audio and word alignment")
    for f, tid in enumerate(tokens.tolist()):
        x = f / FRAME_RATE
        if tid in pad_ids:
            ax_t.plot([x, x + 1 / FRAME_RATE], [0, 0], color="0.8", lw=3)
        else:
            ax_t.text(
                x,
                0.05,
                pieces[tid] if 0 <= tid < len(pieces) else str(tid),
                fontsize=7,
                rotation=90,
                va="bottom",
            )
    ax_t.set_ylim(-0.2, 1.0)
    ax_t.set_yticks([])
    ax_t.set_xlabel("seconds (text tokens at 12.5 Hz; grey = padding)")
    ax_t.set_title("inner monologue: the text stream the LM reads and writes")
    return fig


def bench_overview(results: dict[str, Any]) -> Any:
    """Latency distributions, turn-taking rates and WER of every system in a ``bench`` results.json."""
    import matplotlib.pyplot as plt

    systems = list(results["summary"])
    convs = results["conversations"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    lat = [[x for c in convs[s] for x in c["latencies"]] or [np.nan] for s in systems]
    axes[0].boxplot(lat, tick_labels=systems)
    axes[0].set_ylabel("seconds")
    axes[0].set_title("response latency")
    keys = ("smooth_turn_taking_rate", "pause_takeover_rate", "backchannel_continue_rate")
    width = 0.8 / max(1, len(systems))
    for i, s in enumerate(systems):
        vals = [results["summary"][s][k] or 0.0 for k in keys]
        axes[1].bar(np.arange(len(keys)) + i * width, vals, width, label=s)
    axes[1].set_xticks(
        np.arange(len(keys)) + width * (len(systems) - 1) / 2,
        ["smooth", "pause takeover", "backchannel\ncontinue"],
    )
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    axes[1].set_title("turn-taking (Full-Duplex-Bench)")
    wers = [results["summary"][s]["wer"] for s in systems]
    axes[2].bar(systems, [w if w is not None else 0.0 for w in wers])
    axes[2].set_title("WER of own speech (Whisper judge)")
    return fig
