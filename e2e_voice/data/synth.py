"""``e2e-voice synth-data``: generate the synthetic two-channel dialogue corpus.

Three stages, each timed: **plan** every conversation from ``(seed, index)`` (voices, prompts,
scenarios, split), **answer** the user prompts with the offline LLM in the main process (or fill them
from templates), then **render** (TTS + word alignment + layout + mixing + writing) across worker
processes. Everything random is drawn from ``np.random.default_rng([seed, index, stage])``, so a
conversation does not depend on the number of workers or on the other conversations.

LLM answers and TTS clips are cached under ``cache_dir() / "synth"``, keyed by a hash of engine + voice +
parameters + text, and reused across runs. Whisper word times are not cached: a conversation's clips are
aligned together on every run, so its times do not depend on what the cache held (:class:`Speaker`).

Every run writes the LLM answers it used to ``answers.json`` beside the manifests; given back as an
**answer bank** (``content.answers=FILE``) they replace the LLM. The LLM decodes greedily in bfloat16, and
its answers differ between machines (another CPU gave other answers to 39 of 74 prompts of the codec
corpus): the rest of a build repeated across machines (all 60 conversations' audio byte-identical; word
times within ~10 ms, then cached and so dependent on the cache, which they no longer are), so a bank is what
makes a corpus rebuild exactly elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from e2e_voice.assets.registry import cache_dir
from e2e_voice.audio.io import save_audio
from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.data import content
from e2e_voice.data.align import Timed, WhisperAligner, apply_offset, split_words, synthesize_concat, trim
from e2e_voice.data.manifest import ASSISTANT, QA, USER, DialogueEntry, Event, write_manifest
from e2e_voice.data.scenarios import SCENARIOS, Exchange, TimingSettings, add_noise, layout, scenario_tags
from e2e_voice.data.task import TaskExchange
from e2e_voice.data.task_corpus import BankTimes, TaskSettings, bank_group, plan_task, spread_times
from e2e_voice.tts import engines
from e2e_voice.tts.engines import VoiceSpec

SPLITS = ("train", "valid", "test")

HELD_OUT_VOICES: frozenset[tuple[str, str]] = frozenset(
    {
        ("kokoro", "jf_alpha"),
        ("kokoro", "jf_nezumi"),
        ("kokoro", "jf_tebukuro"),
        ("espeak", "en-gb"),
        ("espeak", "en-us+f3"),
    }
)
"""``(engine, voice)`` pairs reserved for evaluation: the default corpus (``configs/synth_data.yaml``) and
the codec speech set draw none of them, so the ``held_out`` group of the codec evaluation set
(``eval/codec_set.py``) measures voices no committed model was trained on. Tests check both."""
NOISE_COLORS = ("white", "pink", "brown")


@dataclass(frozen=True)
class VoicePool:
    """User voices of one engine: a voice is drawn from ``voices``, rate/pitch/noise uniformly from ranges."""

    engine: str
    voices: tuple[str, ...]
    weight: float = 1.0
    rate: tuple[float, float] = (1.0, 1.0)
    pitch: tuple[float, float] | None = None
    noise: tuple[float, float] | None = None

    def draw(self, rng: np.random.Generator) -> VoiceSpec:
        """One concrete voice, with rounded jitter (so cache keys repeat)."""
        voice = str(self.voices[int(rng.integers(len(self.voices)))])
        rate = round(float(rng.uniform(*self.rate)), 2)
        pitch = None if self.pitch is None else round(float(rng.uniform(*self.pitch)))
        noise = None if self.noise is None else round(float(rng.uniform(*self.noise)), 2)
        return VoiceSpec(self.engine, voice, rate, pitch, noise)


def draw_voice(pools: tuple[VoicePool, ...] | list[VoicePool], rng: np.random.Generator) -> VoiceSpec:
    """A pool drawn by weight, then one of its voices with jitter (:meth:`VoicePool.draw`)."""
    weights = np.array([p.weight for p in pools], dtype=np.float64)
    return pools[int(rng.choice(len(pools), p=weights / weights.sum()))].draw(rng)


@dataclass(frozen=True)
class SynthSettings:
    """Everything the generator needs (built from the Hydra config by :func:`settings_from_config`)."""

    out_dir: Path
    num_conversations: int
    seed: int = 0
    workers: int = 1
    audio_format: str = "flac"
    exchanges: tuple[int, int] = (2, 4)
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.9, "valid": 0.05, "test": 0.05})
    assistant: VoiceSpec = field(default_factory=lambda: VoiceSpec("kokoro", "jm_kumo"))
    users: tuple[VoicePool, ...] = (VoicePool("espeak", ("en-us",)),)
    content_source: str = "llm"
    llm: dict[str, Any] = field(default_factory=dict)
    follow_up_prob: float = 0.3
    history_exchanges: int = 2
    prompt_splits: dict[str, float] | None = field(
        default_factory=lambda: {"train": 0.8, "valid": 0.1, "test": 0.1}
    )
    template_sentences: tuple[int, int] = (1, 3)
    alignment: str = "whisper"
    aligner_model: str = "whisper-base"
    aligner_path: str | None = None
    align_offsets: dict[str, tuple[float, float]] = field(default_factory=dict)
    scenario_weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SCENARIOS, 1.0))
    noise_prob: float = 0.3
    snr_db: tuple[float, float] = (5.0, 25.0)
    noise_colors: tuple[str, ...] = NOISE_COLORS
    timing: TimingSettings = field(default_factory=TimingSettings)
    use_cache: bool = True
    cache_root: Path | None = None
    answer_bank: Path | None = None
    watermark_assistant: bool = False
    resume: bool = True
    task: TaskSettings | None = None  # content.source=task: the closed-domain task (configs/corpus/task.yaml)

    def __post_init__(self) -> None:
        if self.num_conversations < 1:
            raise ValueError(f"num_conversations must be >= 1, got {self.num_conversations}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.audio_format not in ("flac", "wav"):
            raise ValueError(f"audio_format must be 'flac' or 'wav', got '{self.audio_format}'")
        if self.content_source not in ("llm", "templates", "task"):
            raise ValueError(
                f"content.source must be 'llm', 'templates' or 'task', got '{self.content_source}'"
            )
        self._check_task()
        if self.answer_bank is not None and self.content_source != "llm":
            raise ValueError("content.answers replaces LLM answers: it needs content.source=llm")
        if self.alignment not in ("whisper", "concat", "bank"):
            raise ValueError(f"alignment must be 'whisper', 'concat' or 'bank', got '{self.alignment}'")
        unknown = set(self.scenario_weights) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
        if sum(self.scenario_weights.values()) <= 0:
            raise ValueError("scenario weights must not all be zero")
        if not self.noise_colors or set(self.noise_colors) - set(NOISE_COLORS):
            raise ValueError(
                f"noise_colors must be a non-empty subset of {NOISE_COLORS}, got {self.noise_colors}"
            )
        if set(self.splits) - set(SPLITS) or sum(self.splits.values()) <= 0:
            raise ValueError(f"splits must be fractions for {SPLITS}, got {self.splits}")
        if self.prompt_splits is not None:
            banks = prompt_banks(self.prompt_splits)
            empty = [s for s in self.splits if self.splits[s] > 0 and not banks.get(s)]
            if empty:
                raise ValueError(
                    f"content.prompt_splits {self.prompt_splits} leaves no prompt for split(s) {empty}: give"
                    " them a larger share, or null to share one prompt bank between the splits"
                )
        for pool in self.users:
            if pool.engine not in engines.ENGINES:
                raise ValueError(
                    f"unknown user TTS engine '{pool.engine}'; available: {', '.join(engines.ENGINES)}"
                )
        if self.assistant.engine not in engines.ENGINES:
            raise ValueError(f"unknown assistant TTS engine '{self.assistant.engine}'")
        unknown = set(self.align_offsets) - set(engines.ENGINES)
        if unknown:
            raise ValueError(
                f"alignment offsets for unknown engine(s) {sorted(unknown)}; "
                f"known: {', '.join(engines.ENGINES)}"
            )

    def _check_task(self) -> None:
        """The task corpus needs its settings, and its held-out voices must be unseen in training."""
        if (self.content_source == "task") != (self.task is not None):
            raise ValueError("content.source=task and the task settings go together: use `corpus=task`")
        if self.alignment == "bank" and self.content_source != "task":
            raise ValueError(
                "alignment.method=bank aligns the task's answer bank: it needs content.source=task"
            )
        if self.task is not None:
            seen = {(p.engine, v) for p in self.users for v in p.voices}
            held = {(p.engine, v) for p in self.task.held_out_users for v in p.voices}
            if seen & held:
                raise ValueError(
                    f"task.held_out_users voices also in users (training): {sorted(seen & held)}"
                )


@dataclass(frozen=True)
class ConversationPlan:
    """Everything decided before audio: voices, words to say, scenarios, split."""

    index: int
    id: str
    split: str
    user_voice: VoiceSpec
    prompts: tuple[str, ...]
    scenarios: tuple[str, ...]
    backchannels: tuple[str, ...]
    openers: tuple[str, ...]
    stop_text: str
    snr_db: float | None
    noise_color: str
    answers: tuple[str, ...] = ()
    task: tuple[TaskExchange, ...] = ()  # content.source=task: each exchange's category and key words


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _cache_root(settings: SynthSettings) -> Path:
    return settings.cache_root or cache_dir() / "synth"


def _split_at(fractions: dict[str, float], u: float) -> str:
    """The split whose share of [0, 1) holds ``u`` (shares in :data:`SPLITS` order, zero shares skipped)."""
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    w = np.array([fractions[s] for s in names], dtype=np.float64)
    # Clamped: the last cumulative edge can round to just below 1.
    return names[min(int(np.searchsorted(np.cumsum(w / w.sum()), u, side="right")), len(names) - 1)]


def prompt_banks(fractions: dict[str, float]) -> dict[str, tuple[str, ...]]:
    """Split the prompt bank between the corpus splits, each prompt to one split only.

    A prompt goes to the split its text's hash falls into (cumulative ``fractions``), so the partition
    does not depend on the seed or the corpus size: a test conversation's questions, and so its answers,
    never occur in train. The ``FOLLOW_UPS`` (10 generic questions like "Why is that?") stay shared.
    """
    return dict(_prompt_banks(tuple(sorted(fractions.items()))))  # a copy: the cached one is shared


@functools.lru_cache(maxsize=8)  # plan() asks once per conversation; the hashes never change
def _prompt_banks(fractions: tuple[tuple[str, float], ...]) -> dict[str, tuple[str, ...]]:
    shares = dict(fractions)
    names = [s for s in SPLITS if shares.get(s, 0) > 0]
    if set(shares) - set(SPLITS) or not names:
        raise ValueError(f"content.prompt_splits must be fractions for {SPLITS}, got {shares}")
    banks: dict[str, list[str]] = {s: [] for s in names}
    for prompt in content.PROMPTS:
        u = int(hashlib.sha256(prompt.encode()).hexdigest()[:12], 16) / 16**12
        banks[_split_at(shares, u)].append(prompt)
    return {s: tuple(b) for s, b in banks.items()}


def plan(settings: SynthSettings, index: int) -> ConversationPlan:
    """Plan conversation ``index``; depends only on ``settings`` and ``index``."""
    rng = np.random.default_rng([settings.seed, index, 1])
    split = _split_at(settings.splits, rng.random())
    if settings.task is not None:
        n = int(rng.integers(settings.exchanges[0], settings.exchanges[1] + 1))
        user_voice, task_exchanges = plan_task(settings, rng, split, n)
        prompts = [e.question for e in task_exchanges]
    else:
        task_exchanges = ()
        user_voice = draw_voice(settings.users, rng)
        n = int(rng.integers(settings.exchanges[0], settings.exchanges[1] + 1))
        prompts = _prompts(settings, rng, split, n)
    kinds = list(settings.scenario_weights)
    sw = np.array([settings.scenario_weights[k] for k in kinds], dtype=np.float64)
    scenarios = tuple(str(kinds[int(rng.choice(len(kinds), p=sw / sw.sum()))]) for _ in range(n))
    noisy = rng.random() < settings.noise_prob
    snr = round(float(rng.uniform(*settings.snr_db)), 1) if noisy else None
    return ConversationPlan(
        index=index,
        id=f"conv_{index:06d}",
        split=split,
        user_voice=user_voice,
        prompts=tuple(prompts),
        scenarios=scenarios,
        backchannels=tuple(str(rng.choice(content.BACKCHANNELS)) for _ in range(n)),
        openers=tuple(str(rng.choice(content.INTERRUPTIONS)) for _ in range(n)),
        stop_text=str(rng.choice(content.STOP_REQUESTS)),
        snr_db=snr,
        noise_color=str(settings.noise_colors[int(rng.integers(len(settings.noise_colors)))]),
        answers=tuple(e.answer for e in task_exchanges),
        task=task_exchanges,
    )


def _prompts(settings: SynthSettings, rng: np.random.Generator, split: str, n: int) -> list[str]:
    """The user's opening prompts from the bank of ``split``, and follow-ups (LLM content)."""
    bank = content.PROMPTS if settings.prompt_splits is None else prompt_banks(settings.prompt_splits)[split]
    prompts = []
    for i in range(n):
        if i > 0 and settings.content_source == "llm" and rng.random() < settings.follow_up_prob:
            prompts.append(str(rng.choice(content.FOLLOW_UPS)))
        else:
            prompts.append(str(rng.choice(bank)))
    return prompts


