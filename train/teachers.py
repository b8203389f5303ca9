"""Frozen teachers for the codec's semantic distillation, computed without gradients.

A teacher maps audio ``[B, 1, T]`` at 24 kHz to features ``[B, T_t, D]`` and says its width ``dim``.
Mimi distilled WavLM; offline we default to the Whisper base encoder from the model bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from e2e_voice.audio.io import resample
from e2e_voice.constants import SAMPLE_RATE
from train.checkpoint import save_checkpoint

TEACHER_RATE = 16_000
CACHE_FORMAT = 1  # bump when the stored layout or the way features are computed changes

log = logging.getLogger(__name__)


class Teacher(Protocol):
    dim: int

    def __call__(self, audio: torch.Tensor) -> torch.Tensor: ...


class WhisperEncoderTeacher:
    """Whisper's encoder (CTranslate2, from ``resolve("whisper-base")``) as a frozen teacher.

    Whisper is trained on 30 s windows; we feed the crop's own length instead (CTranslate2 accepts
    shorter inputs), which is ~6x cheaper for 2 s crops. Outputs are at 50 Hz.

    Args:
        model: registry name of the CTranslate2 Whisper model.
        model_path: explicit local directory, wins over ``model``.
        compute_type: CTranslate2 compute type (int8 on CPU).
        device: ``cpu`` or ``cuda``.
    """

    def __init__(
        self,
        model: str = "whisper-base",
        model_path: str | None = None,
        compute_type: str = "int8",
        device: str = "cpu",
    ) -> None:
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        from e2e_voice.assets import resolve

        path = resolve(model, model_path)
        self._model = ctranslate2.models.Whisper(str(path), device=device, compute_type=compute_type)
        n_mels = int(getattr(self._model, "n_mels", 80))
        self._features = FeatureExtractor(feature_size=n_mels)
        self._storage = ctranslate2.StorageView
        self.dim = int(self._encode(np.zeros((1, n_mels, 200), np.float32)).shape[-1])

    def _encode(self, feats: np.ndarray) -> np.ndarray:
        return np.array(self._model.encode(self._storage.from_array(np.ascontiguousarray(feats))))

    @torch.no_grad()
    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio`` [B, 1, T] at 24 kHz -> encoder states [B, T_t, D] (50 Hz)."""
        x = audio[:, 0].detach().float().cpu().numpy()
        x16 = resample(x, SAMPLE_RATE, TEACHER_RATE)  # [B, T16]
        mels = np.stack([self._features(row)[:, :-1] for row in x16])  # drop the trailing pad frame
        if mels.shape[-1] % 2:  # the encoder's stride-2 conv wants an even frame count
            mels = mels[..., :-1]
        return torch.from_numpy(self._encode(mels.astype(np.float32))).to(audio.device)


