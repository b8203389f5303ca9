"""The batched full-duplex engine: every 80 ms, encode each live user frame, step the LM, decode its reply.

One codec and one LM serve ``max_conversations`` slots in a single batch. A conversation takes a free slot
(its streaming state is reset through moshi's per-item ``reset_streaming(mask)``) and gives it back when
it ends; slots without a frame in a tick are masked out with ``set_exec_mask`` so their state does not
move. Each slot is a :class:`~e2e_voice.system.DuplexSystem`, so the server, ``converse`` and the
evaluation drive it like any other system, while a scheduler thread batches the frames that arrive
together. The engine never falls behind silently: it measures its real-time factor and counts late ticks.

Shapes: user frames ``[B, 1, FRAME_SIZE]``, codes ``[B, K, 1]``; the LM step returns text ``[B]`` and
assistant codes ``[B, dep_q]`` (see :mod:`e2e_voice.lm.generate`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from moshi.models.compression import MimiModel
from moshi.models.lm import LMModel

from e2e_voice.codec.codec import MimiCodec
from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE, in_repo
from e2e_voice.devices import check_device
from e2e_voice.lm.generate import LMStep, Sampling
from e2e_voice.lm.streams import ZERO_TOKEN
from e2e_voice.system import DuplexSystem, SystemOutput

FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE


@dataclass
class EngineStats:
    """Counters of the engine's own timing (a tick is one batched 80 ms step)."""

    ticks: int = 0
    frames: int = 0
    late_ticks: int = 0
    tick_seconds: float = 0.0
    max_tick_seconds: float = 0.0
    joined: int = 0
    left: int = 0

    @property
    def real_time_factor(self) -> float:
        """Compute time per tick over the 80 ms a tick must fit in (< 1 keeps up)."""
        return self.tick_seconds / (self.ticks * FRAME_SECONDS) if self.ticks else 0.0


@dataclass
class _Pending:
    frame: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    result: SystemOutput | None = None
    error: BaseException | None = None


