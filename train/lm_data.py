"""Data for the LM trainer: multistream token files, a resumable sampler, and a tiny smoke corpus.

A *streams file* (``streams.pt``) holds a list of aligned ``[K, T]`` int16 tensors (one per
conversation, built by :func:`e2e_voice.lm.streams.build_streams`) and the metadata needed to check
it against the model (``n_q``, tokenizer path, ``n_valid``). :func:`streams_from_manifest` builds it
from the dialogue corpus (``e2e-voice synth-data`` manifests); :func:`make_smoke_corpus` synthesises a
few two-channel conversations with espeak-ng (user) and espeak-ng or Piper (assistant), timing the
assistant's words by synthesising them one at a time, for smoke runs without a corpus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from e2e_voice.audio.io import resample, save_audio
from e2e_voice.constants import SAMPLE_RATE, in_repo
from e2e_voice.data.manifest import DialogueEntry
from e2e_voice.lm.streams import (
    ZERO_TOKEN,
    Codec,
    Conversation,
    TextTokenizer,
    Word,
    build_streams,
    encode_many,
)
from e2e_voice.lm.tokenizer import SentencePieceTokenizer, train_sentencepiece

log = logging.getLogger(__name__)

# Question / answer pairs of the smoke corpus: short, varied, spoken-style.
SMOKE_DIALOGUES: tuple[tuple[str, str], ...] = (
    ("What time is it?", "It is almost noon, time for lunch."),
    ("Can you help me?", "Of course, tell me what you need."),
    ("What is the weather like?", "It is sunny and warm today."),
    ("Do you like music?", "I love music, especially jazz."),
    ("Where is the station?", "The station is two streets to the left."),
    ("How are you today?", "I am fine, thank you for asking."),
    ("What should I cook tonight?", "Try a simple pasta with tomatoes."),
    ("Is it going to rain?", "Maybe later, take an umbrella."),
    ("Tell me a fact.", "Honey never spoils if you keep it sealed."),
    ("What is your name?", "I am a small voice assistant."),
    ("How far is the moon?", "About three hundred eighty thousand kilometers."),
    ("Can you count to five?", "One, two, three, four, five."),
    ("What day is it?", "Today is Tuesday, the middle of the week."),
    ("Should I go running?", "Yes, a short run will feel great."),
    ("Recommend a book.", "Read a short novel, something light."),
    ("Why is the sky blue?", "Air scatters blue light more than red light."),
)


# ----------------------------------------------------------------------------- streams files

ENCODE_CONVERSATIONS = 256
"""Conversations read into memory at a time while encoding a corpus (about 1.4 GB of float32 audio)."""


def save_streams(path: str | Path, streams: Sequence[torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write a streams file atomically (temp file + rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save({"streams": [s.to(torch.int16) for s in streams], "meta": meta}, tmp)
    os.replace(tmp, out)
    return out


def load_streams(path: str | Path) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Read a streams file: ``([K, T] long tensors, metadata)``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"streams file {p} not found: build it first (train-lm builds a smoke corpus)"
        )
    pkg = torch.load(p, map_location="cpu")
    return [s.long() for s in pkg["streams"]], dict(pkg["meta"])


def codec_fingerprint(checkpoint: str | Path | None) -> dict[str, str] | None:
    """Path and SHA-256 of a local codec checkpoint (None for random weights or a hub name)."""
    if not checkpoint:
        return None
    path = in_repo(checkpoint)  # where the codec loader looks too
    if not path.is_file():
        return None
    return {"checkpoint": str(checkpoint), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def check_streams_codec(path: str | Path, meta: dict[str, Any], expected: dict[str, str] | None) -> None:
    """Refuse a streams file encoded by another codec checkpoint than the configured one.

    Codes of one codec mean nothing to another: an LM trained on stale streams would learn the old
    codec's tokens and speak noise through the new one.

    Raises:
        ValueError: the file records a codec checkpoint whose hash differs from ``expected``.
    """
    have = meta.get("codec")
    if expected is None:
        return
    if have is None:
        log.warning(
            "%s does not record which codec encoded it; if %s changed since, delete the file to re-encode",
            path,
            expected["checkpoint"],
        )
        return
    if have["sha256"] != expected["sha256"]:
        raise ValueError(
            f"{path} was encoded with the codec {have['checkpoint']} (sha256 {have['sha256'][:12]}), but the"
            f" configured codec {expected['checkpoint']} has sha256 {expected['sha256'][:12]}: delete the"
            " streams file (or point lm_data.streams elsewhere) to re-encode the corpus with this codec"
        )


def corpus_fingerprint(manifests: Sequence[str | Path]) -> dict[str, str]:
    """SHA-256 of each manifest that exists, by its path as given (a regenerated corpus rewrites them)."""
    out = {}
    for m in manifests:
        path = in_repo(m)
        if path.is_file():
            out[str(m)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def check_streams_corpus(path: str | Path, meta: dict[str, Any], expected: dict[str, str]) -> None:
    """Refuse a streams file encoded from another version of the configured corpus.

    A corpus regenerated in place (same manifest paths, new conversations) would otherwise go unnoticed,
    and the LM would train on the old conversations while its card names the new ones. Only manifests
    present both in the file's record and on disk are compared.

    Raises:
        ValueError: a configured manifest's content differs from the one the file was encoded from.
    """
    have = meta.get("corpus")
    if have is None:
        if expected:
            log.warning(
                "%s does not record which corpus it encoded; if %s changed since, delete it to re-encode",
                path,
                sorted(expected),
            )
        return
    changed = sorted(m for m in expected.keys() & have.keys() if expected[m] != have[m])
    if changed:
        raise ValueError(
            f"{path} was encoded from an older version of {changed} (the manifests changed since, e.g. the"
            " corpus was regenerated): delete the streams file (or point lm_data.streams elsewhere) to"
            " re-encode the corpus"
        )


# ----------------------------------------------------------------------------- sampling


def _crop_start(seed: int, epoch: int, index: int, span: int) -> int:
    """Deterministic crop offset in ``[0, span]``, independent of any global RNG (exact resume)."""
    if span <= 0:
        return 0
    digest = hashlib.sha256(f"{seed}/{epoch}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (span + 1)


@dataclass
class StreamSampler:
    """Shuffled, sharded, resumable order over conversations.

    Each rank takes every ``world``-th item of the epoch's permutation; ``position`` counts items
    this rank has consumed in the current epoch, so ``state_dict`` / ``load_state_dict`` resume the
    exact sequence of batches.
    """

    num_items: int
    seed: int = 0
    rank: int = 0
    world: int = 1
    epoch: int = 0
    position: int = 0

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.num_items, generator=g).tolist()
        mine = perm[self.rank :: self.world]
        assert mine, f"rank {self.rank} of {self.world} has no items among {self.num_items}"
        return mine

    def next(self) -> tuple[int, int]:
        """``(item index, epoch)`` of the next item."""
        order = self._order()
        if self.position >= len(order):
            self.epoch += 1
            self.position = 0
            order = self._order()
        item = order[self.position]
        self.position += 1
        return item, self.epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"sampler seed {self.seed} differs from the checkpoint's {state['seed']}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def crop(stream: torch.Tensor, seq_len: int, start: int) -> torch.Tensor:
    """``[K, seq_len]`` window from ``start``, padded with ``ZERO_TOKEN`` (no input, no loss)."""
    K = stream.shape[0]
    out = torch.full((K, seq_len), ZERO_TOKEN, dtype=torch.long)
    piece = stream[:, start : start + seq_len]
    out[:, : piece.shape[1]] = piece
    return out


def batches(
    streams: Sequence[torch.Tensor], sampler: StreamSampler, batch_size: int, seq_len: int
) -> Iterator[torch.Tensor]:
    """Endless ``[B, K, seq_len]`` batches of random crops in the sampler's order."""
    while True:
        items = []
        for _ in range(batch_size):
            idx, epoch = sampler.next()
            s = streams[idx]
            items.append(crop(s, seq_len, _crop_start(sampler.seed, epoch, idx, s.shape[1] - seq_len)))
        yield torch.stack(items)