def template_answers(settings: SynthSettings, p: ConversationPlan) -> tuple[str, ...]:
    """1-3 template sentences per prompt, drawn from ``(seed, index)``."""
    rng = np.random.default_rng([settings.seed, p.index, 2])
    lo, hi = settings.template_sentences
    return tuple(
        " ".join(rng.choice(content.TEMPLATE_SENTENCES, size=int(rng.integers(lo, hi + 1)), replace=False))
        for _ in p.prompts
    )


ANSWERS_FILE = "answers.json"
"""The LLM answers a run used, beside its manifests (an answer bank for ``content.answers``)."""


def answer_key(history: list[dict[str, str]], prompt: str) -> str:
    """An answer bank's key: the prompt and the history the LLM saw (not its settings: a bank replaces it)."""
    return _key("answer", history, prompt)


def read_answer_bank(path: Path) -> dict[str, str]:
    """An answer bank (a run's ``answers.json``: records of prompt, history and answer) keyed by
    history + prompt.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a list of ``{"prompt", "history", "answer"}`` records.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"answer bank {path} not found: content.answers takes the answers.json a synth-data run wrote"
        )
    try:
        records = json.loads(path.read_text("utf-8"))
        return {answer_key(r["history"], r["prompt"]): str(r["answer"]) for r in records}
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise ValueError(
            f"answer bank {path} is not a list of {{'prompt', 'history', 'answer'}} records ({exc!r})"
        ) from exc


class LLMAnswers:
    """Answers from an answer bank (``settings.answer_bank``) or else the offline chat LM, cached on disk by
    model settings + history + prompt; each conversation's answers are kept in :attr:`records`."""

    def __init__(self, settings: SynthSettings) -> None:
        self.settings = settings
        self.root = _cache_root(settings) / "llm"
        self._lm: Any = None
        self.seconds = 0.0
        self.hits = 0
        self.bank = read_answer_bank(settings.answer_bank) if settings.answer_bank is not None else None
        self.bank_misses = 0
        self.records: dict[int, list[dict[str, Any]]] = {}  # conversation index -> its answer records

    def _model(self) -> Any:
        if self._lm is None:
            from e2e_voice.text.llm import ChatLM

            self._lm = ChatLM(**self.settings.llm)
        return self._lm

    def answer(self, prompt: str, history: list[dict[str, str]]) -> str:
        """The assistant's answer to ``prompt`` after ``history``: from the bank, the cache or the LLM."""
        if self.bank is not None:
            banked = self.bank.get(answer_key(history, prompt))
            if banked is not None:
                return banked
            self.bank_misses += 1
        path = self.root / f"{_key(self.settings.llm, history, prompt)}.json"
        if self.settings.use_cache and path.is_file():
            self.hits += 1
            return str(json.loads(path.read_text("utf-8"))["answer"])
        t = time.perf_counter()
        text = " ".join(self._model().reply(prompt, history).split())
        self.seconds += time.perf_counter() - t
        if not split_words(text):  # an empty answer would make a silent turn; say so instead
            text = "Sorry, I do not know."
        if self.settings.use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"prompt": prompt, "history": history, "answer": text}), "utf-8")
            tmp.replace(path)
        return text

    def conversation(self, p: ConversationPlan) -> tuple[str, ...]:
        """Answers for every prompt of ``p``, each seeing the last ``history_exchanges`` exchanges."""
        history: list[dict[str, str]] = []
        answers = []
        records = []
        for prompt in p.prompts:
            keep = history[-2 * self.settings.history_exchanges :] if self.settings.history_exchanges else []
            answer = self.answer(prompt, keep)
            answers.append(answer)
            records.append({"prompt": prompt, "history": keep, "answer": answer})
            history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        self.records[p.index] = records
        return tuple(answers)

    def write(self, path: Path) -> None:
        """Write every conversation's answers, in conversation order and once each, as an answer bank."""
        unique: dict[str, dict[str, Any]] = {}
        for index in sorted(self.records):
            for r in self.records[index]:
                unique.setdefault(answer_key(r["history"], r["prompt"]), r)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(list(unique.values()), ensure_ascii=False, indent=1) + "\n", "utf-8")
        tmp.replace(path)