class DuplexEngine:
    """A Mimi codec and a joint speech-text LM serving several conversations in one batch.

    Args:
        codec: moshi ``MimiModel`` (its ``num_codebooks`` must cover the LM's audio streams).
        lm: moshi ``LMModel`` in eval mode; ``lm.dep_q`` assistant codebooks, ``lm.n_q - dep_q`` user ones.
        text_piece: text token id -> string (e.g. sentencepiece ``id_to_piece``); None emits no text.
        max_conversations: batch size, the number of slots.
        sampling: text and audio temperatures / top-k (``e2e_voice.lm.generate.GREEDY`` is deterministic).
        user_levels: the user codebooks the LM was trained to hear (``lm.user_levels``); the others are
            fed as "no input", as in training. None: all of them.
        batch_wait: seconds the scheduler waits for the other live slots' frames before stepping the
            ones that arrived.
    """

    def __init__(
        self,
        codec: MimiModel | MimiCodec,
        lm: LMModel,
        text_piece: Callable[[int], str] | None = None,
        *,
        max_conversations: int = 4,
        sampling: Sampling | None = None,
        batch_wait: float = 0.02,
        user_levels: int | None = None,
    ) -> None:
        if max_conversations < 1:
            raise ValueError(f"max_conversations must be >= 1, got {max_conversations}")
        self.user_q = lm.n_q - lm.dep_q
        self.user_levels = self.user_q if user_levels is None else user_levels
        if not 1 <= self.user_levels <= self.user_q:
            raise ValueError(f"user_levels must be from 1 to {self.user_q}, got {user_levels}")
        if not isinstance(codec, MimiModel):  # an e2e_voice MimiCodec: the engine drives moshi's model
            codec = codec.model
        if codec.num_codebooks < max(lm.dep_q, self.user_q):
            raise ValueError(
                f"the codec produces {codec.num_codebooks} codebooks but the LM needs"
                f" {max(lm.dep_q, self.user_q)}"
            )
        if lm.card > codec.cardinality:
            raise ValueError(
                f"the LM writes audio codes up to {lm.card} but the codec's codebooks hold"
                f" {codec.cardinality}: train the LM with lm.card equal to the codec's codebook_size"
            )
        self.codec, self.lm = codec.eval(), lm.eval()
        self.text_piece = text_piece
        self.silent_text_ids = {lm.existing_text_padding_id, lm.existing_text_end_padding_id}
        self.batch = max_conversations
        self.batch_wait = batch_wait
        self.device = next(lm.parameters()).device
        self.lm_step = LMStep(lm, sampling or Sampling())
        # The engine streams for its whole life: slots join and leave through per-row resets.
        self._streaming = contextlib.ExitStack()
        self._streaming.enter_context(self.lm_step.streaming(self.batch))
        self.codec.streaming_forever(self.batch)
        self.stats = EngineStats()
        self._free = list(range(self.batch))
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: dict[int, _Pending] = {}
        # slot index -> the ticket of the conversation holding it; a stale EngineSlot (its conversation
        # ended and the index was handed out again) can neither step nor close the new owner's slot.
        self._owner: dict[int, int] = {}
        self._tickets = 0
        self._scheduler: threading.Thread | None = None
        self._stop = False

    # --- slots ---------------------------------------------------------------------------------------
    def open(self, seed: int | None = None) -> EngineSlot:
        """Take a free slot (its streaming state reset); raises RuntimeError when all are busy.

        Args:
            seed: the conversation's own sampling seed. A seeded conversation repeats exactly, whatever
                slot it gets and whatever the other slots do, and again after its ``reset()``; None
                samples from torch's global generator.
        """
        with self._lock:
            if not self._free:
                raise RuntimeError(f"all {self.batch} engine slots are busy; raise max_conversations")
            index = self._free.pop(0)
            self.lm_step.seed(index, seed)
            self._reset_slots([index])
            self._tickets += 1
            self._owner[index] = self._tickets
            self.stats.joined += 1
        return EngineSlot(self, index, self._tickets)

    def close_slot(self, index: int, ticket: int) -> None:
        with self._lock:
            if self._owner.get(index) == ticket:
                del self._owner[index]
                self._pending.pop(index, None)
                self._free.append(index)
                self.stats.left += 1
                self._wake.notify_all()

    def reset_slot(self, index: int, ticket: int) -> None:
        with self._lock:
            if self._owner.get(index) != ticket:
                raise RuntimeError(f"engine slot {index} no longer belongs to this conversation")
            self._reset_slots([index])

    def _reset_slots(self, indices: list[int]) -> None:
        mask = torch.zeros(self.batch, dtype=torch.bool, device=self.device)
        mask[indices] = True
        self.codec.reset_streaming(mask)
        self.lm_step.reset(mask)

    # --- one batched step ----------------------------------------------------------------------------
    @torch.no_grad()
    def tick(self, frames: dict[int, np.ndarray]) -> dict[int, SystemOutput]:
        """Step the slots in ``frames`` (slot -> float32 ``[FRAME_SIZE]``) together; the others hold still."""
        t0 = time.perf_counter()
        x = torch.zeros(self.batch, 1, FRAME_SIZE)
        mask = torch.zeros(self.batch, dtype=torch.bool)
        for i, frame in frames.items():
            x[i, 0] = torch.from_numpy(np.asarray(frame, dtype=np.float32))
            mask[i] = True
        x, mask = x.to(self.device), mask.to(self.device)
        self.codec.set_exec_mask(mask)
        self.lm_step.set_active(mask)
        codes = self.codec.encode(x)  # [B, K, 1]
        user = codes[:, : self.user_q]
        if self.user_levels < self.user_q:  # the levels the LM never heard in training are "no input"
            user = user.clone()
            user[:, self.user_levels :] = ZERO_TOKEN
        step = self.lm_step.step(user)
        # A slot has a reply once its acoustic delays are filled; only those slots step the decoder,
        # exactly as each would alone (the others' decoder state holds still under the exec mask).
        valid = mask & step.ready
        pcm = None
        if bool(valid.any()):
            self.codec.set_exec_mask(valid)
            pcm = self.codec.decode(step.audio.clamp(min=0)[:, :, None])  # [B, 1, FRAME_SIZE]
        text_ids = step.text.tolist()
        out: dict[int, SystemOutput] = {}
        for i in frames:
            if pcm is None or not bool(valid[i]):
                out[i] = SystemOutput(audio=np.zeros(FRAME_SIZE, np.float32))
                continue
            text = ""
            tid = int(text_ids[i])
            if self.text_piece is not None and tid >= 0 and tid not in self.silent_text_ids:
                text = self.text_piece(tid).replace("▁", " ")
            out[i] = SystemOutput(audio=pcm[i, 0].float().cpu().numpy(), text=text)
        dt = time.perf_counter() - t0
        self.stats.ticks += 1
        self.stats.frames += len(frames)
        self.stats.tick_seconds += dt
        self.stats.max_tick_seconds = max(self.stats.max_tick_seconds, dt)
        if dt > FRAME_SECONDS:
            self.stats.late_ticks += 1
        return out

    # --- scheduler: batches frames that slots submit from their own threads --------------------------------
    def submit(self, index: int, ticket: int, frame: np.ndarray) -> SystemOutput:
        """Queue one frame for slot ``index`` and wait for the tick that steps it."""
        pending = _Pending(frame)
        with self._lock:
            if self._owner.get(index) != ticket:
                raise RuntimeError(f"engine slot {index} is closed")
            if index in self._pending:
                raise RuntimeError(f"slot {index} submitted a second frame before the first was stepped")
            self._pending[index] = pending
            self._ensure_scheduler()
            self._wake.notify_all()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _ensure_scheduler(self) -> None:
        if self._scheduler is None or not self._scheduler.is_alive():
            self._stop = False
            self._scheduler = threading.Thread(target=self._schedule, name="duplex-engine", daemon=True)
            self._scheduler.start()

    def _schedule(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                # Wait (briefly) until every live slot has its frame, so they share one batched step.
                deadline = time.monotonic() + self.batch_wait
                while len(self._pending) < len(self._owner) and not self._stop:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                batch, self._pending = self._pending, {}
                try:
                    results = self.tick({i: p.frame for i, p in batch.items()})
                    for i, p in batch.items():
                        p.result = results[i]
                except BaseException as exc:  # hand the failure to every waiting conversation
                    for p in batch.values():
                        p.error = exc
            for p in batch.values():
                p.done.set()

    def shutdown(self) -> None:
        """Stop the scheduler thread and release the streaming state."""
        with self._lock:
            self._stop = True
            self._wake.notify_all()
            self._streaming.close()


class EngineSlot(DuplexSystem):
    """One conversation on a :class:`DuplexEngine` (a DuplexSystem; close it to free the slot)."""

    def __init__(self, engine: DuplexEngine, index: int, ticket: int) -> None:
        self.engine, self.index, self.ticket = engine, index, ticket

    def reset(self) -> None:
        self.engine.reset_slot(self.index, self.ticket)

    def step(self, user_frame: np.ndarray) -> SystemOutput:
        return self.engine.submit(self.index, self.ticket, self.check_frame(user_frame))

    def close(self) -> None:
        self.engine.close_slot(self.index, self.ticket)

    def __del__(self) -> None:
        # A slot dropped without close() (e.g. a crashed conversation) must not leak its batch position.
        with contextlib.suppress(Exception):
            self.engine.close_slot(self.index, self.ticket)


def load_engine(
    lm_checkpoint: str | Path,
    codec_checkpoint: str | Path | None = None,
    *,
    max_conversations: int = 4,
    sampling: Sampling | None = None,
    device: str = "cpu",
    allow_untrained_codec: bool = False,
) -> DuplexEngine:
    """Build an engine from a ``train-lm`` run (its ``checkpoint.pt``, or the run directory) or from
    an exported model directory (:mod:`e2e_voice.lm.export`, e.g. the committed ``checkpoints/lm_tiny``).

    The LM's architecture, tokenizer and codec come from the run; ``codec_checkpoint`` overrides the
    codec the run was trained with.

    Raises:
        FileNotFoundError: the checkpoint or its tokenizer is missing.
        ValueError: the run's codec has no trained weights (the LM's codes would mean nothing to a
            freshly initialised codec) and ``allow_untrained_codec`` is not set; or ``device`` is not one
            this machine has (see :func:`e2e_voice.devices.check_device`).
    """
    from hydra.utils import instantiate

    from e2e_voice.codec.codec import load_codec
    from e2e_voice.lm.builders import build_from_config
    from e2e_voice.lm.export import is_export, load_export

    check_device(device)  # before loading anything: a missing GPU says so, naming the setting
    lm_checkpoint = in_repo(lm_checkpoint)
    if is_export(lm_checkpoint):  # an exported model (e.g. the committed checkpoints/lm_tiny)
        loaded = load_export(lm_checkpoint, device=device)
        built = loaded.built
        codec_path = codec_checkpoint or loaded.codec_checkpoint
        if codec_path is None:
            raise ValueError(f"{lm_checkpoint} names no codec checkpoint; pass codec_checkpoint=...")
        codec = load_codec(codec_path, num_codebooks=built.n_q, device=device)
    else:
        path = Path(lm_checkpoint)
        if path.is_dir():
            path = path / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"LM checkpoint {path} does not exist; train one with `e2e-voice train-lm`"
            )
        # Our own checkpoint: it also holds optimizer and RNG states (numpy arrays), hence weights_only=False.
        ckpt = torch.load(path, map_location=device, weights_only=False)
        cfg = ckpt["config"]
        tokenizer = ckpt.get("tokenizer")
        tokenizer_path = (path.parent / tokenizer) if tokenizer else cfg["lm"].get("tokenizer")
        built = build_from_config(cfg["lm"], tokenizer_path=tokenizer_path, device=device)
        lora = bool((cfg["lm"].get("lora") or {}).get("enabled"))
        built.model.load_state_dict(ckpt["model"], strict=not lora)
        if codec_checkpoint is not None:
            codec = load_codec(codec_checkpoint, num_codebooks=built.n_q, device=device)
        else:
            codec_cfg = dict(cfg["codec"])
            if codec_cfg.get("checkpoint") is None and not allow_untrained_codec:
                raise ValueError(
                    f"the run {path.parent} was trained on codes of an untrained codec"
                    " (codec.checkpoint=null); pass codec_checkpoint=..."
                    " (the codec used to encode its streams)"
                )
            codec = instantiate(codec_cfg, _convert_="all")
    return DuplexEngine(
        codec,
        built.model,
        text_piece=getattr(built.tokenizer, "id_to_piece", None),
        max_conversations=max_conversations,
        sampling=sampling,
        user_levels=built.user_levels,
    )


