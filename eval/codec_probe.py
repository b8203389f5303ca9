"""Probe a spectral codec: decode with its phase or magnitudes replaced, or sharpened; rank the results.

    python -m eval.codec_probe --checkpoint checkpoints/codec_cpu/codec.safetensors \\
        --set data/generated/codec_eval --variants own griffin-lim:32 rtisi:3 random --out runs/codec_probe

Each variant changes only how the spectral decoder turns its output into audio; the encoder, the codes and
the decoder's network are the codec's own. Every variant is evaluated by :func:`eval.codec.evaluate_clips`
(``OUT/VARIANT/codec_metrics.json``) and ranked against ``own`` with paired intervals
(:func:`eval.codec_rank.rank`, ``OUT/rank.md``, ``rank.json`` and the plot ``rank.png``). ``--groups``
keeps some groups of the set.

Variants (``KIND`` or ``KIND:VALUE``):

- ``own``: the codec as it is (the baseline).
- ``original-phase``: the decoded magnitudes with the original clip's phase (of the same STFT frames).
- ``original-magnitude``: the original clip's magnitudes with the decoder's phase.
- ``random``: the decoded magnitudes with uniformly random phase (a control).
- ``griffin-lim:N``: N Griffin-Lim iterations started from the decoder's phase. Not causal, so not a
  streaming codec; a strong reference for what a phase found from these magnitudes alone can do.
- ``rtisi:N``: real-time iterative spectrogram inversion (Zhu, Beauregard and Wyse 2007) without look-ahead:
  each frame's phase is found from the overlap of the frames before it, with N iterations per frame.
  Causal: it could replace the decoder's phase in streaming.
- ``envelope:B``: contrast across mel bands, ``env + B * (env - mean of the band and its two neighbours)``.
- ``detail:G``: the per-bin detail (the harmonics on top of the envelope) times G.
- ``time:B``: contrast in time, ``log_mag + B * (log_mag - its causal running mean)`` (a = 0.5 per STFT
  frame).

The last three are post-filters in the spirit of the formant and global-variance post-filters of
statistical speech synthesis, against over-smoothed spectra. ``envelope`` and ``detail`` need a decoder with
an envelope head (``envelope_bands`` > 0).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from e2e_voice.codec import MimiCodec
from e2e_voice.codec.stft_layers import MAX_LOG_MAGNITUDE, SpectralDecoder, frame_spectrum
from eval.codec import (
    Clip,
    add_judge_argument,
    evaluate_clips,
    judge_factory,
    load_eval_codec,
    select_groups,
    set_clips,
)
from eval.codec_rank import MemoJudge, add_judge_cache_argument, judge_cache, plot, rank, to_markdown
from eval.machine import machine_context

KINDS = {
    "original-phase": False,
    "original-magnitude": False,
    "own": False,
    "random": False,
    "griffin-lim": True,
    "rtisi": True,
    "envelope": True,
    "detail": True,
    "time": True,
}
PHASE_KINDS = ("random", "griffin-lim", "rtisi")
ORIGINAL_KINDS = ("original-phase", "original-magnitude")


@dataclass(frozen=True)
class Variant:
    """One way of decoding: a kind and its value (None for ``own`` and ``random``)."""

    kind: str
    value: float | None = None

    @property
    def name(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"


def parse_variant(text: str) -> Variant:
    """``KIND`` or ``KIND:VALUE`` -> :class:`Variant`.

    Raises:
        ValueError: an unknown kind, a missing or extra value, or an iteration count below 1.
    """
    kind, _, value = text.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown probe variant {text!r}; kinds: {', '.join(KINDS)}")
    if KINDS[kind] != bool(value):
        form = f"{kind}:VALUE" if KINDS[kind] else kind
        raise ValueError(f"probe variant {text!r}: write it as {form}")
    if not value:
        return Variant(kind)
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"probe variant {text!r}: {value!r} is not a number") from None
    if kind in ("griffin-lim", "rtisi") and (number < 1 or number != int(number)):
        raise ValueError(f"probe variant {text!r}: the iteration count must be a whole number >= 1")
    return Variant(kind, number)


class Overlap:
    """Windowed analysis and overlap-add synthesis matching :class:`CausalISTFT` (periodic Hann window,
    frame ``j`` at samples ``[j * hop, j * hop + n_fft)``); spectra are ``[N, F]`` complex, numpy."""

    def __init__(self, n_fft: int, hop: int) -> None:
        self.n_fft, self.hop = n_fft, hop
        self.window = np.hanning(n_fft + 1)[:-1]
        self.synthesis = self.window / ((self.window**2).sum() / hop)  # sums to one under overlap-add

    def frames(self, spec: np.ndarray) -> np.ndarray:
        """``[N, F]`` complex -> ``[N, n_fft]`` synthesis frames."""
        return np.fft.irfft(spec, n=self.n_fft, axis=-1) * self.synthesis

    def overlap_add(self, frames: np.ndarray) -> np.ndarray:
        """``[N, n_fft]`` -> ``[(N - 1) * hop + n_fft]`` samples (untrimmed)."""
        out = np.zeros((len(frames) - 1) * self.hop + self.n_fft)
        for j, frame in enumerate(frames):
            out[j * self.hop : j * self.hop + self.n_fft] += frame
        return out

    def analyse(self, signal: np.ndarray, n: int) -> np.ndarray:
        """The ``n`` frames of ``signal`` at ``j * hop`` -> ``[n, F]`` complex."""
        view = np.lib.stride_tricks.sliding_window_view(signal, self.n_fft)[:: self.hop][:n]
        return np.fft.rfft(view * self.window, axis=-1)


def griffin_lim(ola: Overlap, mag: np.ndarray, phase: np.ndarray, iterations: int) -> np.ndarray:
    """Griffin-Lim from ``phase``: ``mag``, ``phase`` ``[N, F]`` -> samples (untrimmed)."""
    for _ in range(iterations):
        phase = np.angle(ola.analyse(ola.overlap_add(ola.frames(mag * np.exp(1j * phase))), len(mag)))
    return ola.overlap_add(ola.frames(mag * np.exp(1j * phase)))


def rtisi(ola: Overlap, mag: np.ndarray, iterations: int) -> np.ndarray:
    """Causal RTISI: frame ``j``'s phase is found against the overlap of frames ``< j`` only.

    ``mag`` ``[N, F]`` -> samples (untrimmed); sample ``s < (j + 1) * hop`` depends on frames ``<= j`` only.
    """
    out = np.zeros((len(mag) - 1) * ola.hop + ola.n_fft)
    for j, m in enumerate(mag):
        span = slice(j * ola.hop, j * ola.hop + ola.n_fft)
        past = out[span].copy()
        phase = np.angle(np.fft.rfft(past * ola.window))
        for _ in range(iterations):
            frame = np.fft.irfft(m * np.exp(1j * phase), n=ola.n_fft) * ola.synthesis
            phase = np.angle(np.fft.rfft((past + frame) * ola.window))
        out[span] += np.fft.irfft(m * np.exp(1j * phase), n=ola.n_fft) * ola.synthesis
    return out


def _band_contrast(env: torch.Tensor, amount: float) -> torch.Tensor:
    """``[B, E, N]`` -> ``env + amount * (env - mean over the band and its neighbours)``."""
    padded = F.pad(env.transpose(1, 2), (1, 1), mode="replicate")
    smooth = F.avg_pool1d(padded, 3, 1).transpose(1, 2)
    return env + amount * (env - smooth)


def _time_contrast(log_mag: torch.Tensor, amount: float, a: float = 0.5) -> torch.Tensor:
    """``[B, F, N]`` -> ``log_mag + amount * (log_mag - mean)``, with the causal running mean
    ``mean_j = a * x_j + (1 - a) * mean_{j-1}`` (``mean_{-1} = 0``)."""
    mean = torch.empty_like(log_mag)
    running = torch.zeros_like(log_mag[..., 0])
    for j in range(log_mag.shape[-1]):
        running = a * log_mag[..., j] + (1 - a) * running
        mean[..., j] = running
    return log_mag + amount * (log_mag - mean)


def probe_decode(
    decoder: SpectralDecoder,
    hidden: torch.Tensor,
    variant: Variant,
    original: torch.Tensor | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`SpectralDecoder.decode` as ``variant`` says: ``hidden`` ``[B, D, T']`` -> (audio ``[B, 1, T]``,
    the spectrum it was made from, log-magnitudes then phases).

    ``original`` is the clip that was encoded, ``[B, 1, T]`` (the ``original-*`` variants need it). For
    ``random``, ``griffin-lim`` and ``rtisi`` the returned spectrum keeps the decoder's phase.

    Raises:
        ValueError: ``envelope`` or ``detail`` on a decoder without an envelope head, or an ``original-*``
            variant without the original.
    """
    n_fft, hop = decoder.istft.n_fft, decoder.istft.hop
    x = decoder.net(hidden)
    if variant.kind in ("envelope", "detail"):
        if decoder.envelope is None:
            raise ValueError(
                f"probe variant {variant.name} needs a decoder with an envelope head (envelope_bands > 0)"
            )
        env, detail, phase = decoder.envelope.split(x)
        assert variant.value is not None
        if variant.kind == "envelope":
            env = _band_contrast(env, variant.value)
        else:
            detail = detail * variant.value
        x = torch.cat([env, detail, phase], dim=1)
    spec = decoder.envelope(x) if decoder.envelope is not None else x
    bins = spec.shape[1] // 2
    if variant.kind == "time":
        assert variant.value is not None
        spec = torch.cat([_time_contrast(spec[:, :bins], variant.value), spec[:, bins:]], dim=1)
    if variant.kind in ORIGINAL_KINDS:
        if original is None:
            raise ValueError(f"probe variant {variant.name} needs the encoded clip (decode inside probing())")
        frames = spec.shape[-1]
        clip = F.pad(original.double(), (0, max(frames * hop - original.shape[-1], 0)))
        target = frame_spectrum(clip, n_fft, hop)[..., :frames]
        if variant.kind == "original-phase":
            spec = torch.cat([spec[:, :bins], torch.angle(target).to(spec)], dim=1)
        else:
            spec = torch.cat([torch.log(target.abs().clamp(min=1e-5)).to(spec), spec[:, bins:]], dim=1)
    if variant.kind not in PHASE_KINDS:
        return decoder.istft(decoder.polar(spec)), spec
    ola = Overlap(n_fft, hop)
    mags = torch.exp(spec[:, :bins].clamp(max=MAX_LOG_MAGNITUDE)).double().cpu().numpy()
    phases = spec[:, bins:].double().cpu().numpy()
    rng = np.random.default_rng(seed)
    out = []
    for mag, phase in zip(mags, phases):
        mag, phase = mag.T, phase.T  # [N, F]
        if variant.kind == "random":
            audio = ola.overlap_add(ola.frames(mag * np.exp(1j * rng.uniform(-np.pi, np.pi, mag.shape))))
        elif variant.kind == "griffin-lim":
            audio = griffin_lim(ola, mag, phase, int(variant.value or 0))
        else:
            audio = rtisi(ola, mag, int(variant.value or 0))
        out.append(audio[: len(mag) * hop])  # the causal overlap-add's length, as CausalISTFT
    return torch.from_numpy(np.stack(out)).to(hidden.dtype)[:, None], spec