ALIGN_TAG = "whisper-dtw-batched"
"""Part of the clip cache key (kept so that caches written before 2026-12-01 stay valid: whisper-aligned
clips then stored their times, which are no longer read)."""

Clip = tuple[np.ndarray, list[Timed]]


class Speaker:
    """TTS + word alignment with an on-disk cache of the TTS audio; times each part.

    With Whisper alignment, :meth:`prepare` synthesizes (or loads) every clip of a conversation and aligns
    all of them together, in as few Whisper windows as fit (:meth:`WhisperAligner.align_many`); :meth:`say`
    then serves them. A clip's times depend on the clips it shares a window with, so they are not cached:
    aligning only the clips the cache lacked made a conversation's word times depend on what earlier runs
    had left there (a rebuild of the LM corpus from an empty cache moved 4,837 of its 12,744 word
    boundaries, median 10 ms, at most 0.3 s). Now they are a function of the conversation alone, at the
    price of aligning cached conversations again (~1.3 s each on 2 cores). The per-engine offset correction
    (``SynthSettings.align_offsets``) is applied when a clip is served. With ``alignment=concat`` the
    times come with the audio and are cached with it.
    """

    def __init__(self, settings: SynthSettings) -> None:
        self.settings = settings
        self.root = _cache_root(settings) / "tts"
        self._aligner: WhisperAligner | None = None
        self._ready: dict[str, Clip] = {}  # this conversation's clips (raw times), by cache path
        self._audio: dict[str, np.ndarray] = {}  # this conversation's TTS audio (as stored), by cache path
        self.timings = {"tts": 0.0, "align": 0.0}
        self.hits = self.misses = 0
        self._bank: BankTimes | None = None

    def _get_aligner(self) -> WhisperAligner:
        if self._aligner is None:
            threads = max(1, (os.cpu_count() or 1) // self.settings.workers)
            self._aligner = WhisperAligner(self.settings.aligner_model, self.settings.aligner_path, threads)
        return self._aligner

    def _bank_times(self) -> BankTimes:
        if self._bank is None:
            spec = self.settings.assistant
            self._bank = BankTimes(
                _cache_root(self.settings) / "bank",
                spec,
                (self.settings.aligner_model, ALIGN_TAG),
                lambda text: self.speech(spec, text),
                self._get_aligner,
            )
        return self._bank

    def _say_bank(self, spec: VoiceSpec, text: str, role: str | None) -> Clip:
        """``alignment=bank``: the assistant's cached group times (offset-corrected), the user's spread."""
        audio = self.speech(spec, text)
        if role != ASSISTANT:
            return audio, spread_times(audio, text)
        t, tts = time.perf_counter(), self.timings["tts"]
        timed = self._bank_times().times(text)  # may synthesize the rest of its group first (counted as tts)
        self.timings["align"] += time.perf_counter() - t - (self.timings["tts"] - tts)
        return self._corrected(spec, (audio, timed))

    def _path(self, spec: VoiceSpec, text: str) -> Path:
        method = self.settings.alignment
        aligner = (self.settings.aligner_model, ALIGN_TAG) if method == "whisper" else None
        # Piper readings are seeded since 2026-12-01 (engines.reading_seed); older cached ones were random.
        seeded = (engines.SEEDED_READINGS,) if spec.engine == "piper" else ()
        return self.root / f"{_key(asdict(spec), method, aligner, text, *seeded)}.npz"

    def _load(self, path: Path) -> Clip | None:
        """The cached audio and its stored times (None when not cached)."""
        if not (self.settings.use_cache and path.is_file()):
            return None
        with np.load(path) as z:
            self.hits += 1
            audio = z["audio"].astype(np.float32) / 32767
            timed = [(str(w), float(a), float(b)) for w, a, b in json.loads(str(z["words"]))]
        return audio, timed

    def _store(self, path: Path, audio: np.ndarray, timed: list[Timed]) -> np.ndarray:
        """Cache ``audio`` (16-bit) with ``timed``; returns the audio as stored, so that a first run and a
        cached run give the same bytes (with the cache or without)."""
        audio = np.clip(audio / max(1.0, float(np.abs(audio).max())), -1, 1)
        pcm = np.round(audio * 32767).astype(np.int16)
        if self.settings.use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, audio=pcm, words=json.dumps(timed))
            tmp.replace(path)
        return pcm.astype(np.float32) / 32767

    def _tts(self, spec: VoiceSpec, text: str) -> np.ndarray:
        t = time.perf_counter()
        audio, _ = trim(engines.synthesize(spec, text))
        self.timings["tts"] += time.perf_counter() - t
        if audio.size == 0:
            raise RuntimeError(f"{spec.describe()} produced silence for {text!r}")
        return audio

    def _corrected(self, spec: VoiceSpec, clip: Clip) -> Clip:
        """Whisper's times with the engine's measured offset added (``whisper`` and ``bank`` alignment)."""
        audio, timed = clip
        whisper_times = self.settings.alignment in ("whisper", "bank")
        offset = self.settings.align_offsets.get(spec.engine) if whisper_times else None
        if offset is None:
            return audio, list(timed)
        return audio, apply_offset(timed, offset, len(audio) / SAMPLE_RATE)

    def speech(self, spec: VoiceSpec, text: str) -> np.ndarray:
        """The audio :meth:`say` will return (from the cache, or synthesized and cached now)."""
        path = self._path(spec, text)
        key = str(path)
        if key not in self._audio:
            cached = self._load(path)
            if cached is not None:
                self._audio[key] = cached[0]
            else:
                self.misses += 1
                self._audio[key] = self._store(path, self._tts(spec, text), [])
        return self._audio[key]

    def prepare(self, requests: list[tuple[VoiceSpec, str]]) -> None:
        """Synthesize (or load) and align every clip in ``requests`` together, in shared Whisper windows."""
        if self.settings.alignment != "whisper":
            return
        todo: dict[str, tuple[VoiceSpec, str]] = {}
        for spec, text in requests:
            todo.setdefault(str(self._path(spec, text)), (spec, text))
        if not todo:
            return
        audios = [self.speech(spec, text) for spec, text in todo.values()]
        t = time.perf_counter()
        aligned = self._get_aligner().align_many([(a, text) for a, (_, text) in zip(audios, todo.values())])
        self.timings["align"] += time.perf_counter() - t
        for key, audio, timed in zip(todo, audios, aligned):
            self._ready[key] = (audio, timed)

    def clear(self) -> None:
        """Forget the in-memory clips (the disk cache stays)."""
        self._ready.clear()
        self._audio.clear()

    def say(self, spec: VoiceSpec, text: str, role: str | None = None) -> Clip:
        """Speech of ``text`` (trimmed, 24 kHz) and its word times (offset-corrected); ``role`` matters
        with ``alignment=bank`` only (the assistant's answers are aligned, the user's words spread)."""
        if self.settings.alignment == "bank":
            return self._say_bank(spec, text, role)
        path = self._path(spec, text)
        clip = self._ready.get(str(path))
        if clip is None:
            if self.settings.alignment == "concat":
                clip = self._load(path)
                if clip is None:
                    self.misses += 1
                    t = time.perf_counter()
                    audio, timed = synthesize_concat(spec, text)
                    self.timings["tts"] += time.perf_counter() - t
                    clip = (self._store(path, audio, timed), timed)
                self._ready[str(path)] = clip
            else:
                self.prepare([(spec, text)])  # alone: render() prepares a whole conversation first
                clip = self._ready[str(path)]
        return self._corrected(spec, clip)