def check_checkpoints(lm_checkpoint: str | Path | None, codec_checkpoint: str | Path | None = None) -> None:
    """Fail early, saying how to get them, when the ``system=e2e`` checkpoints are missing.

    Raises:
        FileNotFoundError: ``lm_checkpoint`` (a directory or a ``checkpoint.pt``) or ``codec_checkpoint``
            (a ``.safetensors`` file, when given) does not exist.
    """
    if lm_checkpoint is None or not in_repo(lm_checkpoint).exists():
        raise FileNotFoundError(
            f"system=e2e: the LM checkpoint {lm_checkpoint} does not exist. Train the tiny LM with"
            " `e2e-voice train-lm +experiment=lm_tiny_cpu` (after `e2e-voice train-codec"
            " +experiment=codec_cpu_deep`) and put it at checkpoints/lm_tiny/, or point"
            " system.lm_checkpoint at a train-lm run directory or its checkpoint.pt"
        )
    if codec_checkpoint is not None and not in_repo(codec_checkpoint).exists():
        raise FileNotFoundError(
            f"system=e2e: the codec checkpoint {codec_checkpoint} does not exist. Train the codec with"
            " `e2e-voice train-codec +experiment=codec_cpu_deep` and copy its codec.safetensors to"
            " checkpoints/codec_cpu/codec.safetensors, or set system.codec_checkpoint=PATH"
            " (null: the codec the LM run was trained with)"
        )