@contextmanager
def probing(codec: MimiCodec, variant: Variant) -> Iterator[None]:
    """Within the block, ``codec`` decodes as ``variant`` says (whole clips, one encode then its decode;
    not for streaming). The ``original-*`` variants use the clip last encoded.

    Raises:
        ValueError: the codec has no spectral decoder.
    """
    model, decoder = codec.model, codec.model.decoder
    if not isinstance(decoder, SpectralDecoder):
        raise ValueError(
            "eval.codec_probe needs a spectral codec (frontend: spectral); this one decodes samples"
        )
    encoded: list[torch.Tensor] = []
    model_encode = model.encode

    def encode(x: torch.Tensor) -> torch.Tensor:
        encoded[:] = [x]
        return model_encode(x)

    def decode(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return probe_decode(decoder, hidden, variant, encoded[0] if encoded else None)

    model.encode = encode  # type: ignore[method-assign]
    decoder.decode = decode  # type: ignore[method-assign]
    try:
        yield
    finally:
        del model.encode, decoder.decode  # the instance attributes: the class's methods show again


def run_probe(
    codec: MimiCodec, clips: list[Clip], variants: list[Variant], out: Path, judge: Any, plots: int = 1
) -> dict[str, Any]:
    """Evaluate every variant on ``clips`` (``OUT/NAME/``, ``plots`` spectrograms each) and rank them
    against ``own``; writes ``rank.md``, ``rank.json`` and ``rank.png`` to ``out`` and returns the ranking."""
    if Variant("own") not in variants:
        variants = [Variant("own"), *variants]
    results = {}
    for variant in variants:
        print(f"probe: {variant.name}")
        with probing(codec, variant):
            folder = out / variant.name.replace(":", "_")
            machine = machine_context()  # each variant's RTFs get their own: a job started mid-probe shows
            results[variant.name] = evaluate_clips(codec, clips, folder, judge, plots, machine=machine)
    ranking = rank(results, "own")
    out.mkdir(parents=True, exist_ok=True)
    (out / "rank.json").write_text(json.dumps(ranking, indent=2))
    (out / "rank.md").write_text(to_markdown(ranking, f"probe variants ({len(clips)} clips)"))
    plot(ranking, out / "rank.png")
    return ranking


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.codec_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a spectral codec checkpoint (.safetensors)")
    parser.add_argument("--set", required=True, help="an evaluation set folder (python -m eval.codec_set)")
    parser.add_argument(
        "--variants", nargs="+", required=True, help="KIND or KIND:VALUE (see the module help)"
    )
    parser.add_argument("--groups", nargs="*", default=None, help="keep only these groups of the set")
    parser.add_argument("--out", default="runs/codec_probe")
    parser.add_argument("--threads", type=int, default=2)
    add_judge_argument(parser)
    add_judge_cache_argument(parser)
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(v) for v in args.variants]
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    try:
        clips = select_groups(set_clips(args.set), args.groups)
    except ValueError as err:
        parser.error(f"--groups: {err}")
    codec = load_eval_codec(args.checkpoint)
    judge = MemoJudge(judge_factory(args.judge_compute_type), cache=judge_cache(args.judge_cache))
    try:
        ranking = run_probe(codec, clips, variants, Path(args.out), judge)
    except ValueError as err:
        parser.error(str(err))
    finally:
        judge.save()
    print(to_markdown(ranking, f"probe variants ({len(clips)} clips)"))
    print(f"wrote {args.out}/rank.md, rank.json and rank.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
