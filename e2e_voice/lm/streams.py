"""Multistream tokens for the joint speech-text model: inner monologue + two speakers' audio codes.

Shape legend: audio ``[B, C, T]``, codes ``[B, K, T]``, hidden ``[B, T, D]``.

One conversation becomes a ``[K, T]`` integer tensor at 12.5 Hz with ``K = 1 + 2 * n_q`` rows:

* row 0 — the assistant's text, time-aligned (the *inner monologue*): each word's tokens are written
  one per frame from the word's start frame; every other frame holds ``pad_id``, and the frame just
  before each word holds ``end_pad_id`` (moshi's ``existing_text_padding_id`` /
  ``existing_text_end_padding_id``), so the model learns *when* a word starts, not only which;
* rows ``1 .. n_q`` — the assistant's audio codes (row 1 = Mimi's semantic codebook);
* rows ``n_q + 1 .. 2 n_q`` — the user's audio codes.

These streams are *aligned* (frame ``t`` of every row describes the same 80 ms). Moshi's ``LMModel``
applies per-row delays itself (``delays`` argument) and re-aligns its logits, so training feeds the
aligned streams; :func:`apply_delays` / :func:`undo_delays` exist for inspection and for code that
handles delayed streams directly (the generation step returns aligned frames).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from e2e_voice.constants import FRAME_RATE, FRAME_SIZE, SAMPLE_RATE

# moshi's LMModel treats -1 as "no input here, no loss here" (``zero_token_id``): used for padding.
ZERO_TOKEN = -1


class TextTokenizer(Protocol):
    """What the stream builder needs from a tokenizer (sentencepiece and HF tokenizers both adapt)."""

    def encode_word(self, word: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class Codec(Protocol):
    """Anything with Mimi's ``encode``: audio ``[B, 1, T]`` -> codes ``[B, K, T']`` at 12.5 Hz."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Word:
    """One spoken word of the assistant with its timing in seconds."""

    text: str
    start_s: float
    end_s: float


@dataclass
class Conversation:
    """A two-channel conversation, the stream builder's input.

    Attributes:
        assistant_audio: ``[T]`` float32 at 24 kHz, the channel the model learns to speak.
        user_audio: ``[T]`` float32 at 24 kHz, the other speaker.
        assistant_words: the assistant's words with start/end times (seconds).
    """

    assistant_audio: np.ndarray
    user_audio: np.ndarray
    assistant_words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class TextSpecials:
    """Special ids of the text stream (moshi's defaults: padding 3, end of padding 0)."""

    pad_id: int = 3
    end_pad_id: int = 0


DEFAULT_SPECIALS = TextSpecials()


@dataclass
class TextStream:
    """An aligned text stream and where each word actually landed."""

    tokens: torch.Tensor  # [T] long
    word_frames: list[int]  # start frame of each placed word
    words_dropped: int  # words that did not fit before the end of the stream


@dataclass
class Streams:
    """The aligned multistream tokens of one conversation."""

    codes: torch.Tensor  # [K, T] long, K = 1 + 2 * n_q
    text: TextStream
    n_q: int


def seconds_to_frame(seconds: float) -> int:
    """The 80 ms frame that contains time ``seconds``."""
    return math.floor(seconds * FRAME_RATE + 1e-6)


def build_text_stream(
    words: Sequence[Word],
    num_frames: int,
    tokenizer: TextTokenizer,
    specials: TextSpecials = DEFAULT_SPECIALS,
) -> TextStream:
    """Place each word's tokens from its start frame, with an end-of-padding marker just before.

    When a word's tokens run past the next word's start frame (a long word spoken fast), the next
    word is pushed back to the first free frame after its end-of-padding marker; the frames actually
    used are returned so that nothing is silently misaligned. The first word never starts at frame 0
    (its marker needs the frame before).

    Args:
        words: the assistant's words, sorted by start time.
        num_frames: length ``T`` of the stream.
        tokenizer: splits a word into text ids.
        specials: padding / end-of-padding ids.

    Returns:
        The ``[T]`` stream, the start frame of each word that fits, and how many were dropped.
    """
    tokens = torch.full((num_frames,), specials.pad_id, dtype=torch.long)
    cursor = 0  # first frame not used by the previous word's tokens
    placed: list[int] = []
    dropped = 0
    for i, word in enumerate(words):
        ids = tokenizer.encode_word(word.text)
        if not ids:
            continue
        for tid in ids:
            if tid in (specials.pad_id, specials.end_pad_id):
                raise ValueError(
                    f"word {word.text!r} tokenizes to a special id {tid} (padding / end of padding): "
                    "train the tokenizer with those ids reserved (see e2e_voice.lm.tokenizer)"
                )
        start = max(seconds_to_frame(word.start_s), cursor + 1)
        if start + len(ids) > num_frames:
            dropped = len(words) - i
            break
        tokens[start - 1] = specials.end_pad_id
        tokens[start : start + len(ids)] = torch.tensor(ids, dtype=torch.long)
        placed.append(start)
        cursor = start + len(ids)
    return TextStream(tokens=tokens, word_frames=placed, words_dropped=dropped)


