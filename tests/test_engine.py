"""The batched full-duplex engine on moshi's classes (random weights, tiny sizes)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from moshi.models.lm import LMModel

from e2e_voice.codec.mimi import build_mimi
from e2e_voice.constants import FRAME_SIZE
from e2e_voice.engine import DuplexEngine
from e2e_voice.lm.generate import GREEDY, Sampling
from e2e_voice.lm.streams import mode_delays
from tests.lm_testing import tiny_lm

N_Q = 4


def _models(seed: int = 0) -> tuple[torch.nn.Module, LMModel]:
    torch.manual_seed(seed)
    codec = build_mimi(num_codebooks=N_Q, n_filters=16, transformer_layers=1, quantizer_levels=N_Q)
    # The project's own LM builder at toy size (tests/lm_testing.py), as the LM tests use.
    lm = tiny_lm(seed, n_q=N_Q, card=2048, text_card=64, delays=mode_delays("dialogue", N_Q)).eval()
    return codec, lm


def _engine(batch: int, sampling: Sampling = GREEDY) -> DuplexEngine:
    codec, lm = _models()
    return DuplexEngine(codec, lm, text_piece=lambda i: f"<{i}>", max_conversations=batch, sampling=sampling)


def _frames(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.1, FRAME_SIZE).astype(np.float32) for _ in range(n)]


def _solo(frames: list[np.ndarray]) -> list[np.ndarray]:
    engine = _engine(1)
    slot = engine.open()
    return [engine.tick({slot.index: f})[slot.index].audio for f in frames]


def test_staggered_batch_equals_separate_runs() -> None:
    a, b = _frames(1, 8), _frames(2, 6)
    solo_a, solo_b = _solo(a), _solo(b)
    engine = _engine(3)
    sa = engine.open()
    out_a, out_b = [], []
    for t in range(10):
        frames = {}
        if t < len(a):
            frames[sa.index] = a[t]
        if t == 3:
            sb = engine.open()  # joins while A is mid-conversation
        if 3 <= t < 3 + len(b):
            frames[sb.index] = b[t - 3]
        if frames:
            res = engine.tick(frames)
            if sa.index in frames:
                out_a.append(res[sa.index].audio)
            if t >= 3 and sb.index in frames:
                out_b.append(res[sb.index].audio)
    for got, want in zip(out_a, solo_a):
        np.testing.assert_allclose(got, want, atol=1e-5)
    for got, want in zip(out_b, solo_b):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert any(np.abs(x).max() > 0 for x in out_a[3:]), "the LM produced no audio at all"


def test_slot_reuse_starts_fresh() -> None:
    frames = _frames(3, 5)
    want = _solo(frames)
    engine = _engine(1)
    slot = engine.open()
    for f in _frames(4, 4):
        engine.tick({slot.index: f})
    slot.close()
    again = engine.open()
    got = [engine.tick({again.index: f})[again.index].audio for f in frames]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_all_slots_busy() -> None:
    engine = _engine(1)
    held = engine.open()
    with pytest.raises(RuntimeError, match="all 1 engine slots are busy"):
        engine.open()
    held.close()
    engine.open()  # the slot is free again


def test_threaded_slots_batch_together() -> None:
    a, b = _frames(5, 6), _frames(6, 6)
    solo_a, solo_b = _solo(a), _solo(b)
    engine = _engine(2)
    slots = [engine.open(), engine.open()]
    outs: list[list[np.ndarray]] = [[], []]

    def run(k: int, frames: list[np.ndarray]) -> None:
        for f in frames:
            outs[k].append(slots[k].step(f).audio)

    threads = [threading.Thread(target=run, args=(k, f)) for k, f in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    engine.shutdown()
    for got, want in zip(outs, (solo_a, solo_b)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-5)
    assert engine.stats.frames == 12
    assert engine.stats.ticks < 12  # frames from the two threads shared ticks
    assert engine.stats.real_time_factor > 0


def test_wrong_frame_size() -> None:
    engine = _engine(1)
    with pytest.raises(ValueError, match="expected 1920 samples per frame"):
        engine.open().step(np.zeros(100, np.float32))


def test_codec_too_small_for_lm() -> None:
    codec = build_mimi(num_codebooks=2, n_filters=16, transformer_layers=1, quantizer_levels=2)
    _, lm = _models()
    with pytest.raises(ValueError, match="codec produces 2 codebooks but the LM needs 4"):
        DuplexEngine(codec, lm)


def test_stale_slot_cannot_touch_a_reused_index() -> None:
    engine = _engine(1)
    old = engine.open()
    old.close()
    new = engine.open()
    assert new.index == old.index
    old.close()  # e.g. the old conversation's object is garbage-collected late
    del old
    out = new.step(_frames(9, 1)[0])  # the new owner still holds its slot
    assert out.audio.shape == (FRAME_SIZE,)
    engine.shutdown()


SAMPLED = Sampling(temperature_text=1.0, top_k_text=25, temperature_audio=1.0, top_k_audio=250)


def _recording(engine: DuplexEngine) -> list[torch.Tensor]:
    """Record the LM's sampled tokens ``[B, 1 + dep_q]`` of every tick (text, then audio codes): the tiny
    random codec decodes different codes to near-identical audio, so the tokens are what to compare."""
    tokens: list[torch.Tensor] = []
    step = engine.lm_step.step

    def recorded(user_codes: torch.Tensor) -> object:
        out = step(user_codes)
        tokens.append(torch.cat([out.text[:, None], out.audio], dim=1).clone())
        return out

    engine.lm_step.step = recorded  # type: ignore[method-assign]
    return tokens


def _seeded_solo(frames: list[np.ndarray], seed: int) -> tuple[list[np.ndarray], torch.Tensor]:
    """Audio frames and sampled tokens ``[T, 1 + dep_q]`` of one seeded conversation alone."""
    engine = _engine(1, SAMPLED)
    tokens = _recording(engine)
    slot = engine.open(seed=seed)
    audio = [engine.tick({slot.index: f})[slot.index].audio for f in frames]
    return audio, torch.stack([t[slot.index] for t in tokens])


def test_seeded_conversation_repeats_on_any_slot_beside_any_traffic() -> None:
    """A seeded conversation's sampled tokens and audio depend on its seed and input only: not on its
    slot, the batch size, the other conversations' ticks, or torch's global generator."""
    frames = _frames(10, 10)
    torch.manual_seed(1)
    want_audio, want_tokens = _seeded_solo(frames, seed=7)
    engine = _engine(3, SAMPLED)
    tokens = _recording(engine)
    other = engine.open()  # unseeded, slot 0: it ticks alone first, then beside the seeded one
    for f in _frames(11, 3):
        engine.tick({other.index: f})
    torch.manual_seed(2)
    seeded = engine.open(seed=7)
    assert seeded.index == 1
    del tokens[:]
    audio = []
    for t, f in enumerate(frames):
        batch = {seeded.index: f}
        if t % 3:  # the other conversation skips some ticks
            batch[other.index] = _frames(12 + t, 1)[0]
        audio.append(engine.tick(batch)[seeded.index].audio)
    assert torch.equal(torch.stack([t[seeded.index] for t in tokens]), want_tokens)
    for a, w in zip(audio, want_audio):
        np.testing.assert_allclose(a, w, atol=1e-5)  # batched float math rounds differently


def test_seeds_change_the_conversation_and_reset_replays_it() -> None:
    frames = _frames(13, 10)
    _, a = _seeded_solo(frames, seed=7)
    _, b = _seeded_solo(frames, seed=8)
    ready = slice(2, None)  # the first ticks fill the acoustic delay line: no tokens yet
    assert (a[ready] != b[ready]).float().mean() > 0.5
    engine = _engine(1, SAMPLED)
    tokens = _recording(engine)
    slot = engine.open(seed=7)
    for f in _frames(14, 4):  # some other speech first, then the conversation restarts
        engine.tick({slot.index: f})
    slot.reset()
    del tokens[:]
    for f in frames:
        engine.tick({slot.index: f})
    assert torch.equal(torch.stack([t[slot.index] for t in tokens]), a)


def test_user_levels_the_lm_never_heard_are_no_input() -> None:
    """With ``user_levels=1`` the engine feeds the user's other codebooks as moshi's "no input" (-1),
    as the trainer does (hide_user_levels): the LM's step sees exactly that."""
    import torch as _torch

    from e2e_voice.lm.streams import ZERO_TOKEN, hide_user_levels

    codec, lm = _models()
    engine = DuplexEngine(codec, lm, max_conversations=1, sampling=GREEDY, user_levels=1)
    seen: list[_torch.Tensor] = []
    real_step = engine.lm_step.step

    def spy(user: _torch.Tensor):  # type: ignore[no-untyped-def]
        seen.append(user.clone())
        return real_step(user)

    engine.lm_step.step = spy  # type: ignore[method-assign]
    slot = engine.open()
    for frame in _frames(0, 3):
        engine.tick({slot.index: frame})
    assert len(seen) == 3
    for user in seen:
        assert (user[:, 0] >= 0).all() and (user[:, 1:] == ZERO_TOKEN).all()
    codes = _torch.arange(2 * 9 * 2).reshape(2, 9, 2)  # [B, 1 + 2 n_q, T] with n_q = 4
    hidden = hide_user_levels(codes, 4, 1)
    assert (hidden[:, :6] == codes[:, :6]).all() and (hidden[:, 6:] == ZERO_TOKEN).all()
    assert hide_user_levels(codes, 4, 4) is codes
    with pytest.raises(ValueError, match="user_levels"):
        DuplexEngine(codec, lm, user_levels=N_Q + 1)


@pytest.mark.parametrize("bad", [0, 9, 1.5, True, "two"])
def test_lm_user_levels_setting_is_checked(bad: object) -> None:
    from e2e_voice.lm.builders import _user_levels

    assert _user_levels({"user_levels": None}, 8) == 8 and _user_levels({"user_levels": 2}, 8) == 2
    with pytest.raises(ValueError, match=r"lm\.user_levels"):
        _user_levels({"user_levels": bad}, 8)