_SPEAKER: list[Speaker] = []

# What render() times, in order (seconds per stage; summed over conversations in the run's summary).
RENDER_STAGES = ("tts", "align", "layout", "mix", "write")

# Settings that change where or how fast a corpus is made, not what it contains.
_RUN_ONLY = ("out_dir", "workers", "use_cache", "cache_root", "resume")


def conversation_fingerprint(settings: SynthSettings, p: ConversationPlan) -> str:
    """A digest of everything a rendered conversation depends on: the corpus settings and its plan."""
    corpus = {k: v for k, v in asdict(settings).items() if k not in _RUN_ONLY}
    if corpus["answer_bank"] is None:  # so conversations rendered before banks existed still resume
        del corpus["answer_bank"]
    if corpus["task"] is None:  # likewise before the task corpus existed
        del corpus["task"]
    planned = asdict(replace(p, answers=()))
    if not planned["task"]:
        del planned["task"]
    return _key("conversation", corpus, planned)


def _sidecar(settings: SynthSettings, p: ConversationPlan) -> Path:
    return settings.out_dir / "audio" / f"{p.id}.json"


def resumable_entry(settings: SynthSettings, p: ConversationPlan) -> dict[str, Any] | None:
    """The manifest entry of ``p`` rendered by an earlier run of the same corpus, or None.

    A conversation counts as done when its sidecar (written after its audio) carries the same
    fingerprint and its audio file is there; anything else (another seed, voice or plan, a missing or
    unreadable file) renders it again.
    """
    path = _sidecar(settings, p)
    try:
        saved = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != conversation_fingerprint(settings, p):
        return None
    entry = saved.get("entry")
    if not isinstance(entry, dict) or not (settings.out_dir / str(entry.get("audio", ""))).is_file():
        return None
    return entry


