"""Speed perturbation of codec training crops (``data.speed``): the sampler and the teacher cache."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch

from e2e_voice.constants import SAMPLE_RATE
from train.codec_data import CropSampler
from train.teachers import TeacherCache

CROP = 4 * 1920


def _clips() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3 * SAMPLE_RATE, generator=g) * s for s in (0.1, 0.02, 0.05)]


def test_speed_perturbs_the_share_asked_and_keeps_the_parents_crops() -> None:
    clips = _clips()
    plain = CropSampler(clips, CROP, seed=5, min_rms=0.03)
    fast = CropSampler(clips, CROP, seed=5, min_rms=0.03, speed=(0.8, 1.25), speed_prob=0.5)
    spans, n_same = [], 0
    for _ in range(25):
        a, b = plain.next_batch(8), fast.next_batch(8)
        # the clips and starts are the unperturbed run's, whatever the factors
        assert fast.last_origins == plain.last_origins
        for k, ((i, start), span) in enumerate(zip(fast.last_origins, fast.last_spans, strict=True)):
            spans.append(span)
            if span == CROP:
                assert torch.equal(a[k], b[k])
                n_same += 1
                continue
            factor = fast.last_factors[k]
            assert 0.8 <= factor <= 1.25 and span == round(CROP * factor)
            # read from `span` samples of the clip as if sampled at factor x 24 kHz, resampled to 24 kHz
            source = clips[i][start : start + span].numpy()
            ref = soxr.resample(source, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ")[:CROP]
            assert torch.equal(b[k, 0, : ref.size], torch.from_numpy(ref))
    share = 1 - n_same / len(spans)
    assert 0.35 < share < 0.65, share
    assert len(set(spans)) > 50  # factors are drawn from a range, not a few values


def test_speed_changes_pitch_by_the_factor() -> None:
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    tone = torch.from_numpy((0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    sampler = CropSampler([tone], 24_000, seed=1, speed=(1.2, 1.2), speed_prob=1.0)
    x = sampler.next_batch(1)[0, 0].numpy()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / x.size
    assert abs(peak_hz - 240.0) <= 2.0, peak_hz  # 200 Hz read 1.2x faster
    assert sampler.last_spans == [28_800]


def test_speed_resumes_exactly_and_refuses_a_checkpoint_without_it() -> None:
    clips = _clips()
    a = CropSampler(clips, CROP, seed=2, speed=(0.9, 1.1))
    a.next_batch(4)
    state = a.state_dict()
    expected = a.next_batch(4), a.last_spans
    b = CropSampler(clips, CROP, seed=7, speed=(0.9, 1.1))
    b.load_state_dict(state)
    assert torch.equal(b.next_batch(4), expected[0]) and b.last_spans == expected[1]
    # resumed with other settings than the run had: refused, each way, naming both
    old = CropSampler(clips, CROP, seed=2).state_dict()
    with pytest.raises(
        ValueError, match=r"with speed perturbation none, this run asks for data\.speed=\[0\.9,1\.1\]"
    ):
        CropSampler(clips, CROP, seed=2, speed=(0.9, 1.1)).load_state_dict(old)
    with pytest.raises(ValueError, match=r"data\.speed_prob=1, this run asks for none"):
        CropSampler(clips, CROP, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"data\.speed_prob=0\.5: resume"):
        CropSampler(clips, CROP, seed=2, speed=(0.9, 1.1), speed_prob=0.5).load_state_dict(state)


@pytest.mark.parametrize(
    "speed, prob",
    [
        ((1.2, 0.9), 1.0),
        ((0.3, 1.0), 1.0),
        ((1.0, 2.5), 1.0),
        ("fast", 1.0),
        ((0.9,), 1.0),
        ((0.9, 1.1), 1.5),
    ],
)
def test_speed_bad_values_are_refused(speed, prob) -> None:
    with pytest.raises(ValueError, match=r"data\.speed"):
        CropSampler(_clips(), CROP, speed=speed, speed_prob=prob)


def test_teacher_cache_stretches_features_of_a_perturbed_crop() -> None:
    class Ramp:  # feature t = the audio sample at the start of frame t (tracks positions)
        dim = 1

        def __call__(self, audio: torch.Tensor) -> torch.Tensor:
            return audio[0, 0, ::480][: audio.shape[-1] // 480][None, :, None]

    clips = [torch.arange(3 * SAMPLE_RATE, dtype=torch.float32) / SAMPLE_RATE]
    cache = TeacherCache.compute(Ramp(), clips, window_s=1.0)
    n = CROP // 480  # 16 features a crop
    plain = cache.crops([(0, 24_000)], CROP)[0, :, 0]
    torch.testing.assert_close(plain, 1.0 + torch.arange(n) * 0.02, atol=2e-3, rtol=0)
    # read from 1.5x the crop: the crop's features cover 1.5x the time, at 1.5x the pace
    fast = cache.crops([(0, 24_000)], CROP, spans=[round(1.5 * CROP)])[0, :, 0]
    assert fast[0] == pytest.approx(1.0 + 0.25 * 0.02, abs=3e-3)  # linear interpolation, half-frame shift
    assert float((fast[1:] - fast[:-1]).mean()) == pytest.approx(1.5 * 0.02, abs=1e-3)
    # a span past the clip's end: the frames beyond it stay zero, as unperturbed
    tail = cache.crops([(0, 3 * SAMPLE_RATE - CROP)], CROP, spans=[2 * CROP])[0, :, 0]
    assert (tail[: n // 2] > 2.5).all() and (tail[n // 2 :] == 0).all()
