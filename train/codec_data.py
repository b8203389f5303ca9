"""Audio for codec training: files (list, glob or manifest) -> random fixed-length mono crops.

Everything is loaded once into memory at 24 kHz (codec corpora for CPU runs are small). The sampler
owns a seeded ``torch.Generator`` and counts batches, and ``state_dict()`` holds both, so a resumed
run draws exactly the crops the uninterrupted run would have drawn.

Run ``python -m train.codec_data OUT_DIR`` to synthesize a small smoke corpus with the Piper voice.
"""

from __future__ import annotations

import argparse
import glob
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from e2e_voice.audio.io import load_audio, resample, save_audio
from e2e_voice.constants import SAMPLE_RATE, repo_path

MANIFEST_AUDIO_KEYS = ("audio", "audio_path", "path", "wav")


def read_manifest(path: str | Path, audio_key: str | None = None) -> list[Path]:
    """Audio paths from a JSONL manifest (one object per line); relative paths are taken from its folder.

    The synthetic corpus (issue #3) is still being defined; this reads the first of
    ``audio_key`` or ``MANIFEST_AUDIO_KEYS`` that a line has, and says which keys it saw otherwise.
    """
    path = Path(path)
    keys = (audio_key,) if audio_key else MANIFEST_AUDIO_KEYS
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        key = next((k for k in keys if k in row), None)
        if key is None:
            raise ValueError(
                f"{path}:{i + 1}: no audio key among {keys}; keys are {sorted(row)} (set data.audio_key)"
            )
        p = Path(row[key])
        out.append(p if p.is_absolute() else path.parent / p)
    return out


def find_audio(
    files: Sequence[str] | str | None = None, manifest: str | None = None, audio_key: str | None = None
) -> list[Path]:
    """Resolve a list of paths/globs and/or a manifest to existing audio files (sorted, de-duplicated).

    Raises:
        FileNotFoundError: nothing was found, or one of ``files`` matched no file (a recipe that lists a
            speech set expects it: training on the rest without saying so would change the recipe).
    """
    patterns = [files] if isinstance(files, str) else list(files or [])
    found: set[Path] = set()
    for pat in patterns:
        p = repo_path(pat)
        matches = [Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file()]
        if not matches and (manifest or len(patterns) > 1):
            raise FileNotFoundError(
                f"data.files entry {pat!r} matched no file (the other sources did); generate it first"
                " (the recipe's header says how, e.g. `python -m train.codec_speech` for"
                " data/generated/codec_voices) or drop it from data.files"
            )
        found.update(matches)
    if manifest:
        found.update(read_manifest(manifest, audio_key))
    if not found:
        raise FileNotFoundError(
            f"no audio found for files={patterns} manifest={manifest}; generate a smoke corpus with"
            " `python -m train.codec_data data/generated/codec_smoke` or point data.files at your wavs"
        )
    return sorted(found)