_ENGINES: dict[tuple[Any, ...], DuplexEngine] = {}
_ENGINES_LOCK = threading.Lock()


def open_slot(
    lm_checkpoint: str,
    codec_checkpoint: str | None = None,
    max_conversations: int = 4,
    temperature_text: float = 0.7,
    top_k_text: int = 25,
    temperature_audio: float = 0.8,
    top_k_audio: int = 250,
    device: str = "cpu",
    seed: int | None = None,
) -> EngineSlot:
    """A conversation slot on the process-wide engine for these settings (the ``system=e2e`` target).

    The engine is loaded once per process and shared: each call takes one of its slots, so the server
    batches every live conversation through one model. ``seed`` gives the conversation its own
    sampling stream (see :meth:`DuplexEngine.open`); None samples from torch's global generator.
    """
    key = (
        lm_checkpoint,
        codec_checkpoint,
        max_conversations,
        temperature_text,
        top_k_text,
        temperature_audio,
        top_k_audio,
        device,
    )
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            check_checkpoints(lm_checkpoint, codec_checkpoint)
            sampling = Sampling(temperature_text, top_k_text, temperature_audio, top_k_audio)
            _ENGINES[key] = load_engine(
                lm_checkpoint,
                codec_checkpoint,
                max_conversations=max_conversations,
                sampling=sampling,
                device=device,
            )
        engine = _ENGINES[key]
    return engine.open(seed)