def _speaker(settings: SynthSettings) -> Speaker:
    """This process's speaker (one per process, so that the TTS and Whisper models stay loaded)."""
    if not _SPEAKER or _SPEAKER[0].settings != settings:
        _SPEAKER[:] = [Speaker(settings)]
    return _SPEAKER[0]


def render(settings: SynthSettings, p: ConversationPlan) -> tuple[dict[str, Any], dict[str, float]]:
    """TTS, layout, noise and writing of one planned conversation.

    Returns:
        (manifest JSON object with ``audio`` relative to ``out_dir``, seconds per stage).
    """
    speaker = _speaker(settings)
    before = dict(speaker.timings)
    t0 = time.perf_counter()
    voices = {ASSISTANT: settings.assistant, USER: p.user_voice}
    exchanges = []
    for i, (prompt, answer, scenario) in enumerate(zip(p.prompts, p.answers, p.scenarios)):
        if i > 0 and p.scenarios[i - 1] == "interruption":
            opener = p.openers[i]
            prompt = (
                f"{opener} {prompt[0].lower()}{prompt[1:]}" if opener.endswith(",") else f"{opener} {prompt}"
            )
        exchanges.append(Exchange(prompt, answer, scenario, p.backchannels[i], p.stop_text))
    speaker.clear()
    if settings.alignment == "whisper":
        # a dry run of the layout (same draws) finds every clip it asks for, with the TTS audio, so that
        # all of them are aligned together in as few Whisper windows as fit
        wanted: list[tuple[VoiceSpec, str]] = []

        def record(role: str, text: str) -> Clip:
            wanted.append((voices[role], text))
            return speaker.speech(voices[role], text), []

        layout(exchanges, record, np.random.default_rng([settings.seed, p.index, 3]), settings.timing)
        speaker.prepare(wanted)
    rng = np.random.default_rng([settings.seed, p.index, 3])
    laid = layout(exchanges, lambda role, text: speaker.say(voices[role], text, role), rng, settings.timing)
    speaker.clear()
    t_mix = time.perf_counter()
    audio = laid.audio
    if settings.watermark_assistant:  # before noise: the mark belongs to the generated voice itself
        from e2e_voice.safety.watermark import shared_watermarker

        audio[0] = shared_watermarker().embed(audio[0], SAMPLE_RATE)
    if p.snr_db is not None:
        audio = add_noise(audio, laid.turns, p.snr_db, rng, p.noise_color)
    peak = float(np.abs(audio).max())
    if peak > 0.99:  # keep both channels' relative level; never clip
        audio = audio * (0.99 / peak)
    rel = Path("audio") / f"{p.id}.{settings.audio_format}"
    t_write = time.perf_counter()
    save_audio(settings.out_dir / rel, audio, SAMPLE_RATE)  # atomic; 16-bit, format from the suffix
    t_end = time.perf_counter()
    entry = DialogueEntry(
        id=p.id,
        audio=rel,
        duration=audio.shape[-1] / SAMPLE_RATE,
        words=tuple(laid.words),
        turns=tuple(laid.turns),
        events=tuple(laid.events),
        scenarios=tuple(scenario_tags(laid.events, p.snr_db is not None)),
        split=p.split,
        noise_snr_db=p.snr_db,
        voices={ASSISTANT: settings.assistant.describe(), USER: p.user_voice.describe()},
        qa=_qa(p, exchanges, laid.events),
    )
    # The sidecar goes last, after the audio: its presence means the conversation is complete, so a run
    # that stops (an error, Ctrl-C) resumes from here instead of rendering everything again.
    sidecar = _sidecar(settings, p)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    fingerprint = conversation_fingerprint(settings, p)
    tmp.write_text(
        json.dumps({"fingerprint": fingerprint, "entry": entry.to_json()}, ensure_ascii=False), "utf-8"
    )
    tmp.replace(sidecar)
    tts = speaker.timings["tts"] - before["tts"]
    align = speaker.timings["align"] - before["align"]
    timings = {  # the keys of RENDER_STAGES
        "tts": tts,
        "align": align,
        "layout": t_mix - t0 - tts - align,
        "mix": t_write - t_mix,
        "write": t_end - t_write,
    }
    return entry.to_json(), timings


