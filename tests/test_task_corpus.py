"""The closed-domain spoken task (e2e_voice/data/task.py) and its corpus (`synth-data corpus=task`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from e2e_voice.constants import CONFIG_DIR
from e2e_voice.data import task
from e2e_voice.data.manifest import ManifestError, read_manifest
from e2e_voice.data.synth import SynthSettings, VoicePool, generate, plan
from e2e_voice.data.synth_cli import settings_from_config
from e2e_voice.data.task_corpus import BANK_GROUP, answer_universe, bank_group, spread_times
from e2e_voice.tts.engines import VoiceSpec, synthesize


def _settings(*overrides: str) -> SynthSettings:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return settings_from_config(compose("synth_data", overrides=["corpus=task", *overrides]))


def test_number_words() -> None:
    assert [task.number_words(n) for n in (0, 7, 13, 20, 21, 40, 99)] == [
        "zero", "seven", "thirteen", "twenty", "twenty-one", "forty", "ninety-nine",
    ]  # fmt: skip
    assert task.number_words(105) == "one hundred and five"
    with pytest.raises(ValueError, match="0-999"):
        task.number_words(1000)


@pytest.mark.parametrize(
    ("said", "keys", "right"),
    [
        ("Seven plus five is twelve.", ("is twelve",), True),
        ("seven plus five is 12", ("is twelve",), True),  # Whisper writes numerals
        ("Four minus zero is zero.", ("is four",), False),  # the operand is not the answer
        ("The number after nineteen is twenty.", ("is twenty-one",), False),
        ("It is 21.", ("is twenty-one",), True),
        ("The capital of Mexico is Mexico City.", ("is Mexico City",), True),
        ("the capital of Mexico is Mexico", ("is Mexico City",), False),
        ("", ("is two",), False),
        ("Yes, I can hear you.", ("hear",), True),
        ("I can hearing", ("hear",), False),  # whole words only
    ],
)
def test_answer_correct(said: str, keys: tuple[str, ...], right: bool) -> None:
    assert task.answer_correct(said, keys) is right


def test_the_bank_is_as_large_as_the_issue_asks() -> None:
    items = task.task_items()
    by = {c: [i for i in items if i.category == c] for c in task.CATEGORIES}
    assert len(by["capitals"]) >= 40
    assert len({i.questions[0].split()[-1] for i in by["opposites"]}) >= 50  # distinct words asked about
    assert all(len(i.questions) >= 4 for i in items)  # three to train on, one held out
    sequences = " ".join(i.answer for i in by["sequence"])
    for unit in ("day", "month", "number"):
        assert f"The {unit} after" in sequences and f"The {unit} before" in sequences
    numbers = {task.number_words(n) for n in range(21)}
    for item in by["arithmetic"]:  # every number of the exchange within 0-20, answers in words
        words = task.normalize_words(item.answer)
        assert words[1] in ("plus", "minus", "times")
        assert {words[0], words[2], words[-1]} <= numbers | {"twenty", "zero"}
    intents = {i.answer for i in by["small_talk"]}
    assert {"Hello, how can I help you?", "Yes, I can hear you.", "You are welcome."} <= intents


def test_held_out_phrasings_and_pairs_are_disjoint_from_training() -> None:
    items = task.task_items()
    trained = {q for i in items if not i.held_out for q in i.phrasings(False)}
    held = {q for i in items for q in i.phrasings(True)}
    held |= {q for i in items if i.held_out for q in i.questions}  # held-out pairs in any phrasing
    assert trained and held and not trained & held
    arithmetic = [i for i in items if i.category == "arithmetic"]
    share = sum(i.held_out for i in arithmetic) / len(arithmetic)
    assert share >= 0.10
    # a pair is held out for every operator
    assert task.held_out_pair(3, 4) == task.held_out_pair(3, 4)
    assert {i.held_out for i in arithmetic if i.answer.startswith("Three plus four")} == {
        task.held_out_pair(3, 4)
    }


def test_planned_splits_are_disjoint() -> None:
    s = _settings("num_conversations=400")
    held_voices = {(p.engine, v) for p in s.task.held_out_users for v in p.voices}
    train_voices = {(p.engine, v) for p in s.users for v in p.voices}
    assert held_voices and train_voices and not held_voices & train_voices
    questions: dict[str, set[str]] = {"train": set(), "valid": set(), "test": set()}
    for i in range(400):
        p = plan(s, i)
        voice = (p.user_voice.engine, p.user_voice.voice)
        assert voice in (held_voices if p.split != "train" else train_voices), (p.split, voice)
        questions[p.split] |= set(p.prompts)
        assert len(p.answers) == len(p.prompts) == len(p.task) >= 2
    assert questions["test"] and questions["valid"]
    assert not questions["train"] & (questions["test"] | questions["valid"])


def test_task_voices_are_distinct() -> None:
    """espeak-ng reads an unknown variant as the plain voice without a word: every espeak voice of the
    task's pools must really be another voice, or a 'held-out' voice could be a training one."""
    s = _settings()
    voices = [v for p in (*s.users, *s.task.held_out_users) if p.engine == "espeak" for v in p.voices]
    digests = {}
    for v in voices:
        audio = synthesize(VoiceSpec("espeak", v, 1.0, 50), "seven plus five")
        digests.setdefault(hashlib.sha256(audio.tobytes()).hexdigest(), []).append(v)
    same = [vs for vs in digests.values() if len(vs) > 1]
    assert not same, f"these espeak voices read alike: {same}"
    assert len(voices) >= 40


