"""The generation step: streaming equals the parallel training forward, causality, batching with
per-conversation resets and pauses, and input checks."""

from __future__ import annotations

import pytest
import torch
from moshi.utils.compile import no_compile

from e2e_voice.lm.generate import GREEDY, LMStep
from e2e_voice.lm.streams import stream_delays
from tests.lm_testing import tiny_lm

N_Q = 2
DELAY_CASES = [
    pytest.param(stream_delays(N_Q), id="moshi-acoustic-1"),
    pytest.param(stream_delays(N_Q, acoustic=0), id="no-delay"),
    pytest.param(stream_delays(N_Q, semantic=1, acoustic=2), id="semantic-1-acoustic-2"),
]


@pytest.fixture(autouse=True)
def _eager():
    with no_compile():
        yield


def user_codes(B: int, T: int, seed: int = 0, card: int = 32) -> torch.Tensor:
    return torch.randint(0, card, (B, N_Q, T), generator=torch.Generator().manual_seed(seed))


def run(step: LMStep, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy-generate the assistant's aligned frames ``[B, T - D]`` text and ``[B, n_q, T - D]`` audio."""
    B, _, T = user.shape
    texts, audios = [], []
    with step.streaming(B):
        for t in range(T):
            out = step.step(user[:, :, t : t + 1])
            assert bool(out.ready.all()) == (t >= step.max_delay), (t, out.ready)
            if t >= step.max_delay:
                texts.append(out.text)
                audios.append(out.audio)
    return torch.stack(texts, -1), torch.stack(audios, -1)


@pytest.mark.parametrize("delays", DELAY_CASES)
def test_step_agrees_with_parallel_forward(delays):
    lm = tiny_lm(seed=2, delays=delays)
    step = LMStep(lm, GREEDY)
    user = user_codes(2, 15)
    text, audio = run(step, user[:, :, :14])  # frames 0 .. T - D - 1
    F = text.shape[-1]
    # The user codes of call t are the aligned frame t - 1 (see LMStep.step), so shift by one.
    codes = torch.cat([text[:, None], audio, user[:, :, 1 : F + 1]], dim=1)  # aligned [B, K, F]
    with torch.no_grad():
        out = lm(codes)
    # Greedy decoding picked the argmax of exactly the logits the parallel forward computes.
    assert torch.equal(out.text_logits[:, 0].argmax(-1), text)
    predicted = out.logits.argmax(-1)
    assert out.mask.sum() > 0.8 * out.mask.numel()
    assert torch.equal(predicted[out.mask], audio[out.mask])


@pytest.mark.parametrize("delays", DELAY_CASES)
def test_parallel_forward_is_causal(delays):
    lm = tiny_lm(seed=3, delays=delays)
    lm.eval()
    g = torch.Generator().manual_seed(0)
    codes = torch.cat(
        [torch.randint(4, 48, (1, 1, 12), generator=g), torch.randint(0, 32, (1, 4, 12), generator=g)], 1
    )
    changed = codes.clone()
    t0 = 7
    changed[:, :, t0:] = torch.randint(0, 32, changed[:, :, t0:].shape, generator=g)
    with torch.no_grad():
        a, b = lm(codes), lm(changed)
    torch.testing.assert_close(a.text_logits[:, :, :t0], b.text_logits[:, :, :t0])
    for k in range(N_Q):
        d = delays[1 + k]  # codebook k of frame f is predicted once frame f + d is known
        torch.testing.assert_close(a.logits[:, k, : t0 - d], b.logits[:, k, : t0 - d], equal_nan=True)
    assert not torch.allclose(a.text_logits[:, :, t0:], b.text_logits[:, :, t0:])


def test_step_is_causal():
    lm = tiny_lm(seed=4)
    user = user_codes(1, 12)
    changed = user.clone()
    changed[:, :, 8:] = (changed[:, :, 8:] + 1) % 32
    a_text, a_audio = run(LMStep(lm), user)
    b_text, b_audio = run(LMStep(lm), changed)
    # The frame returned at call t depends on user frames <= t; call 8 returns frame 8 - D.
    D = 1
    assert torch.equal(a_text[:, : 8 - D + 1], b_text[:, : 8 - D + 1])
    assert torch.equal(a_audio[:, :, : 8 - D], b_audio[:, :, : 8 - D])


def test_batched_staggered_resets_and_pauses_equal_single_runs():
    lm = tiny_lm(seed=5)
    T = 16
    user = user_codes(3, T, seed=1)
    starts = [0, 3, 6]  # row r starts a fresh conversation at call starts[r] (junk before that)
    paused = {2: (9, 10)}  # row 2 is paused at calls 9 and 10
    step = LMStep(lm)
    got: list[list[tuple[int, torch.Tensor, torch.Tensor]]] = [[] for _ in range(3)]
    fed: list[list[int]] = [[] for _ in range(3)]  # user frames each row actually consumed
    with step.streaming(3):
        for t in range(T):
            reset = torch.tensor([t == s for s in starts])
            if reset.any():
                step.reset(reset)
            active = torch.tensor([t not in paused.get(r, ()) for r in range(3)])
            step.set_active(active)
            out = step.step(user[:, :, t : t + 1])
            for r in range(3):
                if t >= starts[r] and active[r]:
                    fed[r].append(t)
                    if out.ready[r]:
                        got[r].append((t, out.text[r], out.audio[r]))
                elif not active[r]:
                    assert not out.ready[r]  # a paused row returns nothing
    for r in range(3):
        single_text, single_audio = run(LMStep(lm), user[r : r + 1, :, fed[r]])
        assert len(got[r]) == single_text.shape[-1] > 0
        assert torch.equal(torch.stack([g[1] for g in got[r]]), single_text[0])
        assert torch.equal(torch.stack([g[2] for g in got[r]], -1), single_audio[0])


def test_step_checks_its_input():
    step = LMStep(tiny_lm())
    with pytest.raises(RuntimeError, match="streaming context"):
        step.step(user_codes(1, 1))
    with step.streaming(2):
        with pytest.raises(ValueError, match="exactly one 80 ms frame"):
            step.step(user_codes(2, 2))
        with pytest.raises(ValueError, match="expected user codes"):
            step.step(user_codes(1, 1))
        with pytest.raises(ValueError, match="bool tensor of shape"):
            step.reset(torch.tensor([1, 0]))
        with pytest.raises(RuntimeError, match="already streaming"), step.streaming(1):
            pass


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs (moshi's CUDAGraphed) need a CUDA GPU")
def test_cuda_graphed_step_matches_eager():
    lm = tiny_lm(seed=6).cuda()
    user = user_codes(2, 10).cuda()
    text, audio = run(LMStep(lm), user)  # LMGen captures CUDA graphs on CUDA devices
    lm_cpu = tiny_lm(seed=6)
    ref_text, ref_audio = run(LMStep(lm_cpu), user.cpu())
    assert (text.cpu() == ref_text).float().mean() > 0.9
    assert (audio.cpu() == ref_audio).float().mean() > 0.9