def _qa(p: ConversationPlan, exchanges: list[Exchange], events: list[Event]) -> tuple[QA, ...]:
    """The task's exchanges with where each question ended (the layout's ``turn_gap`` events, one per
    exchange in order) and whether its answer was cut by an interruption."""
    if not p.task:
        return ()
    gaps = [e for e in events if e.kind == "turn_gap"]
    return tuple(
        QA(
            category=t.category,
            question=ex.user_text,
            answer=t.answer,
            key_words=t.key_words,
            asked_end=gap.start,
            answer_start=gap.end,
            interrupted=ex.scenario == "interruption",
        )
        for t, ex, gap in zip(p.task, exchanges, gaps)
    )


@contextlib.contextmanager
def _pool(workers: int, threads: int) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes for the jobs (None: run them in this process)."""
    if workers == 1:
        yield None
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        yield pool


def _run(
    pool: ProcessPoolExecutor | None, fn: Callable[..., Any], jobs: Iterable[tuple[Any, ...]], bar: Any
) -> list[Any]:
    """``fn(*job)`` for every job, in order, on ``pool`` (or here), ticking ``bar`` as each ends."""
    if pool is None:
        out = []
        for job in jobs:
            out.append(fn(*job))
            bar.update()
        return out
    futures = []
    for job in jobs:
        futures.append(pool.submit(fn, *job))
        futures[-1].add_done_callback(lambda _: bar.update())
    return [f.result() for f in futures]


def _bank_groups(settings: SynthSettings, plans: list[ConversationPlan]) -> list[tuple[str, ...]]:
    """The answer groups the conversations to render need (``alignment=bank``), in bank order."""
    if settings.alignment != "bank":
        return []
    return sorted({bank_group(a) for p in plans for a in p.answers})


def _bank_job(settings: SynthSettings, group: tuple[str, ...]) -> dict[str, float]:
    """Synthesize and align one answer group into the cache; seconds of TTS and alignment."""
    speaker = _speaker(settings)
    before = dict(speaker.timings)
    for text in group:
        speaker.say(settings.assistant, text, ASSISTANT)
    speaker.clear()
    return {k: speaker.timings[k] - before[k] for k in before}


def _init_worker(threads: int) -> None:
    import torch

    from e2e_voice.procs import die_with_parent

    die_with_parent()  # a kill -9 of synth-data must not leave workers writing into out_dir
    torch.set_num_threads(threads)
    engines.set_threads(threads)


def _render_job(settings: SynthSettings, p: ConversationPlan) -> tuple[int, dict[str, Any], dict[str, float]]:
    entry, timings = render(settings, p)
    return p.index, entry, timings


@dataclass
class SynthResult:
    """What a run produced."""

    manifests: dict[str, Path]
    entries: list[dict[str, Any]]
    audio_seconds: float
    wall_seconds: float
    stage_seconds: dict[str, float]
    resumed: int = 0  # conversations taken from an earlier, interrupted run of the same corpus


def generate(settings: SynthSettings) -> SynthResult:
    """Plan, answer and render ``settings.num_conversations`` conversations; write the manifests."""
    t_start = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    engines.set_threads(threads)
    if settings.content_source == "llm":
        import torch

        torch.set_num_threads(threads)  # the LLM shares the cores with the render workers
    plans = [plan(settings, i) for i in range(settings.num_conversations)]
    stage = {"plan": time.perf_counter() - t_start, "llm": 0.0}
    llm = LLMAnswers(settings) if settings.content_source == "llm" else None

    def answered(p: ConversationPlan) -> ConversationPlan:
        if settings.content_source == "task":  # the task's answers are part of the plan
            return p
        t = time.perf_counter()
        answers = llm.conversation(p) if llm is not None else template_answers(settings, p)
        stage["llm"] += time.perf_counter() - t
        return replace(p, answers=answers)

    results: dict[int, tuple[dict[str, Any], dict[str, float]]] = {}
    idle = dict.fromkeys(RENDER_STAGES, 0.0)
    if settings.resume:
        for p in plans:
            prior = resumable_entry(settings, p)
            if prior is not None:
                results[p.index] = (prior, idle)
    resumed = len(results)
    if resumed:
        print(f"synth-data: resuming, {resumed} of {len(plans)} conversations already in {settings.out_dir}")
        if llm is not None:  # their answers belong in answers.json too (cached, or banked: no LLM time)
            for p in plans:
                if p.index in results:
                    llm.conversation(p)
    todo = [p for p in plans if p.index not in results]
    with _pool(settings.workers, threads) as pool:
        groups = _bank_groups(settings, todo)
        if groups:  # the answers' TTS and alignment first, a group per job, so no two workers redo one
            bar = tqdm(total=len(groups), desc="answer bank", unit="group")
            stage["bank"] = sum(
                sum(t.values()) for t in _run(pool, _bank_job, ((settings, g) for g in groups), bar)
            )
            bar.close()
        bar = tqdm(total=len(plans), initial=resumed, desc="answer + render", unit="conv")
        # a generator: the LLM answers conversation i+1 here while the workers render conversation i
        for index, entry, timings in _run(pool, _render_job, ((settings, answered(p)) for p in todo), bar):
            results[index] = (entry, timings)
        bar.close()
    for name in RENDER_STAGES:
        stage[name] = sum(r[1][name] for r in results.values())
    entries = [results[i][0] for i in range(len(plans))]
    manifests = {}
    for split in SPLITS:
        rows = [e for e in entries if e["split"] == split]
        path = settings.out_dir / f"{split}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in rows), "utf-8")
        tmp.replace(path)
        manifests[split] = path
    if llm is not None:
        llm.write(settings.out_dir / ANSWERS_FILE)
        if llm.bank is not None and llm.bank_misses:
            print(
                f"synth-data: warning: {llm.bank_misses} answers were not in the answer bank"
                f" {settings.answer_bank} and came from the LLM, whose answers differ by machine"
            )
    audio_seconds = sum(float(e["duration"]) for e in entries)
    return SynthResult(manifests, entries, audio_seconds, time.perf_counter() - t_start, stage, resumed)


__all__ = [
    "ConversationPlan",
    "DialogueEntry",
    "Event",
    "SynthResult",
    "SynthSettings",
    "VoicePool",
    "generate",
    "plan",
    "render",
    "write_manifest",
]