def test_settings_refuse_inconsistent_task_options() -> None:
    s = _settings()
    with pytest.raises(ValueError, match="also in users"):
        replace(s, task=replace(s.task, held_out_users=(VoicePool("flite", ("slt",)),)))
    with pytest.raises(ValueError, match="bank"):
        replace(s, task=None, content_source="templates")
    with pytest.raises(ValueError, match="corpus=task"):
        replace(s, alignment="whisper", task=None)
    with pytest.raises(ValueError, match="unknown categories"):
        replace(s.task, weights={"poetry": 1.0})


def test_answer_groups_are_fixed() -> None:
    universe = answer_universe()
    assert len(universe) == len({i.answer for i in task.task_items()})
    group = bank_group("Seven plus five is twelve.")
    assert "Seven plus five is twelve." in group and len(group) <= BANK_GROUP
    assert all(bank_group(a) == group for a in group)
    with pytest.raises(ValueError, match="not in the task's answer bank"):
        bank_group("Something an LLM said.")


def test_spread_times_cover_the_speech() -> None:
    audio = np.zeros(24000, np.float32)
    audio[6000:18000] = 0.1 * np.sin(np.arange(12000) * 0.1)
    timed = spread_times(audio, "What is two plus two?")
    assert [w for w, _, _ in timed] == ["What", "is", "two", "plus", "two?"]
    assert timed[0][1] == pytest.approx(0.25, abs=0.02) and timed[-1][2] == pytest.approx(0.75, abs=0.02)
    assert all(a <= b for _, a, b in timed)


@pytest.mark.slow
def test_tiny_task_corpus(tmp_path: Path) -> None:
    """A 3-conversation task corpus with fast voices: manifests with qa, the answers' words aligned by
    Whisper, the held-out split in held-out voices; a rerun resumes everything and changes nothing."""
    espeak_only = [
        "assistant.engine=espeak",
        "assistant.voice=en-us",
        "users.espeak.voices=[en-us+m3,en-us+f2]",
        *(f"users.{e}.weight=0" for e in ("flite", "festival", "piper", "kokoro")),
        "task.held_out_users.espeak.voices=[en-us+f3]",
        *(f"task.held_out_users.{e}.weight=0" for e in ("flite", "kokoro")),
        "splits={train: 0.5, valid: 0.0, test: 0.5}",
        "num_conversations=3",
        "workers=1",
        f"out_dir={tmp_path / 'corpus'}",
        f"cache.dir={tmp_path / 'cache'}",
    ]
    s = _settings(*espeak_only)
    result = generate(s)
    entries = [
        e
        for split in ("train", "test")
        for e in read_manifest(tmp_path / "corpus" / f"{split}.jsonl").entries
    ]
    assert len(entries) == 3 and result.resumed == 0
    for e in entries:
        assert e.qa and all(q.asked_end <= q.answer_start for q in e.qa)
        assert ("en-us+f3" in e.voices["user"]) == (e.split == "test")
        said = [w.word for w in e.words_of("assistant")]
        for q in e.qa:
            if not q.interrupted:  # every word of a whole answer is in the assistant's aligned words
                assert set(q.answer.split()) <= set(said)
                assert task.answer_correct(q.answer, q.key_words)
    manifests = {p: p.read_bytes() for p in (tmp_path / "corpus").glob("*.jsonl")}
    again = generate(s)
    assert again.resumed == 3
    assert {p: p.read_bytes() for p in manifests} == manifests


def test_manifest_qa_is_validated(tmp_path: Path) -> None:
    line = {
        "id": "c0",
        "audio": "a.flac",
        "duration": 5.0,
        "words": [{"word": "hi", "start": 0.1, "end": 0.3, "speaker": "user"}],
        "qa": [
            {
                "category": "arithmetic",
                "question": "What is one plus one?",
                "answer": "One plus one is two.",
                "key_words": ["is two"],
                "asked_end": 1.0,
                "answer_start": 1.2,
            }
        ],
    }
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(line) + "\n")
    entry = read_manifest(path, check_audio=False).entries[0]
    assert entry.qa[0].key_words == ("is two",) and not entry.qa[0].interrupted
    assert entry.to_json()["qa"][0]["key_words"] == ["is two"]
    line["qa"][0]["key_words"] = []  # type: ignore[index]
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(ManifestError, match="key_words"):
        read_manifest(path, check_audio=False)
    line["qa"][0] |= {"key_words": ["is two"], "asked_end": 9.0}  # type: ignore[index]
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(ManifestError, match="not inside"):
        read_manifest(path, check_audio=False)


@pytest.mark.slow
def test_batched_encoding_matches_one_clip_at_a_time() -> None:
    """encode_many (the corpus encoder) gives each clip the codes it gets alone, in the order given."""
    from e2e_voice.codec.codec import load_codec
    from e2e_voice.lm.streams import encode_audio, encode_many

    codec = load_codec("checkpoints/codec_cpu/codec.safetensors").eval()
    clips = [
        synthesize(VoiceSpec("espeak", "en-us+m3"), text)
        for text in ("What is seven plus five?", "Hello!", "The capital of France is Paris, my friend.")
    ]
    batched = encode_many(codec, clips, 8, batch_size=2)
    for clip, codes in zip(clips, batched):
        alone = encode_audio(codec, clip, 8)
        assert codes.shape == alone.shape
        assert (codes == alone).float().mean() >= 0.98  # near-ties may flip with the batch's rounding


def test_codec_ceiling_bench_samples_every_category() -> None:
    """benchmarks/bench_task_ceiling.py measures the codec's ceiling on a fixed spread of the bank."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_task_ceiling", "benchmarks/bench_task_ceiling.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    items = bench.sample_items(80)
    assert len(items) == 80 and items == bench.sample_items(80)
    assert {i.category for i in items} == set(task.CATEGORIES) - {"small_talk"} or len(
        {i.category for i in items}
    ) >= 4