def validation_batches(streams: Sequence[torch.Tensor], batch_size: int, seq_len: int) -> list[torch.Tensor]:
    """Fixed validation batches: every conversation cut into consecutive ``seq_len`` windows."""
    windows = [crop(s, seq_len, t) for s in streams for t in range(0, s.shape[1], seq_len)]
    return [torch.stack(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]


# ----------------------------------------------------------------------------- smoke corpus


def _trim(audio: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio[:0]


def synth_conversation(
    question: str,
    answer: str,
    *,
    speak_assistant: Any = None,
    word_gap_s: float = 0.12,
    turn_gap_s: float = 0.4,
    lead_s: float = 0.3,
) -> Conversation:
    """A two-channel conversation: the user asks on one channel, the assistant answers on the other.

    The assistant's answer is synthesised word by word (espeak-ng unless ``speak_assistant(text) ->
    (audio, sr)`` is given), so each word's start and end are known exactly.
    """
    from e2e_voice.tts import espeak

    def say(text: str, fn: Any) -> np.ndarray:
        audio, sr = fn(text)
        return _trim(resample(np.asarray(audio, dtype=np.float32), sr, SAMPLE_RATE))

    user_speech = say(question, espeak.synthesize)
    assistant_fn = speak_assistant or espeak.synthesize
    lead = int(lead_s * SAMPLE_RATE)
    t = lead + len(user_speech) + int(turn_gap_s * SAMPLE_RATE)
    pieces: list[tuple[int, np.ndarray]] = []
    words: list[Word] = []
    for text in answer.split():
        audio = say(text, assistant_fn)
        pieces.append((t, audio))
        words.append(Word(text=text, start_s=t / SAMPLE_RATE, end_s=(t + len(audio)) / SAMPLE_RATE))
        t += len(audio) + int(word_gap_s * SAMPLE_RATE)
    total = t + lead
    user = np.zeros(total, np.float32)
    user[lead : lead + len(user_speech)] = user_speech
    assistant = np.zeros(total, np.float32)
    for start, audio in pieces:
        assistant[start : start + len(audio)] = audio
    return Conversation(assistant_audio=assistant, user_audio=user, assistant_words=words)


def make_smoke_corpus(
    out_dir: str | Path,
    codec: Codec,
    n_q: int,
    *,
    num_conversations: int = 16,
    vocab_size: int = 2000,
    tokenizer: TextTokenizer | None = None,
    write_audio: bool = True,
    assistant_voice: str = "espeak",
    codec_id: dict[str, str] | None = None,
) -> Path:
    """Synthesise conversations, train the sentencepiece tokenizer on their text (unless one is
    given), encode both channels with ``codec`` and write ``streams.pt`` (+ wavs and word timings).

    Args:
        assistant_voice: ``"espeak"`` (fast, robotic) or ``"piper"`` (the bundled Piper voice, ~85 ms
            per word); the user always speaks with espeak-ng, so the two channels sound different.

    Returns:
        The streams file.
    """
    if assistant_voice not in ("espeak", "piper"):
        raise ValueError(f"assistant_voice must be 'espeak' or 'piper', got {assistant_voice!r}")
    speak: Any = None
    if assistant_voice == "piper":
        from e2e_voice.tts.piper import PiperTTS

        piper = PiperTTS()

        def speak(text: str) -> tuple[np.ndarray, int]:
            seed = zlib.crc32(text.encode())  # the same reading of a line in every run
            return piper.synthesize(text, seed=seed), piper.sample_rate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dialogues = [SMOKE_DIALOGUES[i % len(SMOKE_DIALOGUES)] for i in range(num_conversations)]
    tok_path = out / "tokenizer.model"
    if tokenizer is None:
        texts = [a for _, a in SMOKE_DIALOGUES] + [q for q, _ in SMOKE_DIALOGUES]
        train_sentencepiece(texts, tok_path, vocab_size=vocab_size)
        tokenizer = SentencePieceTokenizer(tok_path)
    streams = []
    dropped = 0
    for i, (q, a) in enumerate(tqdm(dialogues, desc="smoke conversations", unit="conv")):
        conv = synth_conversation(q, a, speak_assistant=speak)
        built = build_streams(conv, codec, tokenizer, n_q)
        dropped += built.text.words_dropped
        streams.append(built.codes)
        if write_audio:
            save_audio(
                out / f"conv{i:03d}.wav", np.stack([conv.assistant_audio, conv.user_audio]), SAMPLE_RATE
            )
            words = [w.__dict__ for w in conv.assistant_words]
            (out / f"conv{i:03d}.json").write_text(json.dumps({"question": q, "answer": a, "words": words}))
    meta = {
        "n_q": n_q,
        "tokenizer": str(tok_path) if tok_path.is_file() else None,
        "words_dropped": dropped,
        "codec": codec_id,
    }
    return save_streams(out / "streams.pt", streams, meta)


def conversation_from_entry(entry: DialogueEntry) -> Conversation:
    """A manifest :class:`~e2e_voice.data.manifest.DialogueEntry` as the stream builder's input:
    channel 0 (the assistant, with its aligned words) and channel 1 (the user)."""
    from e2e_voice.audio.io import load_audio

    audio = load_audio(entry.audio, mono=False)
    words = [Word(w.word, w.start, w.end) for w in entry.words_of("assistant")]
    return Conversation(assistant_audio=audio[0], user_audio=audio[1], assistant_words=words)


def streams_from_manifest(
    out_path: str | Path,
    codec: Codec,
    n_q: int,
    train_manifests: Sequence[str | Path],
    valid_manifests: Sequence[str | Path] = (),
    *,
    vocab_size: int = 2000,
    tokenizer: TextTokenizer | None = None,
    codec_id: dict[str, str] | None = None,
) -> Path:
    """Encode a dialogue corpus into a streams file (validation conversations first).

    Channel 0 of each conversation is the assistant (the stream the model learns to speak, with its
    aligned words as the inner monologue), channel 1 the user. Without ``tokenizer``, a sentencepiece
    model is trained on the training conversations' text (both speakers) next to ``out_path``.

    Args:
        codec_id: what :func:`codec_fingerprint` says of ``codec``'s checkpoint, kept in the metadata so
            that a later run with another codec refuses these codes.

    Returns:
        The streams file; its metadata holds ``n_valid``, the number of leading validation streams.
    """
    from e2e_voice.data.manifest import read_manifest

    def entries(paths: Sequence[str | Path]) -> list[Any]:
        return [e for p in paths for e in read_manifest(p).entries]

    train, valid = entries(train_manifests), entries(valid_manifests)
    if not train:
        raise ValueError(
            f"no conversations in {list(train_manifests)}: generate them with `e2e-voice synth-data`"
        )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok_path = out.parent / "tokenizer.model"
    if tokenizer is None:
        texts = [t.text for e in train for t in e.turns if t.text.strip()]
        train_sentencepiece(texts, tok_path, vocab_size=vocab_size)
        tokenizer = SentencePieceTokenizer(tok_path)
    streams, dropped, seconds = [], 0, 0.0
    everything = valid + train
    bar = tqdm(total=len(everything), desc="encode corpus", unit="conv")
    for b in range(0, len(everything), ENCODE_CONVERSATIONS):
        # A few hundred conversations at a time, encoded in batches of similar length (encode_many).
        convs = [conversation_from_entry(e) for e in everything[b : b + ENCODE_CONVERSATIONS]]
        codes = encode_many(codec, [a for c in convs for a in (c.assistant_audio, c.user_audio)], n_q)
        for i, (entry, conv) in enumerate(zip(everything[b : b + ENCODE_CONVERSATIONS], convs)):
            built = build_streams(conv, codec, tokenizer, n_q, codes=(codes[2 * i], codes[2 * i + 1]))
            dropped += built.text.words_dropped
            seconds += entry.duration
            streams.append(built.codes)
            bar.update()
    bar.close()
    meta = {
        "n_q": n_q,
        "tokenizer": str(tok_path) if tok_path.is_file() else None,
        "words_dropped": dropped,
        "n_valid": len(valid),
        "hours": round(seconds / 3600, 3),
        "manifests": [str(p) for p in [*valid_manifests, *train_manifests]],
        "codec": codec_id,
        "corpus": corpus_fingerprint([*valid_manifests, *train_manifests]),
    }
    return save_streams(out, streams, meta)