def recover_words(
    tokens: torch.Tensor, tokenizer: TextTokenizer, specials: TextSpecials = DEFAULT_SPECIALS
) -> list[tuple[str, int]]:
    """Invert :func:`build_text_stream`: ``(word, start_frame)`` for each word in a ``[T]`` stream.

    A word is a run of non-special tokens; an end-of-padding marker or padding ends it. Frames that
    carry :data:`ZERO_TOKEN` (no data) end a word too.
    """
    out: list[tuple[str, int]] = []
    current: list[int] = []
    start = -1
    for t, tid in enumerate(tokens.tolist()):
        if tid in (specials.pad_id, specials.end_pad_id) or tid < 0:
            if current:
                out.append((tokenizer.decode(current).strip(), start))
                current = []
            continue
        if not current:
            start = t
        current.append(tid)
    if current:
        out.append((tokenizer.decode(current).strip(), start))
    return out


def encode_audio(codec: Codec, audio: np.ndarray, n_q: int) -> torch.Tensor:
    """``[T]`` audio -> ``[n_q, ceil(T / 1920)]`` codes, zero-padding the last frame."""
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio [T], got shape {audio.shape}")
    padded = np.pad(audio.astype(np.float32), (0, (-len(audio)) % FRAME_SIZE))
    with torch.no_grad():
        codes = codec.encode(torch.from_numpy(padded)[None, None])  # [1, K, T']
    if codes.shape[1] < n_q:
        raise ValueError(f"the codec returns {codes.shape[1]} codebooks, the streams need n_q={n_q}")
    return codes[0, :n_q].long()


def encode_many(
    codec: Codec, audios: Sequence[np.ndarray], n_q: int, batch_size: int = 16
) -> list[torch.Tensor]:
    """:func:`encode_audio` of many ``[T_i]`` clips, ``batch_size`` at a time; ``[n_q, ceil(T_i / 1920)]``
    codes each, in the order given.

    A batch is zero-padded to its longest clip; the codec is causal, so what follows a clip does not change
    its codes (up to float rounding, which can flip a near-tie). Clips are batched by length, so padding
    stays small. Why: on 2 CPU cores the committed codec encoded 4 clips of 30 s together 3x faster per
    second of audio than one alone, and a 20-hour corpus is 40 hours of channels.
    """
    order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
    out: list[torch.Tensor | None] = [None] * len(audios)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        frames = [math.ceil(len(audios[i]) / FRAME_SIZE) for i in idx]
        longest = max(frames) * FRAME_SIZE
        x = np.zeros((len(idx), 1, longest), np.float32)
        for row, i in enumerate(idx):
            if audios[i].ndim != 1:
                raise ValueError(f"expected mono audio [T], got shape {audios[i].shape}")
            x[row, 0, : len(audios[i])] = audios[i]
        with torch.no_grad():
            codes = codec.encode(torch.from_numpy(x))  # [B, K, T']
        if codes.shape[1] < n_q:
            raise ValueError(f"the codec returns {codes.shape[1]} codebooks, the streams need n_q={n_q}")
        for row, (i, n) in enumerate(zip(idx, frames)):
            out[i] = codes[row, :n_q, :n].long()
    return [c for c in out if c is not None]