class CropSampler:
    """Random fixed-length crops from in-memory clips, with exact resume.

    Args:
        clips: mono 24 kHz clips ``[T]``.
        crop_samples: crop length (a multiple of the codec frame size).
        seed: generator seed.
        min_rms: redraw a crop whose RMS is below this (up to ``max_tries`` draws, then keep the last):
            a two-channel conversation is silent on each side about half the time, and a batch of
            silence teaches a codec little. 0 keeps every draw.
        max_tries: draws per crop when ``min_rms`` is set.
        weights: per-clip draw weights (any positive scale); ``None`` draws every clip alike.
        redraw: what a quiet draw redraws: ``"clip"`` a new clip and start (then clips with more
            speech get more crops: on the synthetic corpus the assistant's channels, active in 56 % of
            their frames, got 70 % of the crops, the users' channels, 24 % active, 30 %), or ``"start"``
            a new start in the same clip, so each clip gets its share of the crops.
        speed: ``(low, high)``: speed perturbation, as in Kaldi's recipes. A perturbed crop is read from
            ``factor * crop_samples`` samples of its clip, resampled to ``crop_samples``. The factor is
            uniform in ``[low, high]``. Pitch, formants and tempo all move by that factor, which makes
            new voices out of the corpus's few. ``None`` leaves every crop as it is.
        speed_prob: the share of crops that are perturbed (when ``speed`` is set).
    """

    def __init__(
        self,
        clips: list[torch.Tensor],
        crop_samples: int,
        seed: int = 0,
        min_rms: float = 0.0,
        max_tries: int = 10,
        weights: Sequence[float] | None = None,
        redraw: str = "clip",
        speed: Sequence[float] | None = None,
        speed_prob: float = 1.0,
    ) -> None:
        if not clips:
            raise ValueError("CropSampler needs at least one clip")
        if redraw not in ("clip", "start"):
            raise ValueError(f"data.redraw must be 'clip' or 'start', got {redraw!r}")
        self.redraw = redraw
        self.weights: torch.Tensor | None = None
        if weights is not None:
            if len(weights) != len(clips) or min(weights) <= 0:
                raise ValueError(f"need one positive weight per clip ({len(clips)}), got {len(weights)}")
            self.weights = torch.tensor([float(w) for w in weights], dtype=torch.float64)
        self.clips = clips
        self.crop = crop_samples
        self.min_rms = float(min_rms)
        self.max_tries = int(max_tries)
        self.gen = torch.Generator().manual_seed(seed)
        self.position = 0  # batches drawn so far
        self.last_origins: list[tuple[int, int]] = []  # (clip index, start sample) of the last batch
        self.last_factors: list[float] = []  # speed factor of each crop of the last batch (1.0: as it is)
        self.speed: tuple[float, float] | None = None
        self.speed_prob = float(speed_prob)
        self.speed_gen: torch.Generator | None = None
        if speed is not None:
            try:
                low, high = (float(v) for v in speed)
            except (TypeError, ValueError):
                low, high = float("nan"), float("nan")
            if not 0.5 <= low <= high <= 2.0:
                raise ValueError(
                    f"data.speed must be [low, high] with 0.5 <= low <= high <= 2 (or null), got {speed!r}"
                )
            if not 0.0 <= self.speed_prob <= 1.0:
                raise ValueError(f"data.speed_prob must be in [0, 1], got {speed_prob}")
            self.speed = (low, high)
            # Its own generator: the crops' clips and starts are those of the same seed without perturbation,
            # so a run with and without it differ only in the perturbation.
            self.speed_gen = torch.Generator().manual_seed(seed + 1_000_003)

    @classmethod
    def from_files(
        cls,
        paths: Sequence[Path],
        crop_samples: int,
        seed: int = 0,
        channels: str = "mix",
        min_rms: float = 0.0,
        file_weights: Sequence[float] | None = None,
        redraw: str = "clip",
        speed: Sequence[float] | None = None,
        speed_prob: float = 1.0,
    ) -> CropSampler:
        """Load ``paths`` at 24 kHz; ``channels="split"`` makes each channel of a file its own clip.

        ``file_weights`` (one per path) weighs the draws; a file's channels share its weight. ``speed`` and
        ``speed_prob``: as in the class.
        """
        if channels not in ("mix", "split"):
            raise ValueError(f"data.channels must be 'mix' or 'split', got {channels!r}")
        clips: list[torch.Tensor] = []
        weights: list[float] = []
        for i, p in enumerate(tqdm(paths, desc="load audio")):
            audio = load_audio(p, SAMPLE_RATE, mono=channels == "mix")  # [C, T]
            kept = [c for c in audio if c.size > 0]
            clips.extend(torch.from_numpy(np.ascontiguousarray(c)) for c in kept)
            if file_weights is not None and kept:
                weights.extend([float(file_weights[i]) / len(kept)] * len(kept))
        drawn = None if file_weights is None else weights
        return cls(
            clips,
            crop_samples,
            seed,
            min_rms=min_rms,
            weights=drawn,
            redraw=redraw,
            speed=speed,
            speed_prob=speed_prob,
        )

    def _draw(self) -> tuple[int, int, torch.Tensor]:
        if self.weights is None:  # kept as is: the committed codec's crops were drawn this way
            i = int(torch.randint(len(self.clips), (1,), generator=self.gen))
        else:
            i = int(torch.multinomial(self.weights, 1, generator=self.gen))
        return self._draw_start(i)

    def _draw_start(self, i: int) -> tuple[int, int, torch.Tensor]:
        clip = self.clips[i]
        start = int(torch.randint(max(clip.numel() - self.crop, 0) + 1, (1,), generator=self.gen))
        return i, start, clip[start : start + self.crop]

    def next_batch(self, batch_size: int) -> torch.Tensor:
        """``[B, 1, crop]`` crops; clips shorter than a crop are zero-padded at the end."""
        out = torch.zeros(batch_size, 1, self.crop)
        self.last_origins, self.last_factors = [], []
        for b in range(batch_size):
            i, start, piece = self._draw()
            for _ in range(1, self.max_tries if self.min_rms > 0 else 1):
                if float(piece.square().mean().sqrt()) >= self.min_rms:
                    break
                i, start, piece = self._draw() if self.redraw == "clip" else self._draw_start(i)
            factor = self._speed_factor()
            if factor != 1.0:
                span = self._span(factor)
                source = self.clips[i][start : start + span].numpy()
                # read as if sampled at factor x 24 kHz: factor > 1 plays faster and higher
                fast = resample(source, SAMPLE_RATE * factor, SAMPLE_RATE)
                piece = torch.from_numpy(np.ascontiguousarray(fast[: self.crop]))
            out[b, 0, : piece.numel()] = piece
            self.last_origins.append((i, start))
            self.last_factors.append(factor)
        self.position += 1
        return out

    def _span(self, factor: float) -> int:
        return self.crop if factor == 1.0 else round(self.crop * factor)

    @property
    def last_spans(self) -> list[int]:
        """Samples of its clip each crop of the last batch was read from (a crop length unless sped)."""
        return [self._span(f) for f in self.last_factors]

    def _speed_factor(self) -> float:
        if self.speed is None or self.speed_gen is None:
            return 1.0
        # always two draws, perturbed or not, so the factors follow from the batch count alone
        u = torch.rand(2, generator=self.speed_gen, dtype=torch.float64)
        if float(u[0]) >= self.speed_prob:
            return 1.0
        low, high = self.speed
        return low + (high - low) * float(u[1])

    def _speed_setting(self) -> list[float] | None:
        return None if self.speed is None else [*self.speed, self.speed_prob]

    def state_dict(self) -> dict[str, Any]:
        state = {"position": self.position, "generator": self.gen.get_state()}
        if self.speed_gen is not None:
            state["speed_generator"] = self.speed_gen.get_state()
            state["speed"] = self._speed_setting()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved position; a run resumed with other speed settings than it had is refused.

        Raises:
            ValueError: ``data.speed`` / ``data.speed_prob`` differ from the saved run's.
        """
        now = self._speed_setting()
        # the first speed-perturbed runs (2026-12-03) kept the generator but not the settings
        saved = state.get("speed", now if "speed_generator" in state else None)
        if saved != now:

            def said(v: list[float] | None) -> str:
                return "none" if v is None else f"data.speed=[{v[0]:g},{v[1]:g}] data.speed_prob={v[2]:g}"

            raise ValueError(
                f"this checkpoint was written with speed perturbation {said(saved)}, this run asks for"
                f" {said(now)}: resume with the run's own settings, or start a new run (another run_name)"
            )
        self.position = int(state["position"])
        self.gen.set_state(state["generator"])
        if self.speed_gen is not None:
            self.speed_gen.set_state(state["speed_generator"])


SMOKE_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A codec turns speech into a few numbers every eighty milliseconds.",
    "We measured the error rate of the reconstructed speech with a small recognizer.",
    "Is it going to rain tomorrow afternoon, or will the sun come out again?",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack.",
    "The train leaves at half past seven, so we should hurry to the station.",
    "Numbers like forty two and nineteen eighty four are easy to say.",
)


def make_smoke_corpus(out_dir: str | Path, repeats: int = 1) -> list[Path]:
    """Speak :data:`SMOKE_SENTENCES` with the bundled Piper voice into ``out_dir`` (wav + txt)."""
    from e2e_voice.tts.piper import PiperTTS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in range(repeats):
        tts = PiperTTS(length_scale=1.0 + 0.1 * r)
        for i, text in enumerate(tqdm(SMOKE_SENTENCES, desc=f"piper pass {r + 1}/{repeats}")):
            audio = tts.synthesize(text, seed=1000 * r + i)  # the same corpus on every machine
            p = out / f"piper_{r}_{i:02d}.wav"
            save_audio(p, audio, tts.sample_rate)
            p.with_suffix(".txt").write_text(text + "\n")
            paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="synthesize a small speech corpus for codec smoke runs")
    parser.add_argument("out_dir", nargs="?", default="data/generated/codec_smoke")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the sentences (varied speed)")
    args = parser.parse_args(argv)
    paths = make_smoke_corpus(args.out_dir, args.repeats)
    print(f"wrote {len(paths)} clips to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
