"""Multistream tokens: inner-monologue alignment, delays, and the round trip back to words and codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from moshi.models.lm_utils import _delay_sequence

from e2e_voice.codec.mimi import build_mimi
from e2e_voice.lm.streams import (
    Word,
    apply_delays,
    build_streams,
    build_text_stream,
    encode_audio,
    mode_delays,
    recover_words,
    seconds_to_frame,
    stream_delays,
    undo_delays,
)
from e2e_voice.lm.tokenizer import SPM_SPECIALS
from tests.lm_testing import fixture_tokenizer
from train.lm_data import synth_conversation

PAD, EPAD = SPM_SPECIALS.pad_id, SPM_SPECIALS.end_pad_id


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return fixture_tokenizer(tmp_path_factory.mktemp("tok"))


def test_inner_monologue_alignment(tok):
    words = [Word("sunny", 0.5, 0.9), Word("jazz", 1.6, 2.0), Word("tomatoes", 2.9, 3.5)]
    stream = build_text_stream(words, 50, tok)
    frames = [seconds_to_frame(w.start_s) for w in words]
    assert stream.word_frames == frames == [6, 20, 36]
    expected = torch.full((50,), PAD)
    for w, f in zip(words, frames):
        ids = tok.encode_word(w.text)
        assert ids and PAD not in ids and EPAD not in ids
        expected[f - 1] = EPAD  # end of padding just before the word
        expected[f : f + len(ids)] = torch.tensor(ids)  # the word's tokens from its start frame
    assert torch.equal(stream.tokens, expected)
    assert stream.words_dropped == 0
    assert recover_words(stream.tokens, tok) == [(w.text, f) for w, f in zip(words, frames)]


def test_colliding_words_are_pushed_not_merged(tok):
    # Two words starting in the same frame: the second goes after the first one's tokens + a marker.
    words = [Word("especially", 1.0, 1.1), Word("tomatoes", 1.0, 1.2)]
    stream = build_text_stream(words, 40, tok)
    n0 = len(tok.encode_word("especially"))
    assert stream.word_frames == [12, 12 + n0 + 1]
    assert stream.tokens[12 + n0] == EPAD
    assert [w for w, _ in recover_words(stream.tokens, tok)] == ["especially", "tomatoes"]


def test_words_past_the_end_are_counted(tok):
    stream = build_text_stream([Word("jazz", 0.2, 0.4), Word("sunny", 3.0, 3.4)], 20, tok)
    assert stream.word_frames == [2] and stream.words_dropped == 1


def test_build_streams_round_trip(tok):
    torch.manual_seed(0)
    codec = build_mimi(num_codebooks=4, n_filters=16, transformer_layers=1, quantizer_levels=4)
    conv = synth_conversation("What time is it?", "It is almost noon.")
    streams = build_streams(conv, codec, tok, n_q=4)
    K, T = streams.codes.shape
    assert K == 1 + 2 * 4 and int(np.ceil(len(conv.assistant_audio) / 1920)) == T
    # Rows 1..n_q are the assistant's codes, n_q+1.. the user's.
    assert torch.equal(streams.codes[1:5], encode_audio(codec, conv.assistant_audio, 4))
    assert torch.equal(streams.codes[5:], encode_audio(codec, conv.user_audio, 4))
    # Delay, undo: identical codes where defined, and the same words at the same frames.
    delays = stream_delays(4, acoustic=2)
    delayed = apply_delays(streams.codes[None], delays, fill=-1)
    back, mask = undo_delays(delayed, delays, fill=-1)
    assert torch.equal(back[mask], streams.codes[None][mask])
    assert mask[0, 0].all() and not mask[0, 2, -2:].any() and mask[0, 2, :-2].all()
    words = recover_words(streams.codes[0], tok)
    assert [w for w, _ in words] == [w.text for w in conv.assistant_words]
    assert [f for _, f in words] == [seconds_to_frame(w.start_s) for w in conv.assistant_words]


@pytest.mark.parametrize(
    "delays",
    [
        pytest.param([0, 0, 1, 1, 0, 1, 1], id="moshi"),
        pytest.param([0, 3, 4, 4, 0, 1, 1], id="tts-like"),
        pytest.param([2, 0, 1, 1, 0, 1, 1], id="asr-like"),
    ],
)
def test_apply_delays_matches_moshi(delays):
    codes = torch.randint(0, 30, (2, 7, 12))
    fill = torch.full((1, 7, 1), -5)
    assert torch.equal(apply_delays(codes, delays, fill=-5), _delay_sequence(delays, codes, fill))


def test_mode_delays():
    assert mode_delays("dialogue", 3) == [0, 0, 1, 1, 0, 1, 1]
    assert mode_delays("tts", 3, lag_frames=25) == [0, 25, 26, 26, 25, 26, 26]  # text leads the audio
    assert mode_delays("asr", 3, lag_frames=25) == [25, 0, 1, 1, 0, 1, 1]  # text lags the audio
    with pytest.raises(ValueError, match="mode must be"):
        mode_delays("karaoke", 3)
    with pytest.raises(ValueError, match="delay must be >= 0"):
        stream_delays(3, acoustic=-1)


def test_bad_inputs_say_what_to_do():
    with pytest.raises(ValueError, match="expected 3 delays"):
        apply_delays(torch.zeros(1, 3, 4, dtype=torch.long), [0, 1], fill=-1)
    with pytest.raises(ValueError, match="mono audio"):
        encode_audio(None, np.zeros((2, 100), np.float32), 4)  # type: ignore[arg-type]


def test_streams_from_manifest_encodes_the_fixture_corpus(tmp_path):
    """The corpus adapter: validation first, one [1 + 2 n_q, T] stream per conversation, words placed."""
    from e2e_voice.data.manifest import read_manifest
    from e2e_voice.lm.streams import frames_for_seconds
    from e2e_voice.lm.tokenizer import SentencePieceTokenizer
    from train.lm_data import load_streams, streams_from_manifest

    manifest = "tests/fixtures/dialogues/manifest.jsonl"
    entries = read_manifest(manifest).entries
    codec = build_mimi(
        num_codebooks=2,
        n_filters=8,
        transformer_layers=1,
        dimension=64,
        transformer_ff=128,
        quantizer_dimension=32,
        quantizer_levels=2,
        codebook_size=64,
    )
    codec_id = {"checkpoint": "x.safetensors", "sha256": "0" * 64}
    path = streams_from_manifest(
        tmp_path / "streams.pt", codec, 2, [manifest], [manifest], vocab_size=300, codec_id=codec_id
    )
    streams, meta = load_streams(path)
    assert meta["n_valid"] == len(entries) and len(streams) == 2 * len(entries)
    assert meta["codec"] == codec_id
    assert list(meta["corpus"]) == [manifest] and len(meta["corpus"][manifest]) == 64  # its sha256
    assert abs(meta["hours"] * 3600 - 2 * sum(e.duration for e in entries)) < 1
    tok = SentencePieceTokenizer(meta["tokenizer"])
    for s, e in zip(streams, entries, strict=False):
        assert s.shape[0] == 1 + 2 * 2
        assert abs(s.shape[1] - frames_for_seconds(e.duration)) <= 1
        assert s[1:].min() >= 0 and s[1:].max() < 64  # both speakers' codes from the codec
        got = recover_words(s[0], tok)
        want = e.words_of("assistant")
        assert [w for w, _ in got] == [w.word for w in want][: len(got)] and len(got) >= len(want) - 1
        # each word sits at (or, when crowded, just after) its start frame
        assert all(f >= seconds_to_frame(w.start) for (_, f), w in zip(got, want, strict=False))


def test_streams_remember_their_codec(tmp_path, caplog):
    """A streams file records its codec checkpoint's hash; another codec's training run refuses it."""
    from train.lm_data import check_streams_codec, codec_fingerprint

    assert codec_fingerprint(None) is None and codec_fingerprint(tmp_path / "missing.safetensors") is None
    (tmp_path / "a.safetensors").write_bytes(b"codec a")
    (tmp_path / "b.safetensors").write_bytes(b"codec b")
    a, b = codec_fingerprint(tmp_path / "a.safetensors"), codec_fingerprint(tmp_path / "b.safetensors")
    assert a is not None and b is not None and a["sha256"] != b["sha256"]
    check_streams_codec("streams.pt", {"codec": a}, a)  # same codec: fine
    check_streams_codec("streams.pt", {"codec": a}, None)  # random codec configured: nothing to compare
    with pytest.raises(ValueError, match="delete the streams file"):
        check_streams_codec("streams.pt", {"codec": a}, b)
    with caplog.at_level("WARNING"):
        check_streams_codec("streams.pt", {"codec": None}, b)  # files from before the record: a warning
    assert "does not record which codec" in caplog.text


def test_streams_remember_their_corpus(tmp_path, caplog):
    """A streams file records its manifests' hashes; a run on a corpus regenerated in place refuses it."""
    from train.lm_data import check_streams_corpus, corpus_fingerprint

    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text('{"id": "a"}\n')
    valid.write_text('{"id": "b"}\n')
    old = corpus_fingerprint([str(valid), str(train), str(tmp_path / "missing.jsonl")])
    assert sorted(old) == sorted([str(valid), str(train)])  # a missing manifest has no hash
    check_streams_corpus("streams.pt", {"corpus": old}, corpus_fingerprint([str(valid), str(train)]))
    train.write_text('{"id": "c"}\n')  # regenerated in place
    with pytest.raises(ValueError, match=r"older version of \[.*train.jsonl'\].*delete the streams file"):
        check_streams_corpus("streams.pt", {"corpus": old}, corpus_fingerprint([str(valid), str(train)]))
    only_valid = corpus_fingerprint([str(valid)])  # only the manifests listed on both sides are compared
    check_streams_corpus("streams.pt", {"corpus": old}, only_valid)
    with caplog.at_level("WARNING"):
        check_streams_corpus("streams.pt", {}, corpus_fingerprint([str(train)]))  # a file from before
    assert "does not record which corpus" in caplog.text