def build_streams(
    conversation: Conversation,
    codec: Codec,
    tokenizer: TextTokenizer,
    n_q: int,
    specials: TextSpecials = DEFAULT_SPECIALS,
    codes: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Streams:
    """Aligned ``[1 + 2 n_q, T]`` streams of one conversation (see the module docstring).

    ``codes``: the (assistant, user) codes when encoded already (:func:`encode_many` batches a corpus).
    """
    length = max(len(conversation.assistant_audio), len(conversation.user_audio))
    if length == 0:
        raise ValueError("the conversation has no audio")

    def pad(x: np.ndarray) -> np.ndarray:
        return np.pad(x, (0, length - len(x)))

    if codes is None:
        assistant = encode_audio(codec, pad(conversation.assistant_audio), n_q)
        user = encode_audio(codec, pad(conversation.user_audio), n_q)
    else:
        assistant, user = codes
    num_frames = assistant.shape[1]
    assert num_frames == math.ceil(length / FRAME_SIZE) == user.shape[1], (num_frames, length, user.shape)
    text = build_text_stream(conversation.assistant_words, num_frames, tokenizer, specials)
    rows = torch.cat([text.tokens[None], assistant, user], dim=0)
    return Streams(codes=rows, text=text, n_q=n_q)


def hide_user_levels(codes: torch.Tensor, n_q: int, levels: int) -> torch.Tensor:
    """``[B, 1 + 2 n_q, T]`` streams with the user's codebooks past the first ``levels`` set to
    :data:`ZERO_TOKEN` (no input): what a model with ``lm.user_levels=levels`` hears (a copy)."""
    if levels >= n_q:
        return codes
    out = codes.clone()
    out[:, 1 + n_q + levels :] = ZERO_TOKEN
    return out


def stream_delays(
    n_q: int, text: int = 0, semantic: int = 0, acoustic: int = 1, user: bool = True
) -> list[int]:
    """Per-row delays in frames for ``[text, assistant n_q, user n_q]`` (moshi's ``delays``).

    Moshi: no delay on text and the semantic codebook, 1 frame on acoustic codebooks, same pattern
    for the user's stream. ``user=False`` leaves the user rows undelayed.
    """
    for name, value in (("text", text), ("semantic", semantic), ("acoustic", acoustic)):
        if value < 0:
            raise ValueError(f"{name} delay must be >= 0 frames, got {value}")
    audio = [semantic] + [acoustic] * (n_q - 1)
    return [text, *audio, *(audio if user else [0] * n_q)]


def mode_delays(mode: str, n_q: int, lag_frames: int = 25, acoustic: int = 1) -> list[int]:
    """Delays that make one model a dialogue model, TTS or ASR, as in Moshi's paper.

    Args:
        mode: ``"dialogue"`` (text aligned with audio), ``"tts"`` (text leads the audio by
            ``lag_frames``: the audio rows are delayed) or ``"asr"`` (text lags the audio by
            ``lag_frames``: the text row is delayed).
        n_q: audio codebooks per speaker.
        lag_frames: lead/lag in frames (25 = 2 s).
        acoustic: extra delay of the acoustic codebooks over the semantic one.
    """
    if mode == "dialogue":
        return stream_delays(n_q, text=0, semantic=0, acoustic=acoustic)
    if mode == "tts":
        return stream_delays(n_q, text=0, semantic=lag_frames, acoustic=lag_frames + acoustic)
    if mode == "asr":
        return stream_delays(n_q, text=lag_frames, semantic=0, acoustic=acoustic)
    raise ValueError(f"mode must be 'dialogue', 'tts' or 'asr', got {mode!r}")


def apply_delays(codes: torch.Tensor, delays: Sequence[int], fill: int) -> torch.Tensor:
    """Shift row ``k`` of ``[B, K, T]`` codes right by ``delays[k]`` frames, filling with ``fill``.

    The last ``delays[k]`` frames of each row fall off the end (the same length is kept, as in moshi).
    """
    _, K, T = codes.shape
    if len(delays) != K:
        raise ValueError(f"expected {K} delays (one per stream), got {len(delays)}")
    out = torch.full_like(codes, fill)
    for k, d in enumerate(delays):
        if d < T:
            out[:, k, d:] = codes[:, k, : T - d]
    return out


def undo_delays(delayed: torch.Tensor, delays: Sequence[int], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`apply_delays`: aligned codes ``[B, K, T]`` and a validity mask ``[B, K, T]``.

    The last ``delays[k]`` frames of row ``k`` are unknown (they would come later) and hold ``fill``.
    """
    B, K, T = delayed.shape
    if len(delays) != K:
        raise ValueError(f"expected {K} delays (one per stream), got {len(delays)}")
    out = torch.full_like(delayed, fill)
    mask = torch.zeros(B, K, T, dtype=torch.bool, device=delayed.device)
    for k, d in enumerate(delays):
        if d < T:
            out[:, k, : T - d] = delayed[:, k, d:]
            mask[:, k, : T - d] = True
    return out, mask


def frames_for_seconds(seconds: float) -> int:
    """Number of whole 80 ms frames in ``seconds`` of audio."""
    return int(seconds * SAMPLE_RATE) // FRAME_SIZE