class HFTeacher:
    """A transformers speech encoder (WavLM, HuBERT, wav2vec2) from a local checkpoint directory.

    Args:
        path: local directory of a transformers checkpoint (no hub access here).
        layer: hidden-state index to distill (Mimi used an inner WavLM layer).
        device: torch device.
    """

    def __init__(self, path: str, layer: int = -1, device: str = "cpu") -> None:
        from transformers import AutoModel

        if not Path(path).is_dir():
            raise FileNotFoundError(
                f"teacher checkpoint directory {path} not found; download e.g. microsoft/wavlm-base-plus"
                " there, or use the offline default teacher=whisper"
            )
        self._model = AutoModel.from_pretrained(path).to(device).eval()
        self.layer = layer
        self.dim = int(self._model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        x = resample(audio[:, 0].detach().float().cpu().numpy(), SAMPLE_RATE, TEACHER_RATE)
        x = (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-7)
        dev = next(self._model.parameters()).device
        out = self._model(torch.from_numpy(x).to(dev), output_hidden_states=True)
        return out.hidden_states[self.layer].to(audio.device)


TEACHER_FRAME_RATE = 50  # Whisper's encoder and WavLM/HuBERT both give 50 features per second
TEACHER_HOP = SAMPLE_RATE // TEACHER_FRAME_RATE  # 480 samples per feature


class TeacherCache:
    """A teacher's features of whole clips, computed once, then cut to each batch's crops.

    Running the teacher on every batch cost as much as the codec's own training step on CPU. Features
    of a whole clip (in windows of ``window_s``) also see more context than a 1-2 s crop would, closer to
    Mimi's long-context WavLM targets. Features are kept in float16 (~50 KB per second of audio for
    Whisper base's 512 dimensions).

    Build it with :meth:`compute` (teacher in this process) or :meth:`compute_in_subprocess` (teacher
    built from its config in a child process, which the trainer uses: see there why).

    Args:
        features: per clip, ``[T_clip / hop, D]`` teacher features at 50 Hz.
        dim: the teacher's feature width ``D``.
    """

    def __init__(self, features: list[torch.Tensor], dim: int) -> None:
        self.hop = TEACHER_HOP
        self.features = features
        self.dim = dim

    @classmethod
    @torch.no_grad()
    def compute(cls, teacher: Teacher, clips: list[torch.Tensor], window_s: float = 20.0) -> TeacherCache:
        """Run ``teacher`` over ``clips`` (mono 24 kHz ``[T]``) in windows of at most ``window_s``."""
        hop = TEACHER_HOP
        window = max(int(window_s * SAMPLE_RATE) // hop, 1) * hop
        min_piece = SAMPLE_RATE // 2  # shorter pieces are zero-padded: tiny inputs break conv front ends
        features: list[torch.Tensor] = []
        for clip in tqdm(clips, desc="teacher features"):
            parts = []
            for start in range(0, clip.numel(), window):
                piece = clip[start : start + window]
                n = piece.numel() // hop
                if n == 0:
                    break
                padded = torch.nn.functional.pad(piece, (0, max(min_piece - piece.numel(), 0)))
                feats = teacher(padded[None, None].float())[0]  # [T_t, D]
                parts.append(_fit_frames(feats, n))
            features.append(torch.cat(parts).half() if parts else torch.zeros(0, teacher.dim).half())
        return cls(features, teacher.dim)

    @classmethod
    def compute_in_subprocess(
        cls, teacher_config: dict[str, Any], clips: list[torch.Tensor], window_s: float = 20.0
    ) -> TeacherCache:
        """Like :meth:`compute`, with the teacher built by Hydra from ``teacher_config`` in a child process.

        Why: CTranslate2 (the Whisper teacher) slows torch in its process (its threads join torch's
        OpenMP runtime; see ``WhisperSTT``). On 2 cores a codec step took 0.30 s with the model kept,
        0.22 s after freeing it, 0.19–0.24 s in a process that never loaded it, and two 1-thread runs
        side by side 1.0 s instead of 0.34 s each.
        The child is a fresh ``python -m train.teachers`` (not multiprocessing, which would re-import
        the caller's main script); clips and features travel through a temporary folder.

        Raises:
            RuntimeError: the child failed (its stderr, with the teacher's own error, is shown above).
        """
        with tempfile.TemporaryDirectory(prefix="teacher_cache_") as tmp:
            job = {"teacher": teacher_config, "window_s": window_s, "threads": torch.get_num_threads()}
            src, dst = Path(tmp) / "in.pt", Path(tmp) / "out.pt"
            torch.save({"job": job, "clips": clips}, src)
            cmd = [sys.executable, "-m", "train.teachers", str(src), str(dst)]
            root = Path(__file__).resolve().parents[1]
            done = subprocess.run(cmd, cwd=root, check=False)
            if done.returncode != 0:
                raise RuntimeError(
                    f"the teacher-feature process failed (exit {done.returncode}); run with"
                    " distill_cache=false to see the teacher's error in this process"
                )
            out = torch.load(dst)
        return cls(out["features"], int(out["dim"]))

    @classmethod
    def load_or_compute(
        cls,
        teacher_config: dict[str, Any],
        clips: list[torch.Tensor],
        cache_dir: str | Path | None,
        window_s: float = 20.0,
        max_bytes: int | None = None,
    ) -> TeacherCache:
        """:meth:`compute_in_subprocess`, kept under ``cache_dir`` for the next run over the same clips.

        The teacher's pass over a corpus is the same for every seed and recipe that reads that corpus, and
        for every resume of a run (47 s of each codec recipe's start on 2 cores). The file is named by a
        hash of everything the features depend on (:func:`cache_key`: the clips' samples, the teacher's
        config and model files, the window, the thread count, this machine's CPU and library versions), and
        it holds that key, which is compared in full on reading. A file that cannot be read or does not match
        is recomputed and replaced, with a warning; one that cannot be written leaves the run going, with a
        warning. Writes are atomic (temp file + rename).

        Args:
            teacher_config: the teacher's Hydra config (``_target_`` and arguments).
            clips: mono 24 kHz clips ``[T]``, in the sampler's order.
            cache_dir: folder of the cached features; None computes them every time.
            window_s: see :meth:`compute`.
            max_bytes: the folder's budget: after a run reads or writes its file, the least recently used
                other files are deleted until the folder's ``.pt`` files fit (a file read is marked used).
                None keeps every file.
        """
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"the teacher cache's budget must be positive bytes or None, got {max_bytes}")
        if cache_dir is None:
            return cls.compute_in_subprocess(teacher_config, clips, window_s)
        key = cache_key(teacher_config, clips, window_s)
        path = Path(cache_dir) / f"{_key_digest(key)[:24]}.pt"
        if path.exists():
            t0 = time.perf_counter()
            try:
                cache = cls._read(path, key, clips)
            # Any unreadable file (torn, foreign, another torch's pickle) is recomputed.
            except Exception as e:
                log.warning(
                    "teacher feature cache %s is unusable (%s): computing the features again", path, e
                )
            else:
                log.info(
                    "teacher features of %d clips read from %s in %.1f s",
                    len(clips),
                    path,
                    time.perf_counter() - t0,
                )
                _mark_used(path)
                _prune(Path(cache_dir), path, max_bytes)
                return cache
        t0 = time.perf_counter()
        cache = cls.compute_in_subprocess(teacher_config, clips, window_s)
        took = time.perf_counter() - t0
        try:
            save_checkpoint(path, {"key": key, "features": cache.features, "dim": cache.dim})
            size = path.stat().st_size / 1e6
            log.info(
                "teacher features computed in %.1f s; kept in %s (%.0f MB) for later runs", took, path, size
            )
            _prune(Path(cache_dir), path, max_bytes)
        except OSError as e:
            log.warning(
                "teacher features computed in %.1f s but not kept (%s): the next run computes them again",
                took,
                e,
            )
        return cache

    @classmethod
    def _read(cls, path: Path, key: dict[str, Any], clips: list[torch.Tensor]) -> TeacherCache:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(stored, dict) or stored.get("key") != key:
            raise ValueError("its key differs from this run's")
        features, dim = list(stored["features"]), int(stored["dim"])
        expected = [clip.numel() // TEACHER_HOP for clip in clips]
        shapes = [tuple(f.shape) for f in features]
        if shapes != [(n, dim) for n in expected]:
            raise ValueError(
                f"its feature shapes do not fit the clips ({len(shapes)} tensors for {len(clips)} clips)"
            )
        return cls(features, dim)

    def crops(
        self, origins: list[tuple[int, int]], crop_samples: int, spans: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Features ``[B, crop_samples / hop, D]`` of the crops drawn at ``origins`` (clip index, start).

        ``spans``: how many samples of its clip each crop was read from, when that is not ``crop_samples``
        (a speed-perturbed crop). Those features are stretched in time to the crop's frames (linear
        interpolation): a teacher's features of speech sped up are taken to be its features of the
        original speech, sped up.
        """
        n = crop_samples // self.hop
        out = torch.zeros(len(origins), n, self.dim)
        for b, (i, start) in enumerate(origins):
            span = crop_samples if spans is None else int(spans[b])
            if span == crop_samples:
                f = self.features[i][start // self.hop : start // self.hop + n].float()
            else:
                m = max(round(span / self.hop), 1)
                f = self.features[i][start // self.hop : start // self.hop + m].float()
                if f.shape[0] == 0:
                    continue
                # frames past the clip's end stay zero, as they do unperturbed
                kept = min(n, max(round(f.shape[0] * n / m), 1))
                f = torch.nn.functional.interpolate(f.T[None], size=kept, mode="linear", align_corners=False)[
                    0
                ].T
            out[b, : f.shape[0]] = f
        return out


def cache_key(teacher_config: dict[str, Any], clips: list[torch.Tensor], window_s: float) -> dict[str, Any]:
    """Everything a :class:`TeacherCache`'s features depend on, as JSON-able values.

    The machine and library versions are part of it because the features are not the same everywhere:
    int8 kernels differ by CPU (the synthetic corpus's TTS audio differs between AVX-512 and AVX2 machines,
    see ``e2e_voice.data.digests``), so a cache carried to another machine is recomputed there.
    """
    from e2e_voice.data.digests import machine_fingerprint, package_versions

    h = hashlib.sha256()
    for clip in clips:
        data = clip.detach().to(torch.float32).contiguous().numpy()
        h.update(str(data.shape).encode())
        h.update(data.tobytes())
    names = ("torch", "numpy", "ctranslate2", "faster-whisper", "transformers", "soxr")
    installed = package_versions(names)
    versions = {name: installed.get(name) for name in names}  # None: not installed
    machine = machine_fingerprint()
    return {
        "format": CACHE_FORMAT,
        "teacher": json.loads(json.dumps(teacher_config, sort_keys=True, default=str)),
        "teacher_files": _teacher_files(teacher_config),
        "window_s": float(window_s),
        "threads": torch.get_num_threads(),
        "clips": h.hexdigest(),
        "n_clips": len(clips),
        "machine": {k: machine.get(k) for k in ("vendor", "family", "model", "vector_isa", "arch", "python")},
        "versions": versions,
    }


def _teacher_files(teacher_config: dict[str, Any]) -> list[list[Any]]:
    """Name, size and mtime of the teacher's model files: a replaced model gives another key.

    The folder is the config's ``model_path`` or ``path`` when given, else where ``model`` resolves without a
    download: the bundle's copy, or the hub's snapshot (whose files are links to blobs: their sizes and
    mtimes are the blobs').
    Sizes and mtimes, not hashes: hashing a large checkpoint at each start would cost what the cache saves.
    """
    folder = teacher_config.get("model_path") or teacher_config.get("path")
    if not folder and teacher_config.get("model"):
        from e2e_voice.assets.registry import local_copy

        folder = local_copy(str(teacher_config["model"]))  # the bundle's copy, or the hub's snapshot
    if not folder or not Path(folder).expanduser().exists():
        return []
    root = Path(folder).expanduser()
    if root.is_file():
        return [[root.name, root.stat().st_size, root.stat().st_mtime_ns]]
    return [
        [str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns]
        for f in sorted(root.rglob("*"))
        if f.is_file() and not f.name.startswith(".")  # not the bundle's own marker, rewritten on checks
    ]


def _mark_used(path: Path) -> None:
    """Set the file's mtime to now, so that :func:`_prune` sees it as just used."""
    with contextlib.suppress(OSError):  # a read-only cache still serves its files
        os.utime(path)


def _prune(folder: Path, keep: Path, max_bytes: int | None) -> None:
    """Delete the least recently used feature files but ``keep`` until the folder's files fit ``max_bytes``.

    Only this cache's own ``.pt`` files are counted and deleted. ``keep`` (this run's file) stays even when it
    alone is over budget. Failures to delete are logged, never raised: pruning must not stop a run.
    """
    if max_bytes is None:
        return
    files = []
    for f in folder.glob("*.pt"):
        try:
            st = f.stat()
        except OSError:  # deleted meanwhile by another run
            continue
        files.append((st.st_mtime_ns, st.st_size, f))
    total = sum(size for _, size, _ in files)
    for _, size, f in sorted(files, key=lambda t: t[0]):  # oldest use first
        if total <= max_bytes:
            break
        if f == keep:
            continue
        try:
            f.unlink()
        except OSError as e:
            log.warning("teacher cache: could not delete %s to fit its budget (%s)", f, e)
            continue
        total -= size
        log.info(
            "teacher cache over its %.0f MB budget: deleted %s (%.0f MB, least recently used)",
            max_bytes / 1e6,
            f.name,
            size / 1e6,
        )


def _key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _fit_frames(feats: torch.Tensor, n: int) -> torch.Tensor:
    """Trim or repeat-pad ``[T, D]`` features to exactly ``n`` frames (teachers round lengths)."""
    if feats.shape[0] >= n:
        return feats[:n]
    pad = feats[-1:].expand(n - feats.shape[0], -1)
    return torch.cat([feats, pad])


def _main(argv: list[str]) -> int:
    """Child side of :meth:`TeacherCache.compute_in_subprocess`: ``python -m train.teachers IN OUT``."""
    from hydra.utils import instantiate

    data = torch.load(argv[0])
    job = data["job"]
    torch.set_num_threads(int(job["threads"]))
    cache = TeacherCache.compute(instantiate(job["teacher"]), data["clips"], float(job["window_s"]))
    torch.save({"features": cache.features, "dim": cache.dim}, argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
