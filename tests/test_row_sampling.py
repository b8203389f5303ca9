"""Per-row random streams for moshi's sampling: the distribution is moshi's, rows are independent, paused
rows draw nothing, and unseeded steps are exactly moshi's own sampling."""

from __future__ import annotations

import threading

import moshi.models.lm as moshi_lm
import pytest
import torch
from moshi.utils.compile import no_compile

from e2e_voice.lm import row_sampling
from e2e_voice.lm.generate import LMStep, Sampling
from e2e_voice.lm.row_sampling import row_generators, sample_rows
from tests.lm_testing import tiny_lm


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_draws_follow_the_top_k_softmax() -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    temp, k, n = 0.8, 4, 20_000
    gen = _gen(0)
    draws = torch.stack([sample_rows(logits[None], temp, k, [gen], [True]) for _ in range(n)]).flatten()
    assert int(draws.max()) < k  # never outside the top k
    want = torch.softmax(logits[:k] / temp, dim=0)
    freq = torch.bincount(draws, minlength=k)[:k].double() / n
    sd = (want * (1 - want) / n).sqrt()
    assert torch.all((freq - want).abs() < 5 * sd), (freq, want)


def test_rows_are_independent_and_paused_rows_draw_nothing() -> None:
    logits = torch.randn(3, 1, 1, 64, generator=_gen(1))
    alone = sample_rows(logits[1:2], 1.0, 0, [_gen(5)], [True])
    paused = _gen(9)
    before = paused.get_state()
    batch = sample_rows(logits, 1.0, 0, [_gen(3), _gen(5), paused], [True, True, False])
    assert torch.equal(batch[1], alone[0])  # row 1 drew what it draws alone, whatever row 0 did
    assert torch.equal(paused.get_state(), before)
    assert torch.equal(batch[2], logits[2].argmax(-1))  # a paused row's (discarded) token: no draw


def test_unseeded_steps_are_moshis_own_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside row_generators the installed sample_token is moshi's: same global stream, same tokens."""
    assert moshi_lm.sample_token is row_sampling.sample_token  # installed by e2e_voice.lm.generate

    def generate() -> list[torch.Tensor]:
        torch.manual_seed(0)
        step = LMStep(tiny_lm(seed=3), Sampling(1.0, 10, 1.0, 50))
        out = []
        with no_compile(), step.streaming(2):
            for t in range(6):
                user = torch.randint(0, 32, (2, step.n_q, 1), generator=_gen(t))
                o = step.step(user)
                out += [o.text, o.audio]
        return out

    ours = generate()
    monkeypatch.setattr(moshi_lm, "sample_token", row_sampling._MOSHI_SAMPLE_TOKEN)
    theirs = generate()
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_context_is_per_thread_and_checked() -> None:
    with pytest.raises(ValueError, match="2 generators for 1 rows"), row_generators([None, None], [True]):
        pass
    seen: list[object] = []
    with row_generators([_gen(0)], [True]):
        assert row_sampling._LOCAL.rows is not None
        other = threading.Thread(target=lambda: seen.append(getattr(row_sampling._LOCAL, "rows", None)))
        other.start()
        other.join()
    assert seen == [None]  # another thread (another engine's scheduler) samples as moshi does
    assert row_sampling._LOCAL.rows is None


def test_seed_needs_streaming_and_a_row_in_the_batch() -> None:
    step = LMStep(tiny_lm(seed=3), Sampling())
    with pytest.raises(RuntimeError, match="streaming context"):
        step.seed(0, 1)
    with step.streaming(2), pytest.raises(ValueError, match="row 2 is outside the batch of 2"):
        step.seed(2, 1)
