"""Decoding: formats, rates, channels, and every way an input can be unusable."""

from __future__ import annotations

import numpy as np
import pytest

import simsearch.audio
from audio_tools import audio_bytes, mix_gain, png_bytes, tone, write_audio
from simsearch.audio import DecodeLimits, decode_audio, read_excerpt
from simsearch.errors import AudioTooLong, AudioTooShort, BadAudio, DecoderUnavailable, DecodeTimeout

SR = 8000


def _probe_signal(sr: int, seconds: float = 2.0) -> np.ndarray:
    return tone(440.0, seconds, sr, amp=0.4) + tone(1000.0, seconds, sr, amp=0.2)


def _assert_same_signal(y, sr, seconds=2.0, tol=0.05):
    """y is the probe signal at `sr`: length, level and content."""
    want = _probe_signal(sr, seconds)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == pytest.approx(len(want), abs=0.02 * sr)  # codecs pad a little
    n = min(len(y), len(want)) - sr // 10
    # Lossy codecs shift by some samples: compare by the best lag.
    lags = range(-sr // 40, sr // 40 + 1)  # a full period of the probe signal
    err = min(np.sqrt(np.mean((np.roll(y[:n], lag) - want[:n])[sr // 10 : -sr // 10] ** 2)) for lag in lags)
    assert err < tol, f"decoded signal differs (rms error {err:.3f})"


@pytest.mark.parametrize("fmt, sr, channels", [("wav", 44100, 2), ("wav", 8000, 1), ("flac", 16000, 1),
                                               ("flac", 48000, 6), ("ogg", 22050, 2), ("mp3", 44100, 1),
                                               ("wav-float", 96000, 2), ("m4a", 48000, 1), ("opus", 48000, 1)])
def test_formats_decode_to_mono_at_the_engine_rate(tmp_path, fmt, sr, channels):
    path = write_audio(tmp_path / f"probe.{fmt.split('-')[0]}", _probe_signal(sr), sr, fmt, channels)
    y = decode_audio(path, SR)
    # to_channels scales the channels from 1.0 down to 0.6; the mix is their mean.
    gain = mix_gain(channels)
    _assert_same_signal(y / gain, SR)
    from_bytes = decode_audio(path.read_bytes(), SR)
    if fmt in ("m4a", "opus"):  # ffmpeg reading a pipe may not see the container's trailer
        assert len(from_bytes) == pytest.approx(len(y), abs=SR // 50)
    else:
        np.testing.assert_array_equal(from_bytes, y)


def test_missing_ffmpeg_is_a_clear_error(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "probe.m4a", _probe_signal(44100), 44100, "m4a", 1)
    monkeypatch.setattr(simsearch.audio, "ffmpeg_path", lambda: None)
    for source in (path, path.read_bytes()):
        with pytest.raises(DecoderUnavailable, match="ffmpeg"):
            decode_audio(source, SR)
    # What libsndfile reads needs no ffmpeg.
    _assert_same_signal(decode_audio(audio_bytes(_probe_signal(SR), SR, "ogg"), SR), SR)


@pytest.mark.parametrize("data", [b"", b"plain text, not audio\n" * 40, bytes(np.random.default_rng(0).integers(0, 256, 30000, dtype=np.uint8)),
                                  "png"], ids=["empty", "text", "random", "png"])
def test_not_audio_is_bad_audio(data):
    if data == "png":
        data = png_bytes()
    with pytest.raises(BadAudio):
        decode_audio(data, SR)


def test_text_is_bad_audio_in_words_a_person_understands():
    with pytest.raises(BadAudio) as err:
        decode_audio(b"this is a shopping list, not a song\n" * 40, SR)
    assert str(err.value) == "not a decodable audio file (it has no audio stream)"


@pytest.mark.parametrize("fmt, channels", [("ogg", 2), ("flac", 6), ("m4a", 2), ("m4a", 6), ("opus", 1)])
def test_read_excerpt_keeps_rate_and_one_or_two_channels(tmp_path, fmt, channels):
    sr = 48000
    y = np.concatenate([tone(440.0, 1.0, sr, 0.3), tone(880.0, 2.0, sr, 0.3)])  # 880 Hz from 1 s
    path = write_audio(tmp_path / f"probe.{fmt}", y, sr, fmt, channels)
    part, got_sr = read_excerpt(path, 1.5, 1.0)
    assert got_sr == sr and part.dtype == np.float32 and part.shape[1] == (channels if channels <= 2 else 1)
    assert len(part) == pytest.approx(sr, abs=0.01 * sr)
    spectrum = np.abs(np.fft.rfft(part[:, 0]))
    assert np.argmax(spectrum) * sr / (2 * (len(spectrum) - 1)) == pytest.approx(880.0, abs=5.0)
    tail, _ = read_excerpt(path, 2.5, 10.0)  # cut at the end of the file
    assert len(tail) == pytest.approx(0.5 * sr, abs=0.03 * sr)


def test_read_excerpt_of_unreadable_files(tmp_path, monkeypatch):
    text = tmp_path / "notes.mp3"
    text.write_text("not audio\n" * 100)
    with pytest.raises(BadAudio):
        read_excerpt(text, 0.0, 1.0)
    m4a = write_audio(tmp_path / "probe.m4a", _probe_signal(44100), 44100, "m4a", 1)
    monkeypatch.setattr(simsearch.audio, "ffmpeg_path", lambda: None)
    with pytest.raises(DecoderUnavailable, match="ffmpeg"):
        read_excerpt(m4a, 0.0, 1.0)


def test_missing_and_empty_files_are_bad_audio(tmp_path):
    with pytest.raises(BadAudio, match="no such file"):
        decode_audio(tmp_path / "nope.wav", SR)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(BadAudio, match="empty"):
        decode_audio(tmp_path / "empty.wav", SR)


def test_truncated_ogg_is_bad_audio(tmp_path):
    data = audio_bytes(_probe_signal(22050, 5.0), 22050, "ogg")
    with pytest.raises(BadAudio):
        decode_audio(data[:3000], SR)


def test_nan_samples_are_bad_audio():
    y = _probe_signal(SR)
    y[100:200] = np.nan
    with pytest.raises(BadAudio, match="NaN"):
        decode_audio(audio_bytes(y, SR, "wav-float"), SR)
    y = _probe_signal(SR)
    y[5] = np.inf
    with pytest.raises(BadAudio):
        decode_audio(audio_bytes(y, SR, "wav-float"), SR)


def test_duration_limits(tmp_path):
    with pytest.raises(AudioTooShort):
        decode_audio(audio_bytes(_probe_signal(SR, 0.02), SR, "wav"), SR)
    with pytest.raises(AudioTooShort):
        decode_audio(audio_bytes(np.zeros(0, np.float32), SR, "wav"), SR)
    limits = DecodeLimits(max_duration_s=3.0)
    y = _probe_signal(44100, 4.0)
    with pytest.raises(AudioTooLong):
        decode_audio(audio_bytes(y, 44100, "flac"), SR, limits)
    with pytest.raises(AudioTooLong):
        decode_audio(write_audio(tmp_path / "long.m4a", y, 44100, "m4a"), SR, limits)
    assert len(decode_audio(audio_bytes(_probe_signal(44100, 2.5), 44100, "flac"), SR, limits)) == 2.5 * SR


def _rms_db(y):
    return 10 * np.log10(np.mean(np.asarray(y, np.float64) ** 2))


def test_stereo_mixes_down_alike_in_every_decoder(tmp_path):
    """libsndfile averages the channels; ffmpeg (M4A/Opus queries, and every
    build since builds prefer it) must give the same mono signal, or catalog
    and query see the same file at different levels."""
    sr = 44100
    wav = write_audio(tmp_path / "probe.wav", _probe_signal(sr), sr, "wav", 2)
    m4a = write_audio(tmp_path / "probe.m4a", _probe_signal(sr), sr, "m4a", 2)
    by_libsndfile = decode_audio(wav, SR)
    by_ffmpeg = decode_audio(wav, SR, prefer_ffmpeg=True)
    assert len(by_ffmpeg) == len(by_libsndfile)
    assert _rms_db(by_ffmpeg) == pytest.approx(_rms_db(by_libsndfile), abs=0.2)
    assert _rms_db(decode_audio(m4a, SR)) == pytest.approx(_rms_db(by_libsndfile), abs=0.5)


def test_prefer_ffmpeg_decodes_mono_like_libsndfile(tmp_path):
    path = write_audio(tmp_path / "probe.ogg", _probe_signal(22050), 22050, "ogg", 1)
    a = decode_audio(path, SR)
    b = decode_audio(path, SR, prefer_ffmpeg=True)
    assert len(a) == pytest.approx(len(b), abs=SR // 100)
    _assert_same_signal(b, SR)


def test_decoding_is_bounded_in_time(tmp_path):
    """Past DecodeLimits.timeout_s a decode stops with DecodeTimeout, in both decoders."""
    limits = DecodeLimits(timeout_s=0.0)
    y = _probe_signal(44100, 3.0)
    with pytest.raises(DecodeTimeout):
        decode_audio(audio_bytes(y, 44100, "flac"), SR, limits)
    with pytest.raises(DecodeTimeout):
        decode_audio(write_audio(tmp_path / "probe.m4a", y, 44100, "m4a"), SR, limits)


@pytest.mark.parametrize("sr, channels", [(192000, 8), (8000, 3), (11025, 1)])
def test_any_rate_and_channel_count_streams_to_the_engine_rate(sr, channels):
    """Blocks are mixed and resampled as they come, so the output equals a one-shot resampling."""
    y = decode_audio(audio_bytes(_probe_signal(sr, 3.0), sr, "wav", channels), SR)
    gain = mix_gain(channels)
    _assert_same_signal(y / gain, SR, seconds=3.0)


def test_mp3_decodes_whole_despite_libsndfile_block_reads(tmp_path):
    """libsndfile 1.2.2 returns garbage after the first of several reads of an MP3
    stream; a 20 s MP3 (several blocks long) must decode to the same signal as ffmpeg's."""
    path = write_audio(tmp_path / "long.mp3", _probe_signal(44100, 20.0), 44100, "mp3", 2)
    a = decode_audio(path, SR)
    _assert_same_signal(a / mix_gain(2), SR, seconds=20.0)


@pytest.mark.parametrize("value", [1e5, -3e20, 3.0e38])
def test_float_samples_far_outside_full_scale_are_refused(value):
    y = _probe_signal(SR)
    y[100] = value
    with pytest.raises(BadAudio, match="far outside"):
        decode_audio(audio_bytes(y, SR, "wav-float"), SR)
    # A little over full scale is audio (float formats allow it).
    assert len(decode_audio(audio_bytes(_probe_signal(SR) * 4.0, SR, "wav-float"), SR)) == 2 * SR
